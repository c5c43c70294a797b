//! A pool: three servers on one PostgreSQL database. Clients spread over the servers see every message posted
//! through any of them, once, in order; a directory change made through one server reaches the others.

use serde_json::json;

use crate::harness::{PASSWORD, Server, World, Ws};
use pchat_store_postgres::testing::TempDatabase;

#[tokio::test]
async fn three_servers_deliver_every_message_once_in_order() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let second = Server::start_with(&config).await;
    let third = Server::start_with(&config).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "Floor", json!({ "privacy": "open" })).await;

    // Each user signs in to a different server and follows the room live there.
    let servers = [&w.server, &second, &third];
    let users = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let mut apis = vec![];
    let mut sockets = vec![];
    for (server, user) in servers.iter().zip(users) {
        let api = server.api(None).signed_in(user, PASSWORD).await;
        let mut ws = Ws::connect(&server.url, api.token.as_deref().unwrap()).await;
        ws.join(&room, None).await;
        apis.push(api);
        sockets.push(ws);
    }

    // Each posts 100 messages through its own server, all at once.
    let mut writers = vec![];
    for (i, api) in apis.iter().enumerate() {
        let (api, room) = (api.clone(), room.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..100 {
                let body = json!({ "text": format!("from server {i} #{n}"), "client_id": format!("{i}-{n}") });
                api.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for (ws, user) in sockets.iter_mut().zip(users) {
        let mut seqs = vec![];
        while seqs.len() < 300 {
            seqs.push(ws.next_of("message").await["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "{user} saw every message once, in order");
    }

    // A policy switched off through the first server closes the third server's open connection, saying why.
    w.admin
        .put("/api/v1/policies/user:carol@example.com", json!({ "enable_persistent_chat": false }))
        .await
        .expect(200);
    let (_, close) = sockets[2].until_closed().await;
    assert_eq!(close, Some((4403, "chat_disabled_by_policy".to_owned())));
    drop((second, third, w));
    drop(database);
}

#[tokio::test]
async fn room_changes_kicks_moderation_follows_and_invitations_reach_every_server() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    let cat = w
        .admin
        .post(
            "/api/v1/categories",
            json!({ "name": "Inv", "allowed_members": ["domain:example.com"], "invitations": true }),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let closed = w.room(&cat, "Closed", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let open = w.room(&cat, "Open", json!({ "privacy": "open" })).await;
    let watched = w.room(&cat, "Watched", json!({ "privacy": "open" })).await;

    // Bob and Carol are connected to the other server; every change goes through the first.
    let bob = other.api(None).signed_in("bob@example.com", PASSWORD).await;
    let carol = other.api(None).signed_in("carol@example.com", PASSWORD).await;
    let mut b = Ws::connect(&other.url, bob.token.as_deref().unwrap()).await;
    let mut c = Ws::connect(&other.url, carol.token.as_deref().unwrap()).await;
    b.join(&closed, None).await;
    c.join(&open, None).await;

    let alice = w.user("alice@example.com").await;
    let m = alice.post(&format!("/api/v1/rooms/{open}/messages"), json!({ "text": "rude" })).await.expect(201);
    assert_eq!(c.next_of("message").await["message"]["id"], m["id"]);
    w.admin
        .post(&format!("/api/v1/rooms/{open}/messages/remove"), json!({ "keywords": "rude", "replace_with": "[x]" }))
        .await
        .expect(200);
    assert_eq!(c.next_of("message_replaced").await["message_ids"][0], m["id"]);

    w.admin.patch(&format!("/api/v1/rooms/{open}"), json!({ "description": "new words" })).await.expect(200);
    assert_eq!(c.next_of("room_updated").await["room"]["description"], "new words");
    w.admin
        .patch(&format!("/api/v1/rooms/{closed}"), json!({ "members": { "remove": ["bob@example.com"] } }))
        .await
        .expect(200);
    assert_eq!(b.next_of("removed_from_room").await["room"], closed.as_str());
    w.admin.patch(&format!("/api/v1/rooms/{open}"), json!({ "disabled": true })).await.expect(200);
    assert_eq!(c.next_of("room_disabled").await["room"], open.as_str());

    // Following through the first server makes the other server send activity.
    let carol_first = w.user("carol@example.com").await;
    carol_first.put(&format!("/api/v1/me/follows/{watched}"), json!({})).await.expect(204);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    alice.post(&format!("/api/v1/rooms/{watched}/messages"), json!({ "text": "news" })).await.expect(201);
    assert_eq!(c.next_of("activity").await["room"], watched.as_str());

    let invited = w.room(&cat, "Invited", json!({ "members": ["carol@example.com"] })).await;
    assert_eq!(c.next_of("invitation").await["invitation"]["room"]["id"], invited.as_str());
    w.admin.delete(&format!("/api/v1/rooms/{invited}")).await.expect(204);
    drop((other, w));
    drop(database);
}

#[tokio::test]
async fn clients_of_a_killed_server_resume_on_another_without_a_gap() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let mut doomed = Server::start_with(&config).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;

    // Alice writes through the surviving server the whole time; Bob reads through the doomed one.
    let alice = w.user("alice@example.com").await;
    let writer = {
        let (alice, room) = (alice.clone(), room.clone());
        tokio::spawn(async move {
            for n in 0..400 {
                let body = json!({ "text": format!("#{n}"), "client_id": format!("a-{n}") });
                alice.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
            }
        })
    };
    let bob = doomed.api(None).signed_in("bob@example.com", PASSWORD).await;
    let mut ws = Ws::connect(&doomed.url, bob.token.as_deref().unwrap()).await;
    // From the first message on, so that every seq can be accounted for.
    let (_, history) = ws.join(&room, Some(0)).await;
    let mut seen: Vec<i64> = history.iter().map(|m| m["message"]["seq"].as_i64().unwrap()).collect();
    while seen.len() < 50 {
        seen.push(ws.next_of("message").await["message"]["seq"].as_i64().unwrap());
    }
    doomed.kill9();
    // Whatever was already in flight may still arrive; then the stream ends.
    while let Ok(frame) = ws.next_or_close().await {
        if frame["type"] == "message" {
            seen.push(frame["message"]["seq"].as_i64().unwrap());
        }
    }

    // Bob reconnects to the surviving server and resumes from the last seq he saw.
    let bob = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    let last = *seen.last().unwrap();
    ws.send(json!({ "op": "join", "room": room, "after_seq": last })).await;
    assert_eq!(ws.next().await["type"], "joined");
    writer.await.unwrap();
    while seen.len() < 400 {
        seen.push(ws.next_of("message").await["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seen, (1..=400).collect::<Vec<_>>(), "no gap and no duplicate across the failover");
    drop((doomed, w));
    drop(database);
}

#[tokio::test]
async fn active_servers_choose_who_takes_new_connections() {
    let (database, _) = TempDatabase::create().await;
    let config = |name: &str| format!("server_name = \"{name}\"\n[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config("alpha")).await;
    let beta = Server::start_with(&config("beta")).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let bob = beta.api(None).signed_in("bob@example.com", PASSWORD).await;
    let mut existing = Ws::connect(&beta.url, bob.token.as_deref().unwrap()).await;
    existing.join(&room, None).await;

    // The CLI (local to alpha) lists both servers, up and active.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pchat"))
            .args(args)
            .env("PCHAT_DATA_DIR", &w.server.data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let status = cli(&["--json", "pool", "status"]);
    let rows: Vec<(String, String, bool)> = status["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
                s["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("alpha".into(), "up".into(), true), ("beta".into(), "up".into(), true)]);

    // Beta stops taking new connections; its existing client stays and still receives messages.
    cli(&["--json", "pool", "set-active", "--remove", "beta"]);
    let anon = beta.api(None);
    let mut unready = false;
    for _ in 0..50 {
        if anon.get("/readyz").await.status.as_u16() == 503 {
            unready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(unready, "beta never reported itself inactive");
    let url =
        format!("{}/api/v1/stream?token={}", beta.url.replacen("http://", "ws://", 1), bob.token.as_deref().unwrap());
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("an inactive server must refuse new connections, got {:?}", other.map(|_| ())),
    }
    let alice = w.user("alice@example.com").await;
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "still here" })).await.expect(201);
    assert_eq!(existing.next_of("message").await["message"]["text"], "still here");

    // Swap: beta active, alpha not. Unknown names and mixed forms are refused.
    let swapped = cli(&["--json", "pool", "set-active", "--swap"]);
    let active: Vec<bool> =
        swapped["items"].as_array().unwrap().iter().map(|s| s["active"].as_bool().unwrap()).collect();
    assert_eq!(active, [false, true]);
    w.admin.patch("/api/v1/pool/servers/active", json!({ "add": ["gamma"] })).await.problem(
        400,
        "validation_failed",
        Some("servers"),
    );
    w.admin.patch("/api/v1/pool/servers/active", json!({ "add": ["alpha"], "swap": true })).await.problem(
        400,
        "validation_failed",
        Some("servers"),
    );
    alice.get("/api/v1/pool/servers").await.problem(403, "forbidden", None);

    // A server that dies is shown as down once its heartbeats stop.
    let mut beta = beta;
    beta.kill9();
    let mut down = false;
    for _ in 0..100 {
        let servers = w.admin.get("/api/v1/pool/servers").await.expect(200);
        if servers["items"][1]["state"] == "down" {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(down, "a killed server still shows as up");
    drop((beta, w));
    drop(database);
}

/// The roster spans the pool: participants connected through another server are listed and announced, a user on
/// two servers is one participant, and a server that dies takes its participants out of every roster.
#[tokio::test]
async fn the_roster_spans_the_pool_and_a_dead_servers_participants_leave() {
    let (database, _) = TempDatabase::create().await;
    let config = |name: &str| format!("server_name = \"{name}\"\n[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config("one")).await;
    let mut two = Server::start_with(&config("two")).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let mut a = w.ws(&alice).await;
    a.join(&room, None).await;

    // Bob joins through the second server: Alice, on the first, sees him arrive and both are listed.
    let bob = two.api(None).signed_in("bob@example.com", PASSWORD).await;
    let mut b = Ws::connect(&two.url, bob.token.as_deref().unwrap()).await;
    b.join(&room, None).await;
    assert_eq!(a.next_of("participant_joined").await["user"]["address"], "bob@example.com");
    let roster = |api: crate::harness::Api| {
        let room = room.clone();
        async move {
            let r = api.get(&format!("/api/v1/rooms/{room}/participants")).await.expect(200);
            let mut list: Vec<String> = r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["address"].as_str().unwrap().to_owned())
                .collect();
            list.sort();
            list
        }
    };
    assert_eq!(roster(alice.clone()).await, ["alice@example.com", "bob@example.com"]);
    assert_eq!(roster(bob.clone()).await, ["alice@example.com", "bob@example.com"]);

    // Bob also joins through the first server, then leaves it: still present (through the second), no news.
    let bob_one = w.user("bob@example.com").await;
    let mut b1 = w.ws(&bob_one).await;
    b1.join(&room, None).await;
    b1.close().await;
    // Carol joins through the second server and leaves: Alice sees her come and go, and nothing about Bob.
    let carol = two.api(None).signed_in("carol@example.com", PASSWORD).await;
    let mut c = Ws::connect(&two.url, carol.token.as_deref().unwrap()).await;
    c.join(&room, None).await;
    let next = a.next().await;
    assert_eq!(
        (next["type"].as_str(), next["user"]["address"].as_str()),
        (Some("participant_joined"), Some("carol@example.com")),
        "{next}"
    );
    c.close().await;
    let next = a.next().await;
    assert_eq!(
        (next["type"].as_str(), next["user"]["address"].as_str()),
        (Some("participant_left"), Some("carol@example.com")),
        "{next}"
    );
    assert_eq!(roster(alice.clone()).await, ["alice@example.com", "bob@example.com"]);

    // The second server dies with Bob on it: he leaves the room for Alice once its heartbeats stop.
    two.kill9();
    let left = a.next_of("participant_left").await;
    assert_eq!(left["user"]["address"], "bob@example.com");
    assert_eq!(roster(alice.clone()).await, ["alice@example.com"]);
    drop((b, two, w));
    drop(database);
}

/// Two servers racing to create rooms of the same name: each time exactly one wins (201), the other gets 409.
#[tokio::test]
async fn servers_racing_for_a_room_name_one_wins_the_other_gets_409() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    let cat = w.category("C").await;
    let admin_other = other.admin().await;
    for n in 0..20 {
        let body = json!({ "name": format!("Contested {n}"), "category": cat });
        let (first, second) =
            tokio::join!(w.admin.post("/api/v1/rooms", body.clone()), admin_other.post("/api/v1/rooms", body));
        let mut statuses = [first.status.as_u16(), second.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "race {n}: {:?} / {:?}", first.body, second.body);
        let loser = if first.status.as_u16() == 409 { first } else { second };
        loser.problem(409, "name_taken", Some("name"));
    }
    let rooms = w.admin.get("/api/v1/rooms?limit=100").await.expect(200);
    assert_eq!(rooms["items"].as_array().unwrap().len(), 20, "one room per name");
    drop((other, w));
    drop(database);
}
