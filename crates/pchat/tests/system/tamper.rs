//! Tamper evidence that deserves the name: someone with write access to the archive database deletes the newest
//! events, or rebuilds the whole chain after editing it. `verify` catches both through the witnesses kept outside
//! the archive (this server's witness file, the export's `*.chain.json`) and, with a chain key, through the seals.

use std::os::unix::fs::PermissionsExt;

use pchat_store::NewEvent;
use pchat_store::compliance::event_hash;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::compliance::{enable_into, settled};
use crate::harness::{Api, World};

/// A server whose archive is sealed with a key file (or not), with compliance on and exporting into `out`.
async fn world(sealed: bool, out: &std::path::Path, keys: &tempfile::TempDir) -> World {
    let config = if sealed {
        let key = keys.path().join("chain.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!("[compliance]\nchain_key_file = \"{}\"\n", key.display())
    } else {
        String::new()
    };
    let w = World::with_config(&config).await;
    enable_into(&w.admin, out.to_str().unwrap()).await;
    w
}

async fn post_many(w: &World, room: &str, from: usize, to: usize) {
    let alice = w.user("alice@example.com").await;
    for n in from..to {
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("m{n}") })).await.expect(201);
    }
}

async fn verify(admin: &Api) -> Value {
    admin.post("/api/v1/compliance/verify", json!({})).await.expect(200)
}

fn problems(report: &Value) -> String {
    report["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

fn archive_db(w: &World) -> Connection {
    let conn = Connection::open(w.server.data_dir.join("mgccomp.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    conn
}

/// What an attacker with write access but without the key does: recompute every remaining event's hash as plain
/// SHA-256 over the (possibly edited) rows, and the chain head with them.
fn rebuild_without_key(conn: &Connection) {
    let rows: Vec<(i64, String, i64, NewEvent)> = conn
        .prepare("SELECT id, pool, outbox_id, kind, ts, room_id, actor, content, details FROM archive ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                NewEvent {
                    kind: r.get(3)?,
                    ts: r.get(4)?,
                    room_id: r.get(5)?,
                    actor: r.get(6)?,
                    content: r.get(7)?,
                    details: r.get(8)?,
                },
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = String::new();
    for (id, pool, outbox_id, event) in rows {
        let hash = event_hash(&pool, outbox_id, &event, &prev, None);
        conn.execute("UPDATE archive SET prev_hash = ?2, hash = ?3 WHERE id = ?1", rusqlite::params![id, prev, hash])
            .unwrap();
        prev = hash;
    }
    conn.execute("UPDATE chain_head SET last_hash = ?1", [&prev]).unwrap();
}

/// The archive ids of the archived CHAT events, oldest first.
async fn chat_ids(admin: &Api, count: usize) -> Vec<i64> {
    settled(admin, |e| e["type"] == "CHAT", count).await.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn a_sealed_chain_catches_deleting_the_newest_events_and_rebuilding_the_chain() {
    let (out, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let w = world(true, out.path(), &keys).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    post_many(&w, &room, 0, 10).await;
    chat_ids(&w.admin, 10).await;
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    let files: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(files.iter().any(|f| f.ends_with(".chain.json")), "the export carries a witness: {files:?}");
    post_many(&w, &room, 10, 15).await;
    let ids = chat_ids(&w.admin, 15).await;
    let events = crate::compliance::archived(&w.admin).await;
    assert!(events.iter().all(|e| e["hash"].as_str().unwrap().starts_with("k1:")), "every event is sealed");
    assert!(events.iter().any(|e| e["type"] == "COMPLIANCE_CHAIN_SEALED"));

    let report = verify(&w.admin).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sealed"], true);
    assert!(report["witnesses_checked"].as_u64().unwrap() >= 2, "{report}");

    // The newest three messages are deleted, and the chain head moved back: the chain itself still verifies...
    let db = archive_db(&w);
    let last_kept = ids[11];
    db.execute("DELETE FROM archive WHERE id > ?1", [last_kept]).unwrap();
    let kept_hash: String = db.query_row("SELECT hash FROM archive WHERE id = ?1", [last_kept], |r| r.get(0)).unwrap();
    db.execute("UPDATE chain_head SET last_hash = ?1", [&kept_hash]).unwrap();
    let report = verify(&w.admin).await;
    assert_eq!(report["first_broken"], Value::Null, "the remaining chain links up: {report}");
    // ...but this server's witness names an event that is gone.
    assert_eq!(report["ok"], false, "{report}");
    assert!(problems(&report).contains("missing from the archive"), "{report}");

    // Rebuilding the whole chain without the key (after editing a message) is caught too: the newest event is
    // no longer sealed, and the export's witness no longer matches.
    db.execute("UPDATE archive SET content = 'rewritten' WHERE id = ?1", [ids[3]]).unwrap();
    rebuild_without_key(&db);
    let report = verify(&w.admin).await;
    assert_eq!(report["ok"], false, "{report}");
    let text = problems(&report);
    assert!(text.contains("not sealed"), "{text}");
    assert!(text.contains("another hash in the archive"), "{text}");
    // The CLI says so too, and fails.
    let out = w.server.cli(&["--json", "compliance", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("another hash in the archive"));
}

#[tokio::test]
async fn without_a_key_the_witnesses_still_catch_a_rebuilt_chain_and_an_export_copy_can_be_checked() {
    let (out, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let w = world(false, out.path(), &keys).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    post_many(&w, &room, 0, 8).await;
    let ids = chat_ids(&w.admin, 8).await;
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    // An auditor keeps a copy of the export elsewhere; the operator's output directory is later emptied.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let report = verify(&w.admin).await;
    assert_eq!((report["ok"].as_bool(), report["sealed"].as_bool()), (Some(true), Some(false)), "{report}");

    // A message in the middle is deleted and the chain rebuilt: plain SHA-256 verifies link by link...
    let db = archive_db(&w);
    db.execute("DELETE FROM archive WHERE id = ?1", [ids[4]]).unwrap();
    rebuild_without_key(&db);
    for entry in std::fs::read_dir(out.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let report = verify(&w.admin).await;
    assert_eq!(report["first_broken"], Value::Null, "{report}");
    // ...but the witness file's head no longer matches the archive.
    assert_eq!(report["ok"], false, "{report}");
    assert!(problems(&report).contains("another hash in the archive"), "{report}");
    // And the auditor's copy of the export says the same, through the CLI.
    let output = w.server.cli(&["--json", "compliance", "verify", "--witness-dir", copy.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(problems(&report).contains("the request"), "{report}");
}
