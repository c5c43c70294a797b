//! The live stream: join with history, resume without gaps, ordering, disable/kick, slow consumers, roster,
//! activity for followed rooms, invitations.

use serde_json::json;

use crate::harness::World;

#[tokio::test]
async fn reconnect_with_after_seq_receives_exactly_what_was_missed() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    for i in 0..5 {
        alice
            .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("before {i}") }))
            .await
            .expect(201);
    }
    let mut ws = w.ws(&bob).await;
    let (joined, history) = ws.join(&room, None).await;
    assert_eq!(joined["last_seq"], 5);
    let last_seen = history.last().unwrap()["message"]["seq"].as_i64().unwrap();
    assert_eq!(last_seen, 5);
    ws.close().await;

    // 1,000 messages posted while bob is away, from four writers at once.
    let mut writers = vec![];
    for wi in 0..4 {
        let alice = alice.clone();
        let room = room.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..250 {
                alice
                    .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("w{wi} #{i}") }))
                    .await
                    .expect(201);
            }
        }));
    }
    for t in writers {
        t.await.unwrap();
    }

    let mut ws = w.ws(&bob).await;
    let (joined, missed) = ws.join(&room, Some(last_seen)).await;
    assert_eq!(joined["last_seq"], 1005);
    let seqs: Vec<i64> = missed.iter().map(|m| m["message"]["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (6..=1005).collect::<Vec<_>>(), "exactly the missed messages, in order, once");
    // Then live traffic continues on the same connection.
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "live" })).await.expect(201);
    let live = ws.next_of("message").await;
    assert_eq!((live["message"]["seq"].as_i64(), live["message"]["text"].as_str()), (Some(1006), Some("live")));
}

/// A client that asks for messages after a `seq` the room has not reached (a stale cache, a room recreated under the
/// same name) is served from the room's last `seq`: it receives every message posted from then on.
#[tokio::test]
async fn a_join_after_a_seq_beyond_the_room_still_receives_live_messages() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    for i in 0..3 {
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("old {i}") })).await.expect(201);
    }
    let mut ws = w.ws(&bob).await;
    let (joined, history) = ws.join(&room, Some(1_000)).await;
    assert_eq!(joined["last_seq"], 3);
    assert!(history.is_empty(), "{history:?}");
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "new" })).await.expect(201);
    let live = ws.next_of("message").await;
    assert_eq!((live["message"]["seq"].as_i64(), live["message"]["text"].as_str()), (Some(4), Some("new")));
}

#[tokio::test]
async fn live_posts_are_acknowledged_and_delivered_in_order() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut a = w.ws(&alice).await;
    let mut b = w.ws(&bob).await;
    a.join(&room, None).await;
    b.join(&room, None).await;
    let joined = a.next_of("participant_joined").await;
    assert_eq!(joined["user"]["address"], "bob@example.com");
    for i in 0..50 {
        a.send(json!({ "op": "post", "room": room, "text": format!("n{i}"), "client_id": format!("c{i}") })).await;
    }
    let mut acks = 0;
    while acks < 50 {
        let f = a.next().await;
        if f["type"] == "ack" {
            assert_eq!(f["client_id"], format!("c{acks}"));
            acks += 1;
        }
    }
    let mut seen = vec![];
    while seen.len() < 50 {
        let f = b.next_of("message").await;
        seen.push(f["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    // Errors name the operation.
    a.send(json!({ "op": "post", "room": "no-such-room", "text": "x", "client_id": "z" })).await;
    let err = a.next_of("error").await;
    assert_eq!((err["code"].as_str(), err["op"].as_str()), (Some("not_found"), Some("post")));
    a.send(json!({ "op": "fly" })).await;
    assert_eq!(a.next_of("error").await["code"], "validation_failed");
    a.send(json!({ "op": "ping" })).await;
    a.next_of("pong").await;
    b.close().await;
    let left = a.next_of("participant_left").await;
    assert_eq!(left["user"]["address"], "bob@example.com");
}

#[tokio::test]
async fn disabling_a_room_disconnects_its_participants() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let bob = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    w.admin.patch(&format!("/api/v1/rooms/{room}"), json!({ "disabled": true })).await.expect(200);
    let f = ws.next_of("room_disabled").await;
    assert_eq!(f["room"], room.as_str());
    // Unsubscribed: a post through HTTP is refused and nothing more arrives for that room.
    bob.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "x" })).await.problem(404, "not_found", None);
    ws.send(json!({ "op": "join", "room": room })).await;
    assert_eq!(ws.next_of("error").await["code"], "not_found");
    assert!(
        bob.get("/api/v1/rooms").await.expect(200)["items"].as_array().unwrap().is_empty(),
        "hidden from the directory"
    );
    // History and settings are kept for re-enabling.
    w.admin.patch(&format!("/api/v1/rooms/{room}"), json!({ "disabled": false })).await.expect(200);
    ws.join(&room, None).await;
}

