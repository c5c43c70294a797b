//! Compliance capture through the real server: every kind of event lands in the archive exactly once (SQLite and
//! PostgreSQL), a kill -9 in the middle of a burst neither loses nor duplicates a CHAT event, two servers' workers
//! archive each event once, and an edited archive row fails verification at that row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, PASSWORD, Server, World};
use pchat_store_postgres::testing::TempDatabase;

async fn enable(admin: &Api) {
    enable_into(admin, "").await;
}

/// Switches capture on, exporting into `output_dir` (empty: no export) every 15 minutes.
pub async fn enable_into(admin: &Api, output_dir: &str) {
    let config = json!({
        "enabled": true, "adapter": "xml", "output_dir": output_dir, "run_interval_secs": 900,
        "one_chat_room_per_output_file": false, "add_user_details": false, "add_chat_room_details": false,
        "create_file_attachments_manifest": false
    });
    admin.put("/api/v1/compliance/configuration/global", config).await.expect(200);
}

/// Every archived event, oldest first (paging through the API).
pub async fn archived(admin: &Api) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/compliance/events?limit=1000&cursor={c}"),
            None => "/api/v1/compliance/events?limit=1000".to_owned(),
        };
        let page = admin.get(&path).await.expect(200);
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Waits until the archive holds at least `count` events matching `keep`, and no more arrive for a moment.
pub async fn settled(admin: &Api, keep: impl Fn(&Value) -> bool, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_len = usize::MAX;
    loop {
        let events: Vec<Value> = archived(admin).await.into_iter().filter(&keep).collect();
        if events.len() >= count && events.len() == last_len {
            return events;
        }
        assert!(Instant::now() < deadline, "the archive holds {} of {count} events", events.len());
        last_len = events.len();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

pub fn kinds(events: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e["type"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    out
}

async fn every_event_once(extra_config: &str) {
    let w = World::with_config(extra_config).await;
    let out = tempfile::tempdir().unwrap();
    enable_into(&w.admin, out.path().to_str().unwrap()).await;
    let before = settled(&w.admin, |_| true, 1).await;
    assert_eq!(kinds(&before), [("COMPLIANCE_CONFIG_CHANGED".to_owned(), 1)].into_iter().collect());

    // Sign-in, failed and successful.
    w.server
        .api(None)
        .post("/api/v1/sessions", json!({ "user": "alice@example.com", "password": "wrong-one" }))
        .await
        .expect(401);
    let alice = w.user("alice@example.com").await;
    // Directory, roles, policy and configuration.
    w.admin
        .post("/api/v1/users", json!({ "address": "dave@example.com", "display_name": "Dave", "password": PASSWORD }))
        .await
        .expect(201);
    w.admin.post("/api/v1/groups", json!({ "name": "desk" })).await.expect(201);
    w.admin.patch("/api/v1/groups/desk", json!({ "members": { "add": ["dave@example.com"] } })).await.expect(200);
    w.admin.post("/api/v1/admins", json!({ "user": "dave@example.com", "role": "admin" })).await.expect(201);
    w.admin.delete("/api/v1/admins/dave@example.com/admin").await.expect(204);
    w.admin.put("/api/v1/policies/user:dave@example.com", json!({ "enable_persistent_chat": false })).await.expect(200);
    w.admin.delete("/api/v1/policies/user:dave@example.com").await.expect(204);
    w.admin.put("/api/v1/configuration/pool:default", json!({ "default_chat_history": 20 })).await.expect(200);
    w.admin.delete("/api/v1/configuration/pool:default").await.expect(204);
    w.admin.delete("/api/v1/groups/desk").await.expect(204);
    w.admin.delete("/api/v1/users/dave@example.com").await.expect(204);
    // Categories, add-ins, rooms.
    let cat = w.category("Desk").await;
    w.admin.patch(&format!("/api/v1/categories/{cat}"), json!({ "description": "trading" })).await.expect(200);
    w.admin.post("/api/v1/addins", json!({ "name": "ticker", "url": "https://ticker.example.com" })).await.expect(201);
    w.admin.patch("/api/v1/addins/ticker", json!({ "url": "https://t2.example.com" })).await.expect(200);
    let room = w.room(&cat, "Rates", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let path = format!("/api/v1/rooms/{room}");
    w.admin.patch(&path, json!({ "description": "rates desk" })).await.expect(200);
    w.admin.patch(&path, json!({ "members": { "add": ["carol@example.com"] } })).await.expect(200);
    w.admin.patch(&path, json!({ "disabled": true })).await.expect(200);
    w.admin.patch(&path, json!({ "disabled": false })).await.expect(200);
    // Messages: three posts (one retried), history read, join and leave, moderation.
    let messages = format!("{path}/messages");
    let first = alice.post(&messages, json!({ "text": "buy 10y", "client_id": "p1" })).await.expect(201);
    alice.post(&messages, json!({ "text": "buy 10y", "client_id": "p1" })).await.expect(200);
    alice.post(&messages, json!({ "text": "sell 2y", "client_id": "p2" })).await.expect(201);
    alice.post(&messages, json!({ "text": "rude words", "client_id": "p3" })).await.expect(201);
    alice.get(&messages).await.expect(200);
    let bob = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    ws.send(json!({ "op": "part", "room": room })).await;
    ws.next_of("parted").await;
    w.admin
        .post(&format!("{path}/messages/remove"), json!({ "keywords": "rude", "replace_with": "" }))
        .await
        .expect(200);
    w.admin.post(&format!("{path}/messages/remove"), json!({ "keywords": "sell" })).await.expect(200);
    w.admin.post(&format!("{path}/clear"), json!({ "end_date": "2000-01-01T00:00:00Z" })).await.expect(200);
    w.admin.delete(&path).await.expect(204);
    w.admin.delete("/api/v1/addins/ticker").await.expect(204);
    w.admin.delete(&format!("/api/v1/categories/{cat}")).await.expect(204);

    let expected: BTreeMap<String, usize> = [
        ("COMPLIANCE_CONFIG_CHANGED", 1),
        ("SIGN_IN_FAILED", 1),
        ("SIGN_IN", 2),
        ("USER_CREATED", 1),
        ("GROUP_CREATED", 1),
        ("GROUP_CHANGED", 1),
        ("ROLE_GRANTED", 1),
        ("ROLE_REVOKED", 1),
        ("POLICY_CHANGED", 1),
        ("POLICY_REMOVED", 1),
        ("CONFIG_CHANGED", 1),
        ("CONFIG_REMOVED", 1),
        ("GROUP_DELETED", 1),
        ("USER_DELETED", 1),
        ("CATEGORY_CREATED", 1),
        ("CATEGORY_CHANGED", 1),
        ("ADDIN_CREATED", 1),
        ("ADDIN_CHANGED", 1),
        ("ROOM_CREATED", 1),
        ("ROOM_CHANGED", 1),
        ("ROOM_ROLES_CHANGED", 1),
        ("ROOM_DISABLED", 1),
        ("ROOM_ENABLED", 1),
        ("CHAT", 3),
        ("BACKCHAT", 2),
        ("JOIN", 1),
        ("PART", 1),
        ("MESSAGE_REPLACED", 1),
        ("MESSAGE_REMOVED", 1),
        ("ROOM_CLEARED", 1),
        ("ROOM_DELETED", 1),
        ("ADDIN_DELETED", 1),
        ("CATEGORY_DELETED", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    let total: usize = expected.values().sum();
    let events = settled(&w.admin, |_| true, total).await;
    assert_eq!(kinds(&events), expected, "every event once");

    // Who, what, where, and the before/after of changes.
    let chat: Vec<&Value> = events.iter().filter(|e| e["type"] == "CHAT").collect();
    assert_eq!(chat[0]["user"], "alice@example.com");
    assert_eq!(chat[0]["room"], room.as_str());
    assert_eq!(chat[0]["content"], "buy 10y");
    assert_eq!(chat[0]["details"]["message_id"], first["id"]);
    assert_eq!(chat[0]["pool"], "default");
    let changed = events.iter().find(|e| e["type"] == "ROOM_CHANGED").unwrap();
    assert_eq!(changed["details"]["before"]["description"], "");
    assert_eq!(changed["details"]["after"]["description"], "rates desk");
    let replaced = events.iter().find(|e| e["type"] == "MESSAGE_REPLACED").unwrap();
    assert_eq!(replaced["details"]["messages"][0]["text"], "rude words", "the original text is kept");
    let failed = events.iter().find(|e| e["type"] == "SIGN_IN_FAILED").unwrap();
    assert_eq!(failed["user"], "alice@example.com");
    let backchat = events.iter().find(|e| e["type"] == "BACKCHAT").unwrap();
    assert_eq!(backchat["details"]["messages"].as_array().unwrap().len(), 3);
    // Filters.
    let only_chat = w.admin.get("/api/v1/compliance/events?type=CHAT").await.expect(200);
    assert_eq!(only_chat["items"].as_array().unwrap().len(), 3);
    let bobs = w.admin.get("/api/v1/compliance/events?user=bob@example.com").await.expect(200);
    assert_eq!(
        kinds(bobs["items"].as_array().unwrap()),
        [("BACKCHAT".to_owned(), 1), ("JOIN".to_owned(), 1), ("PART".to_owned(), 1), ("SIGN_IN".to_owned(), 1)]
            .into_iter()
            .collect()
    );
    w.admin.get("/api/v1/compliance/events?limit=0").await.problem(400, "validation_failed", Some("limit"));
    alice.get("/api/v1/compliance/events").await.problem(403, "forbidden", None);

    let report = w.admin.post("/api/v1/compliance/verify", json!({})).await.expect(200);
    assert_eq!(
        report,
        json!({ "ok": true, "events_checked": total, "first_broken": null, "sealed": false, "problems": [],
                "witnesses_checked": report["witnesses_checked"] })
    );
    assert!(report["witnesses_checked"].as_u64().unwrap() >= 1, "the server's own witness at least: {report}");

    crate::export::every_event_exported_once(&w.server, &w.admin, out.path(), &room).await;
}

#[tokio::test]
async fn every_event_is_archived_once_on_sqlite() {
    every_event_once("").await;
}

#[tokio::test]
async fn every_event_is_archived_once_on_postgresql() {
    let (database, _) = TempDatabase::create().await;
    every_event_once(&format!("[database]\nurl = \"{}\"\n", database.url())).await;
    drop(database);
}

#[tokio::test]
async fn bad_compliance_configuration_changes_nothing() {
    let w = World::new().await;
    enable(&w.admin).await;
    let path = "/api/v1/compliance/configuration/global";
    let good = w.admin.get(path).await.expect(200);
    let mut bad = good.clone();
    bad["run_interval_secs"] = json!(59);
    w.admin.put(path, bad.clone()).await.problem(400, "validation_failed", Some("run_interval_secs"));
    bad["run_interval_secs"] = json!(30 * 24 * 3600 + 1);
    w.admin.put(path, bad).await.problem(400, "validation_failed", Some("run_interval_secs"));
    let mut bad = good.clone();
    bad["retention_days"] = json!(36_501);
    w.admin.put(path, bad).await.problem(400, "validation_failed", Some("retention_days"));
    let mut bad = good.clone();
    bad["adapter"] = json!("pdf");
    w.admin.put(path, bad).await.problem(400, "validation_failed", Some("adapter"));
    let mut bad = good.clone();
    bad["output_dir"] = json!("/proc/pchat-cannot-write-here");
    w.admin.put(path, bad).await.problem(400, "validation_failed", Some("output_dir"));
    let mut bad = good.clone();
    bad["colour"] = json!("red");
    w.admin.put(path, bad).await.problem(400, "validation_failed", Some("colour"));
    w.admin.put("/api/v1/compliance/configuration/site:x", good.clone()).await.problem(
        400,
        "validation_failed",
        Some("scope"),
    );
    assert_eq!(w.admin.get(path).await.expect(200), good, "the previous configuration stands");
    // The CLI shows and changes it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["--json", "compliance", "config", "set", "--run-interval-secs", "120"])
        .env("PCHAT_DATA_DIR", &w.server.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown["run_interval_secs"].as_u64(), shown["enabled"].as_bool()), (Some(120), Some(true)));
}

/// Kill -9 during a burst: every message in the history has exactly one CHAT event and there is none for a
/// message that is not there; the chain verifies.
#[tokio::test]
async fn kill_9_during_a_burst_neither_loses_nor_duplicates_chat_events() {
    let mut w = World::new().await;
    enable(&w.admin).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let url = format!("/api/v1/rooms/{room}/messages");
    let mut writers = vec![];
    for t in 0..6 {
        let (alice, url) = (alice.clone(), url.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = vec![];
            for n in 0..10_000 {
                let client_id = format!("w{t}-{n}");
                match alice.post_raw(&url, json!({ "text": format!("m {client_id}"), "client_id": client_id })).await {
                    Some(201) => acked.push(client_id),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.server.kill9();
    let mut acked = HashSet::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    assert!(acked.len() > 50, "the burst got going ({} acknowledged)", acked.len());
    w.server.restart().await;
    let admin = w.server.admin().await;
    w.admin = admin;
    let history = w.admin.all_messages(&room).await;
    let kept: HashMap<String, String> = history
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["client_id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    for client_id in &acked {
        assert!(kept.values().any(|c| c == client_id), "acknowledged {client_id} is in the history");
    }
    let chats = settled(&w.admin, |e| e["type"] == "CHAT", kept.len()).await;
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for e in &chats {
        *per_message.entry(e["details"]["message_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_message.len(), kept.len(), "one CHAT event per message, none for anything else");
    assert!(per_message.iter().all(|(id, n)| *n == 1 && kept.contains_key(id)));
    let report = w.admin.post("/api/v1/compliance/verify", json!({})).await.expect(200);
    assert_eq!(report["ok"], true, "{report}");
    // And the export holds each of them once.
    let out = tempfile::tempdir().unwrap();
    let mut config = w.admin.get("/api/v1/compliance/configuration/global").await.expect(200);
    config["output_dir"] = json!(out.path().to_str().unwrap());
    w.admin.put("/api/v1/compliance/configuration/global", config).await.expect(200);
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    let mut exported: Vec<String> =
        crate::export::read_export(out.path()).into_iter().filter(|e| e.kind == "CHAT").map(|e| e.content).collect();
    exported.sort();
    let mut texts: Vec<String> = chats.iter().map(|e| e["content"].as_str().unwrap().to_owned()).collect();
    texts.sort();
    assert_eq!(exported, texts, "every acknowledged post exported once");
}

/// Two servers of a pool, both running workers: each event is archived once, and an edited archive row fails
/// verification at that row.
#[tokio::test]
async fn two_workers_archive_each_event_once_and_an_edit_is_caught() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    enable(&w.admin).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let apis = [w.user("alice@example.com").await, other.api(None).signed_in("bob@example.com", PASSWORD).await];
    let mut writers = vec![];
    for (i, api) in apis.iter().enumerate() {
        let (api, room) = (api.clone(), room.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..150 {
                let body = json!({ "text": format!("{i}-{n}"), "client_id": format!("{i}-{n}") });
                api.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let chats = settled(&w.admin, |e| e["type"] == "CHAT", 300).await;
    assert_eq!(chats.len(), 300, "every post archived once");
    let texts: HashSet<&str> = chats.iter().map(|e| e["content"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 300);
    // Both servers archived some of them (each reports its share in /metrics).
    let archived_by = |server: &Server| {
        let server_url = server.url.clone();
        async move {
            let text = reqwest::get(format!("{server_url}/metrics")).await.unwrap().text().await.unwrap();
            text.lines()
                .find(|l| l.starts_with("pchat_compliance_archived_total"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let (one, two) = (archived_by(&w.server).await, archived_by(&other).await);
    assert!(one + two >= 300.0, "{one} + {two}");
    let report = w.admin.post("/api/v1/compliance/verify", json!({})).await.expect(200);
    assert_eq!(report["ok"], true, "{report}");

    // Someone edits one archived message in the database: verify names that row.
    let victim = chats[100]["id"].as_i64().unwrap();
    let (client, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let n = client.execute("UPDATE compliance_archive SET content = 'edited' WHERE id = $1", &[&victim]).await.unwrap();
    assert_eq!(n, 1);
    let report = w.admin.post("/api/v1/compliance/verify", json!({})).await.expect(200);
    assert_eq!((report["ok"].as_bool(), report["first_broken"].as_i64()), (Some(false), Some(victim)), "{report}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["--json", "compliance", "verify"])
        .env("PCHAT_DATA_DIR", &w.server.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "pchat compliance verify fails on a broken chain");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&victim.to_string()));
    drop((other, w));
    drop(database);
}
