//! `pchat db convert`: an embedded installation moves into PostgreSQL with everything, verified, and a second
//! conversion into the now non-empty database is refused.

use std::process::Command;

use pchat_store_postgres::testing::TempDatabase;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, World};

#[tokio::test]
async fn an_embedded_installation_moves_into_postgresql_with_everything() {
    // Populate an embedded (SQLite) server through its API.
    let mut w = World::new().await;
    w.admin.post("/api/v1/groups", json!({ "name": "desk" })).await.expect(201);
    w.admin.post("/api/v1/groups", json!({ "name": "floor" })).await.expect(201);
    w.admin.patch("/api/v1/groups/desk", json!({ "members": { "add": ["bob@example.com"] } })).await.expect(200);
    w.admin.patch("/api/v1/groups/floor", json!({ "members": { "add": ["group:desk"] } })).await.expect(200);
    w.admin.put("/api/v1/policies/user:eve@other.org", json!({ "enable_persistent_chat": false })).await.expect(200);
    w.admin.put("/api/v1/configuration/pool:default", json!({ "default_chat_history": 7 })).await.expect(200);
    w.admin.post("/api/v1/addins", json!({ "name": "Tracker", "url": "https://t.example.com" })).await.expect(201);
    let cat = w
        .admin
        .post("/api/v1/categories", json!({ "name": "Inv", "allowed_members": ["domain:example.com"], "invitations": true, "creators": ["group:floor"] }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let room =
        w.room(&cat, "Desk", json!({ "members": ["alice@example.com", "bob@example.com"], "addin": "Tracker" })).await;
    let open = w.room(&cat, "Open", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    for i in 0..30 {
        alice
            .post(
                &format!("/api/v1/rooms/{room}/messages"),
                json!({ "text": format!("m{i}"), "client_id": format!("c{i}") }),
            )
            .await
            .expect(201);
    }
    w.admin.post(&format!("/api/v1/rooms/{room}/messages/remove"), json!({ "keywords": "m29" })).await.expect(200);
    w.admin
        .post(&format!("/api/v1/rooms/{room}/messages/remove"), json!({ "keywords": "m3", "replace_with": "[x]" }))
        .await
        .expect(200);
    let bob = w.user("bob@example.com").await;
    bob.put(&format!("/api/v1/me/follows/{open}"), json!({})).await.expect(204);
    bob.post("/api/v1/me/read", json!({ "room": room, "seq": 12 })).await.expect(204);
    let history = alice.all_messages(&room).await;
    // Search results, to compare with the converted deployment's (the index is rebuilt by the import).
    let searches = ["q=m12", "q=m1%20m2%20m3&match=any", "q=%5Bx%5D", "q=m29"];
    let mut found = vec![];
    for q in searches {
        found.push(alice.get(&format!("/api/v1/search?{q}")).await.expect(200));
    }
    assert_eq!(found[0]["items"].as_array().unwrap().len(), 1);
    assert_eq!(found[1]["items"].as_array().unwrap().len(), 2, "m3 was replaced");
    assert_eq!(found[3]["items"].as_array().unwrap().len(), 0, "m29 was removed");
    let bob_rooms = bob.get("/api/v1/me/rooms").await.expect(200);
    let invitations = bob.get("/api/v1/me/invitations").await.expect(200);
    let rooms = w.admin.get("/api/v1/rooms").await.expect(200);
    let categories = w.admin.get("/api/v1/categories").await.expect(200);
    let sqlite = w.server.data_dir.join("mgc.db");
    assert!(w.server.terminate().success());

    let (database, _) = TempDatabase::create().await;
    let convert = |extra: &[&str]| {
        let from = format!("sqlite:{}", sqlite.display());
        let mut args = vec!["db", "convert", "--from", from.as_str(), "--to"];
        let to = database.url();
        let mut all: Vec<String> = args.drain(..).map(str::to_owned).collect();
        all.push(to);
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        Command::new(env!("CARGO_BIN_EXE_pchat")).args(&all).output().unwrap()
    };
    let out = convert(&["--json"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let count = |kind: &str| {
        report["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == kind).map(|k| k["target"].as_u64().unwrap())
    };
    assert_eq!(count("users"), Some(5));
    assert_eq!(count("messages"), Some(29), "30 posted, one removed");
    assert_eq!(count("groups"), Some(2));
    assert_eq!(count("invitations"), Some(2));

    // A second conversion into the same database is refused and writes nothing.
    let again = convert(&[]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds data"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A server on PostgreSQL serves the same data: old passwords, history, read marks, invitations, counters.
    let pg = Server::start_with(&format!("[database]\nurl = \"{}\"\n", database.url())).await;
    let admin = pg.admin().await;
    assert_eq!(admin.get("/api/v1/rooms").await.expect(200), rooms);
    assert_eq!(admin.get("/api/v1/categories").await.expect(200), categories);
    assert_eq!(admin.get("/api/v1/configuration/pool:default").await.expect(200)["default_chat_history"], 7);
    let alice = pg.api(None).signed_in("alice@example.com", PASSWORD).await;
    let bob = pg.api(None).signed_in("bob@example.com", PASSWORD).await;
    assert_eq!(alice.all_messages(&room).await, history);
    for (q, before) in searches.iter().zip(&found) {
        assert_eq!(&alice.get(&format!("/api/v1/search?{q}")).await.expect(200), before, "search {q}");
    }
    assert_eq!(bob.get("/api/v1/me/rooms").await.expect(200), bob_rooms);
    assert_eq!(bob.get("/api/v1/me/invitations").await.expect(200), invitations);
    let next =
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "on postgres" })).await.expect(201);
    assert_eq!(next["seq"], 31, "the counter carried over past the removed message");
    let retry = alice
        .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "m0", "client_id": "c0" }))
        .await
        .expect(200);
    assert_eq!(retry["seq"], 1, "client ids carried over");
    // Bob, in desk within floor, is still a creator of the category.
    bob.post("/api/v1/rooms", json!({ "name": "Bob's", "category": cat })).await.expect(201);
    drop((pg, w));
    drop(database);
}
