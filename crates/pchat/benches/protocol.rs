//! The protocol benchmark (`cargo bench -p pchat --bench protocol`): starts the real `pchat serve` (built by cargo
//! in the bench profile, i.e. release) in a fresh data directory and measures, through the real protocol:
//! - durable posts/s with W concurrent writers, each posting over its own WebSocket and waiting for the ack
//!   (acknowledged = committed with `synchronous=FULL`);
//! - post→delivery latency for C clients joined to one room while one writer posts at a steady rate.
//!
//! With `--postgres` the server runs on a fresh PostgreSQL database, and with `--servers N` as a pool of N servers
//! on it, writers and readers spread over them (so delivery crosses servers).
//!
//! Results are printed and appended as Markdown to `--out` (default `bench/RESULTS.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../pchat-bench/src/corpus.rs"]
mod corpus;
#[path = "common/server.rs"]
mod server;

use server::{Api, PASSWORD, Server};

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Args {
    /// The pchat binary to benchmark (default: the one cargo built for this benchmark).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_pchat"))]
    server: PathBuf,
    /// Concurrent writers for the throughput run.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Seconds the throughput run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connected clients in the latency run.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Messages posted in the latency run, and their rate per second.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Run on a fresh PostgreSQL database (on the server PCHAT_TEST_POSTGRES_URL names, by default the local one)
    /// instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// Servers in the pool (more than one needs --postgres); writers and readers are spread over them.
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// Enable compliance capture (every post also captures its CHAT event; the worker archives them).
    #[arg(long)]
    compliance: bool,
    /// Topic feeds defined before the runs, spread over the bench users (at most 100 each): keywords are a word of
    /// middling frequency (half), a rare word (four in ten) or two words (one in ten).
    #[arg(long, default_value_t = 0)]
    feeds: usize,
    /// Words per posted message in the throughput run, drawn from the generated corpus (one message in ten in
    /// Chinese); 0 posts the short fixed text of earlier runs.
    #[arg(long, default_value_t = 0)]
    words: usize,
    /// Start the (SQLite) server on a copy of the databases in DIR/data — a history kept by the search benchmark's
    /// `--dir` — so that posts go into a database that already holds it.
    #[arg(long, conflicts_with = "postgres")]
    history: Option<PathBuf>,
    /// With --postgres, start from a copy of this database (a history kept by `search --postgres --dir`) instead
    /// of an empty one.
    #[arg(long, default_value = "", requires = "postgres")]
    postgres_template: String,
    /// Leave the `[files]` section out of the configuration (to run a build from before files in rooms, which
    /// refuses configuration it does not know, on PostgreSQL).
    #[arg(long)]
    no_files_config: bool,
    /// SQLite `synchronous` setting: full or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// Markdown file the results are appended to.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/RESULTS.md"))]
    out: PathBuf,
    /// `cargo bench` passes `--bench`; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts a server in a fresh temporary data directory (holding a copy of `--history` when given).
async fn start(args: &Args, database_url: Option<&str>) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    if let Some(history) = &args.history {
        std::fs::create_dir_all(&data)?;
        for entry in std::fs::read_dir(history.join("data"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "db") {
                std::fs::copy(&path, data.join(path.file_name().unwrap_or_default()))?;
            }
        }
    }
    let extra = format!("[storage]\nsynchronous = \"{}\"\n", args.synchronous);
    let setup = server::Setup { database_url, files_config: !args.no_files_config, extra: &extra };
    let path = dir.path().to_owned();
    server::start(&args.server, &path, &setup, Duration::from_secs(30), Some(dir))
}

