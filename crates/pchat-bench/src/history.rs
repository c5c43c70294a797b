//! `history-search`: a long generated history (one message in ten in Chinese, words Zipf-distributed, a year of
//! time over many rooms) written through the storage port's import, in time order, while the server is stopped
//! (it indexes as posting does), then the history page and searches timed through the real server's HTTP API, for
//! a user who reads every room and one who reads a tenth of them.

use std::sync::Arc;
use std::time::Instant;

use pchat_store::{MessageRecord, Store};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::api::{self, ADMIN, Api, Progress};
use crate::corpus::Corpus;
use crate::report::Run;
use crate::scenarios::{Context, timed};
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct HistorySearchArgs {
    /// Messages in the history (default 10,000,000).
    #[arg(long)]
    messages: Option<usize>,
    /// Rooms they are spread over (default 1,000); one user reads every room, another a tenth of them.
    #[arg(long)]
    rooms: Option<usize>,
    /// Requests timed per kind and user.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Time the queries again on a directory kept (`--keep`) by an earlier run with the same `--messages` and
    /// `--rooms`, without provisioning or importing (the history's samples are generated again from the same seed).
    #[arg(long, value_name = "DIR")]
    reuse: Option<std::path::PathBuf>,
}

/// What the queries look for, sampled from the generated history.
#[derive(Default)]
struct Samples {
    phrases: Vec<String>,
    bigrams: Vec<String>,
}

pub(crate) async fn history_search(ctx: &Context, a: HistorySearchArgs) -> anyhow::Result<Run> {
    let messages = ctx.scale(a.messages, 10_000_000, 2_000);
    let rooms = ctx.scale(a.rooms, 1_000, 20).max(10);
    let queries = if ctx.smoke { 10 } else { a.queries };
    let mut run = Run::new("history-search", ctx.backend.name());
    let mut rng = StdRng::seed_from_u64(7);
    let corpus = Corpus::new(&mut rng);
    let (t, ids, samples) = match &a.reuse {
        Some(dir) => {
            let t = Target::reopen(&ctx.server, dir)?;
            let ids: Vec<String> = serde_json::from_slice(&std::fs::read(dir.join(ROOMS_FILE))?)?;
            if ids.len() != rooms {
                anyhow::bail!("{} holds {} rooms, not {rooms}", dir.display(), ids.len());
            }
            let samples = import(None, &corpus, &ids, messages, &mut rng).await?;
            (t, ids, samples)
        }
        None => provision_and_import(ctx, &mut run, &corpus, rooms, messages, &mut rng).await?,
    };
    let base = t.servers[0].url.clone();
    for (n, who, reads) in [(0, "every room", rooms), (1, "a tenth of the rooms", rooms / 10)] {
        let api = vec![Api::sign_in(&base, &api::user(n)).await?];
        let readable: Vec<&String> = ids.iter().take(reads).collect();
        let per_room = (messages / rooms) as i64;
        // History pages: the latest page of a room, and a page further back.
        let picks: Vec<(String, i64)> = (0..queries)
            .map(|_| ((*readable.choose(&mut rng).unwrap_or(&&ids[0])).clone(), rng.gen_range(1..=per_room.max(1))))
            .collect();
        let latest = timed(&api, queries, |i| format!("/api/v1/rooms/{}/messages", picks[i].0)).await?;
        let before = timed(&api, queries, |i| {
            format!("/api/v1/rooms/{}/messages?before_seq={}&limit=50", picks[i].0, picks[i].1 + 1)
        })
        .await?;
        run.latency(&format!("history, latest page (reader of {who})"), &latest, Some(5.0));
        run.latency(&format!("history, a page back in time (reader of {who})"), &before, Some(5.0));
        let mut kinds: Vec<(&str, &str, Vec<String>)> = vec![];
        for (class, name) in [(0, "common word"), (1, "mid-frequency word"), (2, "rare word")] {
            kinds.push((name, "all", (0..queries).map(|_| corpus.word_of_class(class, &mut rng).to_owned()).collect()));
        }
        let mut phrases = samples.phrases.clone();
        phrases.shuffle(&mut rng);
        kinds.push(("exact phrase of 2 words", "exact", phrases.into_iter().take(queries).collect()));
        let mut bigrams = samples.bigrams.clone();
        bigrams.shuffle(&mut rng);
        kinds.push(("2-character Chinese", "all", bigrams.into_iter().take(queries).collect()));
        for (name, mode, words) in kinds {
            if words.is_empty() {
                continue;
            }
            let h =
                timed(&api, words.len(), |i| format!("/api/v1/search?match={mode}&q={}", encode(&words[i]))).await?;
            run.latency(&format!("search, {name} (reader of {who})"), &h, Some(100.0));
        }
    }
    Ok(run)
}

/// Where a kept directory lists the rooms' ids, in order.
const ROOMS_FILE: &str = "history-rooms.json";

