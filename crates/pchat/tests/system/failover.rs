//! Failover and failback of a pool between two real PostgreSQL instances: a primary with a hot standby streaming
//! synchronously. The primary crashes in the middle of a burst of posts; `pchat pool failover --promote` moves
//! both servers to the promoted standby, and every acknowledged message is there. Then the old primary is rebuilt
//! as a standby of the new one and `pchat pool failback --promote` moves the pool back, fencing the database it
//! leaves while posts keep arriving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, PASSWORD, Server, World, Ws};
use crate::pgcluster::Root;

/// Acknowledged posts: client_id → (message id, seq).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

/// Posts `count` messages, retrying each (same client_id) until it is acknowledged; records every ack.
fn writer(
    api: Api,
    room: String,
    prefix: &'static str,
    count: usize,
    acked: Acked,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        let path = format!("/api/v1/rooms/{room}/messages");
        for n in 0..count {
            let client_id = format!("{prefix}-{n}");
            let body = json!({ "text": format!("{prefix} #{n}"), "client_id": client_id });
            loop {
                let reply = tokio::time::timeout(
                    Duration::from_secs(10),
                    api.try_call(Method::POST, &path, Some(body.clone())),
                );
                let last = match reply.await {
                    // 200: a retry found the message an earlier, unanswered attempt committed.
                    Ok(Some(reply)) if matches!(reply.status.as_u16(), 200 | 201) => {
                        let m = reply.body;
                        let entry = (m["id"].as_str().unwrap().to_owned(), m["seq"].as_i64().unwrap());
                        acked.lock().unwrap().insert(client_id, entry);
                        break;
                    }
                    Ok(Some(reply)) => format!("{} {}", reply.status, reply.body),
                    Ok(None) => "no response".into(),
                    Err(_) => "no answer within 10 s".into(),
                };
                if Instant::now() > deadline {
                    return Err(format!("{client_id} was never acknowledged; last answer: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    })
}

fn pchat(config: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .arg("--json")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), serde_json::from_str(&stdout).unwrap_or(Value::Null), stderr)
}

/// Waits until every registered server reports working on `database`.
async fn servers_on(admin: &Api, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(reply) = admin.try_call(Method::GET, "/api/v1/pool/servers", None).await
            && reply.status.as_u16() == 200
            && let Some(items) = reply.body["items"].as_array()
            && items.len() == 2
            && items.iter().all(|s| s["database"] == database)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the servers did not all move to the {database} database");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every acknowledged message is in the room's history exactly once, under the seq it was acknowledged with,
/// and the history has no gaps.
async fn history_holds(api: &Api, room: &str, acked: &Acked, expected: usize) {
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), expected, "every post was eventually acknowledged");
    let history = api.all_messages(room).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=history.len() as i64).collect::<Vec<_>>(), "history without gaps");
    let by_id: BTreeMap<&str, i64> =
        history.iter().map(|m| (m["id"].as_str().unwrap(), m["seq"].as_i64().unwrap())).collect();
    for (client_id, (id, seq)) in &acked {
        assert_eq!(by_id.get(id.as_str()), Some(seq), "acknowledged {client_id} is in the history");
    }
    let texts: BTreeSet<&str> = history.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), history.len(), "no message landed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_synchronous_standby_and_failback_keep_every_acknowledged_message() {
    let root = Root::new();
    let mut a = root.primary("a");
    a.start();
    a.execute("CREATE DATABASE pchat").await;
    let mut b = root.standby("b", &a, "standby_b", None);
    b.start();
    a.require_sync_standby("standby_b").await;

    let databases = format!("[database]\nurl = \"{}\"\nbackup_url = \"{}\"\n", a.url("pchat"), b.url("pchat"));
    let pool_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pool_file.path(), &databases).unwrap();
    let w = World::with_config(&databases).await;
    let second = Server::start_with(&databases).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "Floor", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let bob = second.api(None).signed_in("bob@example.com", PASSWORD).await;
    servers_on(&w.admin, "primary").await;

    // Failing over to a standby that is still in recovery, without --promote, is refused and changes nothing.
    let (ok, _, err) = pchat(pool_file.path(), &["pool", "failover"]);
    assert!(!ok && err.contains("standby"), "{err}");
    let (ok, state, _) = pchat(pool_file.path(), &["pool", "state"]);
    assert!(ok);
    assert_eq!(state["databases"][0]["standby"], false, "{state}");
    assert_eq!(state["databases"][1]["standby"], true, "{state}");
    assert!(state["databases"].as_array().unwrap().iter().all(|d| d["epoch"].is_null()), "{state}");

    // A burst through both servers; the primary crashes in the middle of it.
    let acked: Acked = Arc::default();
    let writers = [
        writer(alice.clone(), room.clone(), "a", 150, acked.clone()),
        writer(bob.clone(), room.clone(), "b", 150, acked.clone()),
    ];
    while acked.lock().unwrap().len() < 80 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.crash();
    let at_crash = acked.lock().unwrap().len();
    let (ok, report, err) = pchat(pool_file.path(), &["pool", "failover", "--promote"]);
    assert!(ok, "failover failed: {err}");
    assert_eq!(report["state"], "failed_over", "{report}");
    assert_eq!(report["promoted"], true, "{report}");
    assert_eq!(report["fenced"], false, "the crashed primary cannot be fenced: {report}");
    for writer in writers {
        if let Err(e) = writer.await.unwrap() {
            panic!("{e}\n--- server 1:\n{}\n--- server 2:\n{}", w.server.log(), second.log());
        }
    }
    assert!(at_crash < 300, "the crash happened during the burst");
    servers_on(&w.admin, "backup").await;
    history_holds(&alice, &room, &acked, 300).await;

    // Live delivery between the servers works on the backup.
    let mut watcher = Ws::connect(&second.url, bob.token.as_deref().unwrap()).await;
    watcher.join(&room, Some(300)).await;
    let live =
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "on the backup" })).await.expect(201);
    assert_eq!(watcher.next_of("message").await["message"]["id"], live["id"]);

    // Failback: the old primary comes back as a synchronous standby of the backup, then takes over again while
    // posts keep coming; the backup is fenced so nothing commits there after the primary's promotion.
    let port = a.port;
    a.destroy();
    let mut a = root.standby("a2", &b, "standby_a", Some(port));
    a.start();
    b.require_sync_standby("standby_a").await;
    let acked_back: Acked = Arc::default();
    let writers = [
        writer(alice.clone(), room.clone(), "c", 100, acked_back.clone()),
        writer(bob.clone(), room.clone(), "d", 100, acked_back.clone()),
    ];
    while acked_back.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (ok, report, err) = pchat(pool_file.path(), &["pool", "failback", "--promote"]);
    assert!(ok, "failback failed: {err}");
    assert_eq!(report["state"], "normal", "{report}");
    assert_eq!((&report["fenced"], &report["promoted"]), (&json!(true), &json!(true)), "{report}");
    for writer in writers {
        if let Err(e) = writer.await.unwrap() {
            panic!("{e}\n--- server 1:\n{}\n--- server 2:\n{}", w.server.log(), second.log());
        }
    }
    servers_on(&w.admin, "primary").await;
    acked.lock().unwrap().extend(acked_back.lock().unwrap().clone());
    let live_id = live["id"].as_str().unwrap().to_owned();
    acked.lock().unwrap().insert("live".into(), (live_id, 301));
    history_holds(&alice, &room, &acked, 501).await;

    // The fenced backup takes no writes; the primary does.
    let fenced = b.client("pchat").await;
    let refused = fenced.batch_execute("CREATE TABLE after_fence (x int)").await;
    assert!(refused.is_err(), "the fenced database still took a write");
    bob.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "home again" })).await.expect(201);
    let (ok, state, _) = pchat(pool_file.path(), &["pool", "state"]);
    assert!(ok);
    assert_eq!(state["databases"][0]["state"], "normal", "{state}");
    assert_eq!(state["databases"][0]["epoch"], 2, "{state}");
    drop((second, w));
}