/// A WebSocket stream signed in as `api`'s user.
async fn ws(api: &Api) -> anyhow::Result<Socket> {
    let url = format!("{}/api/v1/stream?token={}", api.base.replacen("http://", "ws://", 1), api.token);
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

/// Times one forced run of the periodic export (Lync XmlAdapter XML) of everything archived so far, through
/// `POST /api/v1/compliance/export` into a temporary directory.
async fn export(server: &Server, backend: &str) -> anyhow::Result<String> {
    let admin = Api::sign_in(&server.url, "admin@example.com").await?;
    // Let the worker archive what is still in the outbox.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir()?;
    let path = "/api/v1/compliance/configuration/global";
    let mut config = admin.send(reqwest::Method::GET, path, json!(null)).await?;
    config["output_dir"] = json!(dir.path().to_string_lossy());
    admin.send(reqwest::Method::PUT, path, config).await?;
    let started = Instant::now();
    let mut events = 0;
    let mut files = 0;
    // The worker may have started the first run already; force runs until nothing is left.
    loop {
        let report = admin.send(reqwest::Method::POST, "/api/v1/compliance/export", json!({})).await?;
        let n = report["events"].as_u64().unwrap_or(0);
        if n == 0 {
            break;
        }
        events += n;
        files += report["files"].as_array().map_or(0, Vec::len);
    }
    let secs = started.elapsed().as_secs_f64();
    let on_disk: u64 = std::fs::read_dir(dir.path())?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    Ok(format!(
        "compliance export, xml adapter ({backend}): {events} events in {files} files ({:.1} MB) in {secs:.2} s, \
         {:.0} events/s",
        on_disk as f64 / 1e6,
        events as f64 / secs
    ))
}

/// Users bench-0..n with chat enabled, one open room; returns the room id.
async fn setup(server: &Server, users: usize, compliance: bool) -> anyhow::Result<String> {
    let admin = Api::sign_in(&server.url, "admin@example.com").await?;
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    admin.send(put.clone(), "/api/v1/policies/global", json!({ "enable_persistent_chat": true })).await?;
    if compliance {
        let config = json!({
            "enabled": true, "adapter": "xml", "output_dir": "", "run_interval_secs": 900,
            "one_chat_room_per_output_file": false, "add_user_details": false, "add_chat_room_details": false,
            "create_file_attachments_manifest": false
        });
        admin.send(put, "/api/v1/compliance/configuration/global", config).await?;
    }
    for i in 0..users {
        let body = json!({ "address": format!("bench-{i}@example.com"), "display_name": format!("Bench {i}"), "password": PASSWORD });
        admin.send(post.clone(), "/api/v1/users", body).await?;
    }
    admin.send(post.clone(), "/api/v1/categories", json!({ "name": "Bench", "allowed_members": ["*"] })).await?;
    let room = admin
        .send(post, "/api/v1/rooms", json!({ "name": "Bench", "category": "name:Bench", "privacy": "open" }))
        .await?;
    Ok(room["id"].as_str().ok_or_else(|| anyhow!("no room id"))?.to_owned())
}

async fn next_json(ws: &mut Socket) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("stream closed"),
        }
    }
}

async fn join(ws: &mut Socket, room: &str) -> anyhow::Result<()> {
    ws.send(Message::text(json!({ "op": "join", "room": room }).to_string())).await?;
    loop {
        if next_json(ws).await?["type"] == "joined" {
            return Ok(());
        }
    }
}

/// Creates `n` topic feeds spread over `users` bench users.
async fn create_feeds(server: &Server, users: usize, n: usize) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let corpus = corpus::Corpus::new(&mut rng);
    let per_user = n.div_ceil(users).min(100);
    let mut made = 0;
    for u in 0..users {
        let api = Api::sign_in(&server.url, &format!("bench-{u}@example.com")).await?;
        for f in 0..per_user {
            if made == n {
                return Ok(());
            }
            let roll = rng.gen_range(0..10);
            let keywords = match roll {
                0..=4 => corpus.word_of_class(1, &mut rng).to_owned(),
                5..=8 => corpus.word_of_class(2, &mut rng).to_owned(),
                _ => format!("{} {}", corpus.word_of_class(1, &mut rng), corpus.word_of_class(2, &mut rng)),
            };
            let body = json!({ "name": format!("feed {f}"), "keywords": keywords });
            api.send(reqwest::Method::POST, "/api/v1/me/feeds", body).await?;
            made += 1;
        }
    }
    if made < n {
        bail!("only {made} feeds fit on {users} users (100 each)");
    }
    Ok(())
}