#[tokio::test]
async fn removing_a_member_removes_them_from_the_room() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut a = w.ws(&alice).await;
    let mut b = w.ws(&bob).await;
    a.join(&room, None).await;
    b.join(&room, None).await;
    w.admin
        .patch(&format!("/api/v1/rooms/{room}"), json!({ "members": { "remove": ["bob@example.com"] } }))
        .await
        .expect(200);
    assert_eq!(b.next_of("removed_from_room").await["room"], room.as_str());
    assert_eq!(a.next_of("room_updated").await["room"]["members"], json!(["alice@example.com"]));
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "bob cannot see this" })).await.expect(201);
    a.next_of("message").await;
    b.send(json!({ "op": "ping" })).await;
    let next = b.next().await;
    assert_eq!(next["type"], "pong", "no message reached the removed member: {next}");
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_with_resync_and_never_slows_the_room() {
    let w =
        World::with_config("[limits]\npost_rate_per_sec = 100000.0\npost_burst = 100000.0\nconnection_queue = 16\n")
            .await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob, carol) =
        (w.user("alice@example.com").await, w.user("bob@example.com").await, w.user("carol@example.com").await);
    let mut slow = w.ws(&bob).await;
    slow.join(&room, None).await;
    let mut fast = w.ws(&carol).await;
    fast.join(&room, None).await;
    let fast_reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 1000 {
            if fast.next().await["type"] == "message" {
                seen += 1;
            }
        }
        seen
    });
    // Big messages fill the slow reader's socket buffers, then its queue of 16.
    let body = "x".repeat(30_000);
    for _ in 0..1000 {
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": body })).await.expect(201);
    }
    assert_eq!(fast_reader.await.unwrap(), 1000, "the fast reader got everything");
    let mut last = 0;
    let resync = loop {
        let f = slow.next().await;
        match f["type"].as_str() {
            Some("message") => last = f["message"]["seq"].as_i64().unwrap(),
            Some("resync") => break f,
            _ => {}
        }
    };
    assert_eq!((resync["room"].as_str(), resync["reason"].as_str()), (Some(room.as_str()), Some("slow_consumer")));
    assert!(last < 1000, "the slow reader was dropped before the end (last {last})");
    let (_, rest) = slow.join(&room, Some(last)).await;
    let seqs: Vec<i64> = rest.iter().map(|m| m["message"]["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, ((last + 1)..=1000).collect::<Vec<_>>(), "it resumes from history without gaps");
}

#[tokio::test]
async fn roster_is_suppressed_above_the_participant_update_limit() {
    let w = World::new().await;
    w.admin.put("/api/v1/configuration/global", json!({ "participant_update_limit": 2 })).await.expect(200);
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob, carol) =
        (w.user("alice@example.com").await, w.user("bob@example.com").await, w.user("carol@example.com").await);
    let mut a = w.ws(&alice).await;
    a.join(&room, None).await;
    let mut b = w.ws(&bob).await;
    b.join(&room, None).await;
    a.next_of("participant_joined").await;
    let roster = alice.get(&format!("/api/v1/rooms/{room}/participants")).await.expect(200);
    assert_eq!(roster["suppressed"], false);
    assert_eq!(roster["participants"].as_array().unwrap().len(), 2);
    let mut c = w.ws(&carol).await;
    c.join(&room, None).await;
    let roster = alice.get(&format!("/api/v1/rooms/{room}/participants")).await.expect(200);
    assert_eq!(roster, json!({ "participants": [], "suppressed": true }));
    // Carol's arrival above the limit is not announced: the next frame alice gets is the message.
    bob.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "hi" })).await.expect(201);
    assert_eq!(a.next().await["type"], "message");
    // Below 80 % of 2 (one participant) updates resume.
    c.close().await;
    b.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let roster = alice.get(&format!("/api/v1/rooms/{room}/participants")).await.expect(200);
    assert_eq!(roster["suppressed"], false, "{roster}");
}

#[tokio::test]
async fn followers_get_activity_and_members_get_invitations_live() {
    let w = World::new().await;
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
    let room = w.room(&cat, "Followed", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    bob.put(&format!("/api/v1/me/follows/{room}"), json!({})).await.expect(204);
    let mut b = w.ws(&bob).await;
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "news" })).await.expect(201);
    let activity = b.next_of("activity").await;
    assert_eq!((activity["room"].as_str(), activity["last_seq"].as_i64()), (Some(room.as_str()), Some(1)));
    let invited = w.room(&cat, "Invited", json!({ "members": ["bob@example.com"] })).await;
    let inv = b.next_of("invitation").await;
    assert_eq!(inv["invitation"]["room"]["id"], invited.as_str());
}

