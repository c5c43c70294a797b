//! The real server on PostgreSQL (`--database-url postgres://…`): the core flow, live delivery and durability
//! across kill -9, each test in a database of its own.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pchat_store_postgres::testing::TempDatabase;
use serde_json::json;
use tokio::sync::Mutex;

use crate::harness::World;

#[tokio::test]
async fn the_server_runs_on_postgresql_and_loses_nothing_to_kill_9() {
    let (database, _) = TempDatabase::create().await;
    let mut w = World::with_config(&format!("[database]\nurl = \"{}\"\n", database.url())).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    alice
        .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "on postgres", "client_id": "k" }))
        .await
        .expect(201);
    assert_eq!(ws.next_of("message").await["message"]["text"], "on postgres");
    alice
        .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "on postgres", "client_id": "k" }))
        .await
        .expect(200);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = vec![];
    for i in 0..6 {
        let (api, room, acked) =
            (if i % 2 == 0 { alice.clone() } else { bob.clone() }, room.clone(), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let body = json!({ "text": format!("{i}/{n}"), "client_id": format!("{i}-{n}") });
                let url = format!("/api/v1/rooms/{room}/messages");
                match tokio::time::timeout(Duration::from_secs(5), api.post_raw(&url, body)).await {
                    Ok(Some(201)) => acked.lock().await.push(format!("{i}-{n}")),
                    _ => return,
                }
            }
        }));
    }
    while acked.lock().await.len() < 300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    w.server.restart().await;
    let alice = w.user("alice@example.com").await;
    let stored = alice.all_messages(&room).await;
    let ids: HashSet<&str> = stored.iter().filter_map(|m| m["client_id"].as_str()).collect();
    let acked = acked.lock().await;
    let missing: Vec<&String> = acked.iter().filter(|id| !ids.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "{} acknowledged messages lost", missing.len());
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    drop(w);
    drop(database);
}

#[tokio::test]
async fn an_unreachable_database_stops_the_server_naming_the_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://pchat:secret@127.0.0.1:1/mgc",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to postgres://pchat:***@127.0.0.1:1/mgc"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

/// A TCP proxy to the test PostgreSQL server that the test can cut and restore: a real network failure between
/// pchat and its database.
struct Proxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(target: (String, u16)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (Arc::clone(&up), Arc::clone(&cut));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // Refused: dropped at once.
                }
                let (target, cut) = (target.clone(), Arc::clone(&cut2));
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn losing_the_database_makes_the_server_unready_and_it_recovers() {
    let (database, config) = TempDatabase::create().await;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start((host, port)).await;
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let url = format!("postgres://{user}@127.0.0.1:{}/{}", proxy.port, database.name);
    let w = World::with_config(&format!("[database]\nurl = \"{url}\"\n")).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let post = |text: &str, client_id: &str| {
        let (alice, room) = (alice.clone(), room.clone());
        let body = json!({ "text": text, "client_id": client_id });
        async move { alice.post(&format!("/api/v1/rooms/{room}/messages"), body).await }
    };
    post("before", "b").await.expect(201);

    proxy.cut();
    let ready = w.server.api(None).get("/readyz").await;
    assert_eq!(ready.status.as_u16(), 503, "{:?}", ready.body);
    let refused = post("during", "d").await;
    refused.problem(503, "unavailable", None);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..100 {
        if w.server.api(None).get("/readyz").await.status.as_u16() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "/readyz never came back");
    // A retry of the refused post (same client_id) now succeeds, once; nothing acknowledged was lost.
    let mut retried = None;
    for _ in 0..50 {
        let reply = post("during", "d").await;
        if reply.status.as_u16() != 503 {
            retried = Some(reply.expect(201));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retried.is_some(), "posting never recovered");
    post("after", "a").await.expect(201);
    let texts: Vec<String> =
        alice.all_messages(&room).await.iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["before", "during", "after"]);
    drop(w);
    drop(database);
}