/// W writers post as fast as their acks come back; returns (acknowledged posts, seconds, per-post latencies in ms).
async fn throughput(
    servers: &[Server],
    room: &str,
    writers: usize,
    seconds: u64,
    words: usize,
) -> anyhow::Result<(u64, f64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for w in 0..writers {
        let api = Api::sign_in(&servers[w % servers.len()].url, &format!("bench-{w}@example.com")).await?;
        let mut ws = ws(&api).await?;
        let (room, stop, count) = (room.to_owned(), Arc::clone(&stop), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let corpus = (words > 0).then(|| corpus::Corpus::new(&mut rng));
            let mut latencies = vec![];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let client_id = format!("w{w}-{n}");
                let text = match &corpus {
                    Some(c) => c.message_of(words, &mut rng),
                    None => format!("throughput {client_id}"),
                };
                let sent = Instant::now();
                let op = json!({ "op": "post", "room": room, "text": text, "client_id": client_id });
                ws.send(Message::text(op.to_string())).await?;
                loop {
                    let f = next_json(&mut ws).await?;
                    if f["type"] == "ack" {
                        break;
                    }
                    if f["type"] == "error" {
                        bail!("post failed: {f}");
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = vec![];
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok((count.load(Ordering::Relaxed), started.elapsed().as_secs_f64(), latencies))
}

/// C clients joined to the room, one writer posting `messages` at `rate`/s; returns every post→delivery latency (ms).
async fn delivery(
    servers: &[Server],
    room: &str,
    clients: usize,
    messages: usize,
    rate: u64,
) -> anyhow::Result<Vec<f64>> {
    let epoch = Instant::now();
    let mut readers = vec![];
    for c in 0..clients {
        let api = Api::sign_in(&servers[c % servers.len()].url, &format!("bench-{c}@example.com")).await?;
        let mut ws = ws(&api).await?;
        join(&mut ws, room).await?;
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages);
            while latencies.len() < messages {
                let f = next_json(&mut ws).await?;
                if f["type"] != "message" {
                    continue;
                }
                let text = f["message"]["text"].as_str().unwrap_or("");
                if let Some(sent_us) = text.strip_prefix("latency ").and_then(|t| t.parse::<u64>().ok()) {
                    let now_us = epoch.elapsed().as_micros() as u64;
                    latencies.push(now_us.saturating_sub(sent_us) as f64 / 1000.0);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let writer = Api::sign_in(&servers[0].url, &format!("bench-{clients}@example.com")).await?;
    let mut ws = ws(&writer).await?;
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(interval);
    for n in 0..messages {
        tick.tick().await;
        let sent_us = epoch.elapsed().as_micros() as u64;
        let op =
            json!({ "op": "post", "room": room, "text": format!("latency {sent_us}"), "client_id": format!("l{n}") });
        ws.send(Message::text(op.to_string())).await?;
    }
    let mut all = vec![];
    for r in readers {
        all.extend(r.await??);
    }
    Ok(all)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
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
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {mem} GiB RAM")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.servers > 1 && !args.postgres {
        bail!("a pool of several servers needs --postgres");
    }
    let database = if args.postgres {
        Some(pchat_store_postgres::testing::TempDatabase::create_as(&args.postgres_template).await.0)
    } else {
        None
    };
    let url = database.as_ref().map(|d| d.url());
    // One at a time: the first bootstraps the administrator.
    let mut servers = vec![];
    for _ in 0..args.servers.max(1) {
        servers.push(start(&args, url.as_deref()).await?);
    }
    let room = setup(&servers[0], args.clients.max(args.writers) + 1, args.compliance).await?;
    let mut backend = if args.postgres {
        format!("PostgreSQL, {} server(s)", servers.len())
    } else {
        format!("SQLite synchronous={}", args.synchronous)
    };
    backend.push_str(if args.compliance { ", compliance on" } else { ", compliance off" });

    if args.feeds > 0 {
        create_feeds(&servers[0], args.clients.max(args.writers) + 1, args.feeds).await?;
        backend.push_str(&format!(", {} topic feeds", args.feeds));
    }
    if args.words > 0 {
        backend.push_str(&format!(", {}-word messages", args.words));
    }
    if let Some(history) = &args.history {
        backend.push_str(&format!(", database already holding {}", history.display()));
    }
    if !args.postgres_template.is_empty() {
        backend.push_str(&format!(", database a copy of {}", args.postgres_template));
    }
    let (posts, secs, post_latencies) = throughput(&servers, &room, args.writers, args.seconds, args.words).await?;
    let rate = posts as f64 / secs;
    let post_line = format!(
        "durable posts/s, {} writers over WebSocket ({backend}): {:.0} posts/s ({posts} in {secs:.1} s); ack latency {}",
        args.writers,
        rate,
        summary(post_latencies)
    );
    println!("{post_line}");

    let latencies = delivery(&servers, &room, args.clients, args.messages, args.rate).await?;
    let delivery_line = format!(
        "post→delivery ({backend}; writer on the first server, clients spread over all), {} clients in one room, \
         {} messages at {}/s: {}",
        args.clients,
        args.messages,
        args.rate,
        summary(latencies)
    );
    println!("{delivery_line}");
    let mut lines = vec![post_line, delivery_line];
    if args.compliance {
        let export_line = export(&servers[0], &backend).await?;
        println!("{export_line}");
        lines.push(export_line);
    }

    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&args.out)?;
    let when = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    writeln!(file, "\n## {when} — {}\n", machine())?;
    for line in lines {
        writeln!(file, "- {line}")?;
    }
    drop(servers);
    drop(database);
    Ok(())
}
