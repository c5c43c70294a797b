//! The search benchmark (`cargo bench -p pchat --bench search`): a generated history (default 1,000,000 messages
//! over 1,000 rooms, one in ten in Chinese, words Zipf-distributed with realistic lengths) is written through the
//! storage port's import (which indexes it as posting does), then the real `pchat serve` answers searches over HTTP
//! and each is timed from request to parsed answer:
//! - words of three frequency classes (the 100 most common, ranks 100–2,000, rarer),
//! - exact phrases (two adjacent words of a generated message),
//! - two-character Chinese strings taken from generated messages.
//!
//! Each kind runs as a user who reads every room and as one who reads a tenth of them. It also reports the import
//! rate and the index's size per message. `--postgres` runs it on a fresh PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/server.rs"]
mod server;

use server::{Api, PASSWORD, Server};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use pchat_store::{MessageRecord, Store};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = env!("CARGO_BIN_EXE_pchat"))]
    server: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    #[arg(long, default_value_t = 1_000)]
    rooms: usize,
    /// Queries timed per kind and user.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long)]
    postgres: bool,
    /// Keep the generated history in this directory and reuse it when it is already there (same --messages and
    /// --rooms), so query runs can be repeated without importing again. With --postgres the history is kept in
    /// the database pchat_bench_MESSAGES_ROOMS (a template for `protocol --postgres-template`).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/RESULTS.md"))]
    out: PathBuf,
    #[arg(long, hide = true)]
    bench: bool,
}

fn start(binary: &Path, dir: &Path, database_url: Option<&str>) -> anyhow::Result<Server> {
    let setup = server::Setup { database_url, files_config: true, extra: "" };
    server::start(binary, dir, &setup, Duration::from_secs(600), None)
}

/// Users `wide` (reads every room) and `narrow` (reads the first tenth), and the rooms; returns the room ids.
async fn setup(server: &Server, rooms: usize) -> anyhow::Result<Vec<String>> {
    use reqwest::Method;
    let admin = Api::sign_in(&server.url, "admin@example.com").await?;
    admin.send(Method::PUT, "/api/v1/policies/global", json!({ "enable_persistent_chat": true })).await?;
    for user in ["wide", "narrow"] {
        let body = json!({ "address": format!("{user}@example.com"), "display_name": user, "password": PASSWORD });
        admin.send(Method::POST, "/api/v1/users", body).await?;
    }
    admin.send(Method::POST, "/api/v1/groups", json!({ "name": "wide" })).await?;
    let members = json!({ "members": { "add": ["wide@example.com", "admin@example.com"] } });
    admin.send(Method::PATCH, "/api/v1/groups/wide", members).await?;
    admin.send(Method::POST, "/api/v1/categories", json!({ "name": "Everyone", "allowed_members": ["*"] })).await?;
    admin
        .send(Method::POST, "/api/v1/categories", json!({ "name": "Wide", "allowed_members": ["group:wide"] }))
        .await?;
    let mut ids = vec![];
    for i in 0..rooms {
        let category = if i < rooms / 10 { "name:Everyone" } else { "name:Wide" };
        let body = json!({ "name": format!("Room {i:04}"), "category": category, "privacy": "open" });
        ids.push(admin.send(Method::POST, "/api/v1/rooms", body).await?["id"].as_str().unwrap().to_owned());
    }
    Ok(ids)
}

/// What the queries look for, sampled from the generated history.
#[derive(Default)]
struct Samples {
    phrases: Vec<String>,
    bigrams: Vec<String>,
}

