//! Hostile and broken clients: request headers sent slowly or not at all, idle keep-alive connections, too many
//! connections that never authenticate, and stream peers that stop answering pings.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{PASSWORD, World, Ws};

const TIGHT: &str = "[limits]\nrequest_header_timeout_secs = 2\nmax_unauthenticated_connections = 8\nping_interval_secs = 1\npost_rate_per_sec = 100000.0\npost_burst = 100000.0\n";

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// A log without its terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the server closes the connection (reads return 0 or fail); returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

#[tokio::test]
async fn slow_or_missing_headers_and_idle_keep_alive_connections_are_closed_in_bounded_time() {
    let w = World::with_config(TIGHT).await;
    let address = host_port(&w.server.url);

    // One header byte every 300 ms: the headers never complete within the timeout.
    let mut dribbling = TcpStream::connect(&address).await.unwrap();
    dribbling.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let dribble = tokio::spawn(async move {
        let started = Instant::now();
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
            if dribbling.write_all(&[*byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(started.elapsed() < Duration::from_secs(20), "still accepting header bytes after 20 s");
        }
        unreachable!()
    });

    // Partial headers, then nothing.
    let mut stalled = TcpStream::connect(&address).await.unwrap();
    stalled.write_all(b"GET /healthz HT").await.unwrap();
    let stalled_after = closed_within(&mut stalled, Duration::from_secs(10)).await;

    // A complete request, then the keep-alive connection is left idle.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let idle_after = closed_within(&mut idle, Duration::from_secs(10)).await;

    let dribbled_for = dribble.await.unwrap();
    for (what, after) in
        [("dribbling headers", dribbled_for), ("partial headers", stalled_after), ("idle keep-alive", idle_after)]
    {
        assert!(after < Duration::from_secs(6), "{what}: closed after {after:?}");
    }
    // The server is fine.
    w.admin.get("/api/v1/me").await.expect(200);
}

#[tokio::test]
async fn connections_that_never_authenticate_are_bounded() {
    let w = World::with_config(TIGHT).await;
    let address = host_port(&w.server.url);
    // The test's own clients keep authenticated connections; these eight sockets say nothing.
    let mut silent = vec![];
    for _ in 0..8 {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The ninth is closed at once.
    let mut refused = TcpStream::connect(&address).await.unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    closed_within(&mut refused, Duration::from_secs(1)).await;
    // Authenticated clients are not affected: their connections left the bound with their first request.
    w.admin.get("/api/v1/me").await.expect(200);
    // Once the silent ones time out, new connections are accepted again.
    for mut s in silent {
        closed_within(&mut s, Duration::from_secs(10)).await;
    }
    let bob = w.server.api(None).signed_in("bob@example.com", PASSWORD).await;
    bob.get("/api/v1/me").await.expect(200);
}

#[tokio::test]
async fn a_stream_peer_that_stops_answering_pings_is_dropped_from_the_roster() {
    let w = World::with_config(TIGHT).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut watcher = w.ws(&alice).await;
    watcher.join(&room, None).await;
    let mut gone = w.ws(&bob).await;
    gone.join(&room, None).await;
    assert_eq!(watcher.next_of("participant_joined").await["user"]["address"], "bob@example.com");
    // Bob's client freezes: it no longer reads, so it answers no ping. Alice keeps answering hers.
    let started = Instant::now();
    let left = watcher.next_of("participant_left").await;
    assert_eq!(left["user"]["address"], "bob@example.com");
    assert!(started.elapsed() < Duration::from_secs(5), "dropped after {:?}", started.elapsed());
    let participants = alice.get(&format!("/api/v1/rooms/{room}/participants")).await.expect(200);
    let names: Vec<&str> =
        participants["participants"].as_array().unwrap().iter().map(|p| p["address"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice@example.com"]);
    drop(gone);
}

#[tokio::test]
async fn a_clients_close_frame_is_answered_at_once() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let ws: Ws = w.ws(&bob).await;
    let started = Instant::now();
    assert!(ws.close_answered().await, "the server did not answer the close frame");
    assert!(started.elapsed() < Duration::from_secs(2), "closing took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_last_administrator_cannot_lock_everyone_out_and_the_host_can_recover() {
    let mut w = World::new().await;
    let me = crate::harness::ADMIN;
    w.admin.delete(&format!("/api/v1/admins/{me}/admin")).await.problem(409, "last_administrator", None);
    w.admin.delete(&format!("/api/v1/users/{me}")).await.problem(409, "last_administrator", None);
    w.admin.get("/api/v1/admins").await.expect(200);
    // With a second administrator, the first may step down.
    w.admin.post("/api/v1/admins", json!({ "user": "bob@example.com", "role": "admin" })).await.expect(201);
    let bob = w.user("bob@example.com").await;
    w.admin.delete(&format!("/api/v1/admins/{me}/admin")).await.expect(204);
    bob.delete("/api/v1/admins/bob@example.com/admin").await.problem(409, "last_administrator", None);

    // Recovery on the server's host while it runs: grant the role in the database directly.
    let out = w.server.cli(&["admin", "add", "carol@example.com", "--on-host"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol = w.user("carol@example.com").await;
    carol.get("/api/v1/admins").await.expect(200);

    // And with the server stopped (no server.json): `pchat admin add` falls back to the database by itself.
    let status = w.server.terminate();
    assert!(status.success());
    let out = w.server.cli(&["admin", "add", "alice@example.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.server.restart().await;
    let alice = w.server.api(None).signed_in("alice@example.com", PASSWORD).await;
    let admins = alice.get("/api/v1/admins").await.expect(200);
    let granted_on_host: Vec<&str> = admins["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["role"] == "admin")
        .map(|g| g["user"].as_str().unwrap())
        .collect();
    assert_eq!(granted_on_host, ["alice@example.com", "bob@example.com", "carol@example.com"]);
}

#[tokio::test]
async fn a_stream_handshake_abandoned_halfway_leaves_no_connection_behind() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let address = host_port(&w.server.url);
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(&address).await.unwrap();
        let request = format!(
            "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            bob.token.as_deref().unwrap()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        // Gone before reading the answer.
        drop(tcp);
    }
    let mut connections = f64::NAN;
    for _ in 0..100 {
        let text = reqwest::get(format!("{}/metrics", w.server.url)).await.unwrap().text().await.unwrap();
        connections = text
            .lines()
            .find_map(|l| l.strip_prefix("pchat_connections "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        if connections == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections, 0.0, "abandoned handshakes left connections in the hub");
}

/// The server raises its open-files limit to the hard limit and says what it found; once the sockets it may hold
/// are all open, a new connection is closed at once (a warning, a metric) instead of accept failing in a loop,
/// and connections are accepted again as soon as some close.
#[tokio::test]
async fn when_descriptors_run_out_connections_are_refused_cleanly_and_counted() {
    let server = crate::harness::Server::start_with_open_files(300, 400).await;
    // 400 less a reserve of 128 + 400/200 for the server's own files.
    let log = plain(&server.log());
    assert!(log.contains("at most 270 connections open_files_limit=400 sockets=270"), "{log}");
    let address = host_port(&server.url);
    let metrics = || async {
        let text = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("pchat_connections_refused_total")).map(str::to_owned);
        line.and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse::<f64>().unwrap())).unwrap_or(-1.0)
    };
    assert_eq!(metrics().await, 0.0);
    let mut held = vec![];
    for _ in 0..300 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Those over the budget were closed at once; the others are still open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &held {
        let mut buf = [0u8; 16];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => closed += 1,
        }
    }
    assert!((30..=31).contains(&closed), "{closed} of 300 closed (270 sockets allowed)");
    let log = plain(&server.log());
    assert!(log.contains("refusing connections: 270 connections are open"), "{log}");
    drop(held);
    // Accepted again once they are gone; the refusals were counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = metrics().await;
        if refused >= 30.0 {
            break;
        }
        assert!(Instant::now() < deadline, "refusals counted: {refused}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = server.admin().await;
    admin.get("/api/v1/me").await.expect(200);

    // A WebSocket keeps its socket after the HTTP exchange that opened it: it counts until it closes.
    admin.put("/api/v1/policies/global", serde_json::json!({ "enable_persistent_chat": true })).await.expect(200);
    let token = admin.token.clone().unwrap();
    let mut streams = vec![];
    while let Some(ws) = crate::harness::Ws::try_connect(&server.url, &token).await {
        streams.push(ws);
        assert!(streams.len() <= 270, "more streams than the budget allows");
    }
    assert!(streams.len() >= 265, "only {} streams before refusals", streams.len());
    let mut refused = TcpStream::connect(&address).await.unwrap();
    closed_within(&mut refused, Duration::from_secs(1)).await;
    // One closes: its place is free again.
    streams.pop().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(crate::harness::Ws::try_connect(&server.url, &token).await.is_some(), "a freed place is taken again");
}