/// Starts a server, provisions the readers and rooms, and writes the history with the server stopped; the
/// server is running again at the end.
async fn provision_and_import(
    ctx: &Context,
    run: &mut Run,
    corpus: &Corpus,
    rooms: usize,
    messages: usize,
    rng: &mut StdRng,
) -> anyhow::Result<(Target, Vec<String>, Samples)> {
    let (mut t, admin) = ctx.start(1, "").await?;
    // bench-0 reads every room (through a group), bench-1 the open rooms of the first tenth.
    api::provision_users(&admin, 2).await?;
    admin.post("/api/v1/groups", json!({ "name": "wide" })).await?;
    let members = json!({ "members": { "add": [api::user(0), ADMIN] } });
    admin.call(reqwest::Method::PATCH, "/api/v1/groups/wide", members).await?;
    admin.post("/api/v1/categories", json!({ "name": "Everyone", "allowed_members": ["*"] })).await?;
    admin.post("/api/v1/categories", json!({ "name": "Wide", "allowed_members": ["group:wide"] })).await?;
    let specs: Vec<usize> = (0..rooms).collect();
    let ids = api::each("rooms created", specs, 16, |i| {
        let admin = admin.clone();
        async move {
            let category = if i < rooms / 10 { "name:Everyone" } else { "name:Wide" };
            let body = json!({ "name": format!("Room {i:05}"), "category": category, "privacy": "open" });
            Ok(admin.post("/api/v1/rooms", body).await?["id"].as_str().unwrap_or_default().to_owned())
        }
    })
    .await?;
    // The import goes through the storage port with the server stopped (SQLite: one writer per file).
    t.servers[0].kill();
    let started = Instant::now();
    let store: Arc<dyn Store> = match t.database_url() {
        Some(url) => Arc::new(pchat_store_postgres::PgStore::connect(&url).await?),
        None => Arc::new(pchat_store_sqlite::SqliteStore::open(
            &t.servers[0].data.join("mgc.db"),
            pchat_store_sqlite::Durability::Normal,
        )?),
    };
    let samples = import(Some(store.as_ref()), corpus, &ids, messages, rng).await?;
    drop(store);
    let import_secs = started.elapsed().as_secs_f64();
    run.figure("messages", messages as f64, "count");
    run.figure("rooms", rooms as f64, "count");
    run.figure("import and indexing rate (storage port, server stopped)", messages as f64 / import_secs, "1/s");
    if t.database_url().is_none() {
        let bytes = std::fs::metadata(t.servers[0].data.join("mgc.db")).map_or(0, |m| m.len());
        run.figure("database file per message", bytes as f64 / messages as f64, "bytes");
    }
    std::fs::write(t.dir.join(ROOMS_FILE), serde_json::to_vec(&ids)?)?;
    t.servers[0].restart()?;
    Ok((t, ids, samples))
}

/// Writes the history through the store's import in time order (every room's next few messages, then the next
/// few of every room: the order a migration reads an old history in, and the one the index's parts by time are
/// built for), and samples phrases and Chinese pairs from it; with no store it only generates it again.
async fn import(
    store: Option<&dyn Store>,
    corpus: &Corpus,
    rooms: &[String],
    messages: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Samples> {
    /// Messages of one room per import call.
    const BLOCK: usize = 50;
    let mut samples = Samples::default();
    let per_room = (messages / rooms.len()).max(1);
    let sample_rate = (20_000.0 / messages as f64).min(1.0);
    // A year of history, the rooms interleaved in time.
    let start = 1_735_689_600_000_000i64;
    let step = 365 * 24 * 3600 * 1_000_000i64 / (per_room * rooms.len()) as i64;
    let what = if store.is_some() { "messages imported" } else { "messages generated again" };
    let progress = Progress::new(what, per_room * rooms.len());
    for first in (1..=per_room).step_by(BLOCK) {
        let last = (first + BLOCK - 1).min(per_room);
        for (r, room) in rooms.iter().enumerate() {
            let mut batch = Vec::with_capacity(last - first + 1);
            for seq in first..=last {
                let text = corpus.message(rng);
                if rng.gen_bool(sample_rate) {
                    sample(&text, &mut samples, rng);
                }
                batch.push(MessageRecord {
                    id: format!("bench-{r}-{seq}"),
                    room_id: room.clone(),
                    seq: seq as i64,
                    author: api::user(0),
                    ts: start + ((seq - 1) * rooms.len() + r) as i64 * step,
                    text,
                    story_title: None,
                    alert: false,
                    client_id: None,
                    replaced: false,
                    file: None,
                });
            }
            if let Some(store) = store {
                store.import_messages(room, &batch, last as i64).await?;
            }
            progress.add(batch.len());
        }
    }
    Ok(samples)
}

/// Keeps a two-character Chinese string or a two-word phrase of `text` to search for later.
fn sample(text: &str, samples: &mut Samples, rng: &mut StdRng) {
    let chars: Vec<char> = text.chars().collect();
    let pairs: Vec<usize> =
        (0..chars.len().saturating_sub(1)).filter(|&i| !chars[i].is_ascii() && !chars[i + 1].is_ascii()).collect();
    if let Some(&at) = pairs.choose(rng) {
        samples.bigrams.push(chars[at..at + 2].iter().collect());
    } else if text.is_ascii() {
        let words: Vec<&str> = text.split(' ').collect();
        if words.len() >= 2 {
            let at = rng.gen_range(0..words.len() - 1);
            samples.phrases.push(format!("{} {}", words[at], words[at + 1]));
        }
    }
}

/// Percent-encodes a query string value.
fn encode(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