async fn import(
    store: Option<&dyn Store>,
    corpus: &corpus::Corpus,
    rooms: &[String],
    messages: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let per_room = messages / rooms.len();
    let sample_rate = (20_000.0 / messages as f64).min(1.0);
    // A year of history, the rooms interleaved in time.
    let start = 1_735_689_600_000_000i64;
    let step = 365 * 24 * 3600 * 1_000_000i64 / messages as i64;
    for (r, room) in rooms.iter().enumerate() {
        let mut batch = Vec::with_capacity(per_room);
        for seq in 1..=per_room {
            let text = corpus.message(rng);
            if rand::Rng::gen_bool(rng, sample_rate) {
                let chars: Vec<char> = text.chars().collect();
                let pairs: Vec<usize> =
                    (0..chars.len() - 1).filter(|&i| !chars[i].is_ascii() && !chars[i + 1].is_ascii()).collect();
                if let Some(&at) = pairs.choose(rng) {
                    samples.bigrams.push(chars[at..at + 2].iter().collect());
                } else if text.is_ascii() {
                    let words: Vec<&str> = text.split(' ').collect();
                    let at = rand::Rng::gen_range(rng, 0..words.len() - 1);
                    samples.phrases.push(format!("{} {}", words[at], words[at + 1]));
                }
            }
            batch.push(MessageRecord {
                id: format!("bench-{r}-{seq}"),
                room_id: room.clone(),
                seq: seq as i64,
                author: "wide@example.com".into(),
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
            store.import_messages(room, &batch, per_room as i64).await?;
        }
    }
    Ok(samples)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&v, 50.0),
        percentile(&v, 95.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn encode(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(7);
    let corpus = corpus::Corpus::new(&mut rng);
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    // A kept history (--dir) names its rooms in this file once its import has finished.
    let imported = dir.join(format!("imported-{}-{}.json", args.messages, args.rooms));
    let database = match (args.postgres, &args.dir) {
        (false, _) => None,
        (true, None) => Some(pchat_store_postgres::testing::TempDatabase::create().await.0),
        (true, Some(_)) => {
            let name = format!("pchat_bench_{}_{}", args.messages, args.rooms);
            let (database, _, existed) = pchat_store_postgres::testing::TempDatabase::kept(&name).await;
            if !existed {
                let _ = std::fs::remove_file(&imported);
            } else if !imported.exists() {
                anyhow::bail!("database {name} holds an unfinished import: drop it and run again");
            }
            Some(database)
        }
    };
    let url = database.as_ref().map(|d| d.url());
    let reused: Option<Vec<String>> = std::fs::read(&imported).ok().map(|b| serde_json::from_slice(&b)).transpose()?;
    let rooms = match &reused {
        Some(rooms) => rooms.clone(),
        None => {
            let server = start(&args.server, &dir, url.as_deref())?;
            setup(&server, args.rooms).await?
        }
    };

    let started = Instant::now();
    let (samples, size_line) = match &url {
        None => {
            let path = dir.join("data").join("mgc.db");
            let store = pchat_store_sqlite::SqliteStore::open(&path, pchat_store_sqlite::Durability::Normal)?;
            let target: Option<&dyn Store> = if reused.is_some() { None } else { Some(&store) };
            let samples = import(target, &corpus, &rooms, args.messages, &mut rng).await?;
            drop(store);
            std::fs::write(&imported, serde_json::to_vec(&rooms)?)?;
            let conn = rusqlite::Connection::open(&path)?;
            let postings: i64 = conn.query_row("SELECT count(*) FROM search_postings", [], |r| r.get(0))?;
            let bytes: Option<i64> =
                conn.query_row("SELECT sum(pgsize) FROM dbstat WHERE name = 'search_postings'", [], |r| r.get(0)).ok();
            let file = std::fs::metadata(&path)?.len();
            let index = bytes.map_or("unknown (no dbstat)".to_owned(), |b| {
                format!("{:.0} bytes/message", b as f64 / args.messages as f64)
            });
            (
                samples,
                format!(
                    "{postings} postings ({:.1} per message); index {index}; database file {:.0} MB",
                    postings as f64 / args.messages as f64,
                    file as f64 / 1e6
                ),
            )
        }
        Some(url) => {
            let store = pchat_store_postgres::PgStore::connect(url).await?;
            let target: Option<&dyn Store> = if reused.is_some() { None } else { Some(&store) };
            let samples = import(target, &corpus, &rooms, args.messages, &mut rng).await?;
            drop(store);
            std::fs::write(&imported, serde_json::to_vec(&rooms)?)?;
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute("VACUUM ANALYZE").await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM search_postings), pg_total_relation_size('search_postings'), \
                     pg_total_relation_size('messages')",
                    &[],
                )
                .await?;
            let (postings, index, messages): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            (
                samples,
                format!(
                    "{postings} postings ({:.1} per message); index {:.0} bytes/message (table and primary key); messages {:.0} bytes/message",
                    postings as f64 / args.messages as f64,
                    index as f64 / args.messages as f64,
                    messages as f64 / args.messages as f64
                ),
            )
        }
    };
    let import_secs = started.elapsed().as_secs_f64();
    let backend = if args.postgres { "PostgreSQL" } else { "SQLite" };
    let import_line = if reused.is_some() {
        format!(
            "search index ({backend}): {} messages in {} rooms (imported earlier); {size_line}",
            args.messages, args.rooms
        )
    } else {
        format!(
            "search index ({backend}): {} messages in {} rooms imported and indexed in {import_secs:.0} s ({:.0} messages/s); {size_line}",
            args.messages,
            args.rooms,
            args.messages as f64 / import_secs
        )
    };
    println!("{import_line}");

    let server = start(&args.server, &dir, url.as_deref())?;
    let mut lines = vec![import_line];
    for user in ["wide", "narrow"] {
        let api = Api::sign_in(&server.url, &format!("{user}@example.com")).await?;
        let mut kinds: Vec<(String, Vec<String>)> = vec![];
        for (class, name) in [(0, "common word"), (1, "mid-frequency word"), (2, "rare word")] {
            kinds.push((
                name.to_owned(),
                (0..args.queries).map(|_| corpus.word_of_class(class, &mut rng).to_owned()).collect(),
            ));
        }
        let mut phrases = samples.phrases.clone();
        phrases.shuffle(&mut rng);
        kinds.push(("exact phrase (2 words)".into(), phrases.into_iter().take(args.queries).collect()));
        let mut bigrams = samples.bigrams.clone();
        bigrams.shuffle(&mut rng);
        kinds.push(("2-character Chinese".into(), bigrams.into_iter().take(args.queries).collect()));
        // Warm the server (connections, caches) before timing.
        for q in kinds.iter().flat_map(|k| k.1.iter()).take(20) {
            api.send(reqwest::Method::GET, &format!("/api/v1/search?q={}", encode(q)), Value::Null).await?;
        }
        for (name, queries) in kinds {
            let mode = if name.starts_with("exact") { "exact" } else { "all" };
            let mut times = vec![];
            let mut hits = 0usize;
            for q in &queries {
                let t = Instant::now();
                let page = api
                    .send(reqwest::Method::GET, &format!("/api/v1/search?match={mode}&q={}", encode(q)), Value::Null)
                    .await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                hits += page["items"].as_array().map_or(0, Vec::len);
            }
            let line = format!(
                "search ({backend}, {} messages, user reading {} rooms), {name}: {} ({} queries, {:.1} results/query)",
                args.messages,
                if user == "wide" { args.rooms } else { args.rooms / 10 },
                summary(times),
                queries.len(),
                hits as f64 / queries.len() as f64
            );
            println!("{line}");
            lines.push(line);
        }
    }
    drop(server);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&args.out)?;
    let when = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    writeln!(file, "\n## {when} — search, {} ({})\n", backend, machine())?;
    for line in lines {
        writeln!(file, "- {line}")?;
    }
    drop(database);
    Ok(())
}
