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
    let mut w = World::with_config(&format!("database_url = \"{}\"\n", database.url())).await;
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
