//! Crashes and shutdown: kill -9 during a burst of acknowledged posts loses nothing; SIGTERM closes live
//! connections with a close frame and exits cleanly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::harness::World;

#[tokio::test]
async fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let mut w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let writers = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = vec![];
    for (i, who) in writers.iter().cycle().take(8).enumerate() {
        let api = w.user(who).await;
        let (room, acked) = (room.clone(), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let url = format!("/api/v1/rooms/{room}/messages");
                let body = json!({ "text": format!("writer {i} #{n}"), "client_id": format!("{i}-{n}") });
                // Once the server dies, requests fail: stop. Only 201 counts as acknowledged.
                let Ok(reply) = tokio::time::timeout(Duration::from_secs(5), api.post_raw(&url, body)).await else {
                    return;
                };
                match reply {
                    Some(201) => acked.lock().await.push(format!("{i}-{n}")),
                    _ => return,
                }
            }
        }));
    }
    // Let the burst run, then pull the plug mid-flight.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if acked.lock().await.len() >= 400 {
            break;
        }
    }
    w.server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 400);

    w.server.restart().await;
    let admin = w.server.admin().await;
    w.admin = admin;
    let alice = w.user("alice@example.com").await;
    let stored = alice.all_messages(&room).await;
    let stored_ids: HashSet<String> = stored.iter().map(|m| m["client_id"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored_ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "no gaps after recovery");
    // Posting continues after the restart with the next seq.
    let next =
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "after restart" })).await.expect(201);
    assert_eq!(next["seq"].as_i64().unwrap(), seqs.len() as i64 + 1);
}

#[tokio::test]
async fn sigterm_closes_streams_with_a_close_frame_and_exits_cleanly() {
    let mut w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let bob = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = w.server.terminate();
        (status, w)
    });
    let close = loop {
        match ws.next_or_close().await {
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1001), "going away");
    let (status, _w) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let server = crate::harness::Server::start_with("log_format = \"json\"\n").await;
    drop(server.admin().await);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn a_restart_revokes_the_local_token_a_crash_left_behind() {
    let mut server = crate::harness::Server::start().await;
    let old = server.local_token.clone();
    server.api(Some(&old)).get("/api/v1/me").await.expect(200);
    server.kill9();
    assert!(server.data_dir.join("server.json").exists(), "a crash leaves server.json behind");
    server.restart().await;
    assert_ne!(server.local_token, old);
    server.api(Some(&old)).get("/api/v1/me").await.problem(401, "unauthenticated", None);
    server.api(Some(&server.local_token)).get("/api/v1/me").await.expect(200);
}