/// The value of a Prometheus sample line `name value`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_connections_posts_and_deliveries() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut b = w.ws(&bob).await;
    b.join(&room, None).await;
    for i in 0..3 {
        alice
            .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("{i}"), "client_id": "same" }))
            .await;
    }
    b.next_of("message").await;
    let reply = reqwest::get(format!("{}/metrics", w.server.url)).await.unwrap();
    assert!(reply.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = reply.text().await.unwrap();
    assert_eq!(sample(&text, "pchat_posts_total"), 1.0, "an idempotent retry is not a new post");
    assert_eq!(sample(&text, "pchat_connections"), 1.0);
    assert_eq!(sample(&text, "pchat_commit_latency_seconds_count"), 3.0);
    assert_eq!(sample(&text, "pchat_delivery_latency_seconds_count"), 1.0);
    // A closed connection leaves the hub.
    b.close().await;
    let mut connections = 1.0;
    for _ in 0..100 {
        let text = reqwest::get(format!("{}/metrics", w.server.url)).await.unwrap().text().await.unwrap();
        connections = sample(&text, "pchat_connections");
        if connections == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(connections, 0.0);
}

#[tokio::test]
async fn policy_changes_and_user_deletion_reach_open_connections() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let bob = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    // Disabling chat closes the open connection at once, saying why; nothing posted afterwards is accepted.
    w.admin.put("/api/v1/policies/user:bob@example.com", json!({ "enable_persistent_chat": false })).await.expect(200);
    let (_, close) = ws.until_closed().await;
    assert_eq!(close, Some((4403, "chat_disabled_by_policy".to_owned())));
    let refused = bob.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "still here?" })).await;
    refused.problem(403, "chat_disabled_by_policy", None);
    w.admin.delete("/api/v1/policies/user:bob@example.com").await.expect(204);
    let mut ws = w.ws(&bob).await;
    ws.send(json!({ "op": "post", "room": room, "text": "back", "client_id": "p2" })).await;
    ws.next_of("ack").await;
    // Deleting the user closes the connection too.
    w.admin.delete("/api/v1/users/bob@example.com").await.expect(204);
    let (_, close) = ws.until_closed().await;
    assert_eq!(close, Some((4401, "user_deleted".to_owned())));
    let texts: Vec<String> =
        w.admin.all_messages(&room).await.iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["back"]);
}

#[tokio::test]
async fn moderation_and_deletion_are_announced_live() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    let m = alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "rude words" })).await.expect(201);
    ws.next_of("message").await;
    w.admin
        .post(
            &format!("/api/v1/rooms/{room}/messages/remove"),
            json!({ "keywords": "rude", "replace_with": "[moderated]" }),
        )
        .await
        .expect(200);
    let replaced = ws.next_of("message_replaced").await;
    assert_eq!(
        (replaced["message_ids"][0].as_str(), replaced["text"].as_str()),
        (m["id"].as_str(), Some("[moderated]"))
    );
    w.admin
        .post(&format!("/api/v1/rooms/{room}/messages/remove"), json!({ "keywords": "moderated" }))
        .await
        .expect(200);
    assert_eq!(ws.next_of("messages_removed").await["message_ids"][0], m["id"]);
    w.admin
        .post(&format!("/api/v1/rooms/{room}/clear"), json!({ "end_date": "2999-01-01T00:00:00Z" }))
        .await
        .expect(200);
    assert_eq!(ws.next_of("room_cleared").await["end_date"], "2999-01-01T00:00:00.000000Z");
    w.admin.delete(&format!("/api/v1/rooms/{room}")).await.expect(204);
    assert_eq!(ws.next_of("room_deleted").await["room"], room.as_str());
}

#[tokio::test]
async fn oversized_frames_and_too_many_connections_are_refused() {
    let w = World::with_config(
        "[limits]\npost_rate_per_sec = 1000.0\npost_burst = 1000.0\nmax_ws_message_bytes = 2048\nmax_connections = 2\n",
    )
    .await;
    let bob = w.user("bob@example.com").await;
    let mut first = w.ws(&bob).await;
    let _second = w.ws(&bob).await;
    let url = format!(
        "{}/api/v1/stream?token={}",
        w.server.url.replacen("http://", "ws://", 1),
        bob.token.as_deref().unwrap()
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a third connection should be refused with 503, got {:?}", other.map(|_| ())),
    }
    first.send(json!({ "op": "post", "room": "x", "text": "y".repeat(4096), "client_id": "big" })).await;
    assert!(first.next_or_close().await.is_err(), "a message over the frame limit ends the connection");
}

#[tokio::test]
async fn rooms_without_chat_history_deliver_live_but_keep_nothing() {
    let w = World::new().await;
    let cat = w
        .admin
        .post("/api/v1/categories", json!({ "name": "Ephemeral", "allowed_members": ["*"], "chat_history": false }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = w.room(&cat, "Announcements", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    let mut ws = w.ws(&bob).await;
    ws.join(&room, None).await;
    let posted =
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "now you see it" })).await.expect(201);
    assert_eq!(posted["seq"], 1);
    let live = ws.next_of("message").await;
    assert_eq!(live["message"]["text"], "now you see it");
    assert!(alice.all_messages(&room).await.is_empty(), "nothing is kept in history");
}
