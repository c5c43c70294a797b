//! The main flows through the real server: categories, rooms of each privacy and type, visibility, posting and
//! history, idempotent posts, policy, roles, administrators' content operations, moves and invitations.

use serde_json::{Value, json};

use crate::harness::{Server, World};

fn names(page: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn full_flow_of_categories_rooms_posting_and_history() {
    let w = World::new().await;
    let cat = w.category("Trading").await;
    let open = w.room(&cat, "Open room", json!({ "privacy": "open" })).await;
    let closed = w.room(&cat, "Closed room", json!({ "members": ["alice@example.com"] })).await;
    let secret = w.room(&cat, "Secret room", json!({ "privacy": "secret", "members": ["alice@example.com"] })).await;
    let stage = w
        .room(
            &cat,
            "Stage",
            json!({ "type": "auditorium", "members": ["bob@example.com"], "presenters": ["alice@example.com"] }),
        )
        .await;
    let alice = w.user("alice@example.com").await;
    let bob = w.user("bob@example.com").await;
    let eve = w.user("eve@other.org").await;

    // The directory honours privacy: bob sees open and closed rooms and the auditorium he belongs to, not the secret one.
    assert_eq!(
        names(&alice.get("/api/v1/rooms").await.expect(200)),
        ["Closed room", "Open room", "Secret room", "Stage"]
    );
    assert_eq!(names(&bob.get("/api/v1/rooms").await.expect(200)), ["Closed room", "Open room", "Stage"]);
    assert!(names(&eve.get("/api/v1/rooms").await.expect(200)).is_empty(), "out of scope sees nothing");
    assert_eq!(
        names(&w.admin.get("/api/v1/rooms?query=room").await.expect(200)),
        ["Closed room", "Open room", "Secret room"]
    );

    // A secret room never leaks: 404 for those who may not see it, for every verb.
    bob.get(&format!("/api/v1/rooms/{secret}")).await.problem(404, "not_found", None);
    bob.get(&format!("/api/v1/rooms/{secret}/messages")).await.problem(404, "not_found", None);
    bob.post(&format!("/api/v1/rooms/{secret}/messages"), json!({ "text": "hi" })).await.problem(
        404,
        "not_found",
        None,
    );
    // Closed: visible but not readable for non-members.
    bob.get(&format!("/api/v1/rooms/{closed}")).await.expect(200);
    bob.get(&format!("/api/v1/rooms/{closed}/messages")).await.problem(403, "forbidden", None);
    eve.get(&format!("/api/v1/rooms/{open}")).await.problem(404, "not_found", None);

    // Posting: anyone in scope in an open room, members in closed/secret, presenters only in an auditorium.
    let m1 = bob.post(&format!("/api/v1/rooms/{open}/messages"), json!({ "text": "hello open" })).await.expect(201);
    assert_eq!(
        (m1["seq"].as_i64(), m1["author"].as_str(), m1["room"].as_str()),
        (Some(1), Some("bob@example.com"), Some(open.as_str()))
    );
    assert!(
        m1["ts"].as_str().unwrap().ends_with('Z') && m1["ts"].as_str().unwrap().len() == 27,
        "RFC 3339 with microseconds: {}",
        m1["ts"]
    );
    alice.post(&format!("/api/v1/rooms/{secret}/messages"), json!({ "text": "psst" })).await.expect(201);
    bob.post(&format!("/api/v1/rooms/{stage}/messages"), json!({ "text": "me too" })).await.problem(
        403,
        "forbidden",
        None,
    );
    let story = alice
        .post(
            &format!("/api/v1/rooms/{stage}/messages"),
            json!({ "text": "long body", "story_title": "Q3 outlook", "alert": true }),
        )
        .await
        .expect(201);
    assert_eq!((story["story_title"].as_str(), story["alert"].as_bool()), (Some("Q3 outlook"), Some(true)));
    let history = bob.get(&format!("/api/v1/rooms/{stage}/messages")).await.expect(200);
    assert_eq!(history["items"][0]["text"], "long body", "members read an auditorium");

    // History: the latest default_chat_history on join, then paging both ways, ascending.
    w.admin.put("/api/v1/configuration/global", json!({ "default_chat_history": 5 })).await.expect(200);
    for i in 2..=12 {
        alice.post(&format!("/api/v1/rooms/{open}/messages"), json!({ "text": format!("m{i}") })).await.expect(201);
    }
    let seqs =
        |v: &Value| v["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&bob.get(&format!("/api/v1/rooms/{open}/messages")).await.expect(200)), [8, 9, 10, 11, 12]);
    assert_eq!(
        seqs(&bob.get(&format!("/api/v1/rooms/{open}/messages?before_seq=8&limit=3")).await.expect(200)),
        [5, 6, 7]
    );
    assert_eq!(seqs(&bob.get(&format!("/api/v1/rooms/{open}/messages?after_seq=10")).await.expect(200)), [11, 12]);

    // Rooms by name, room URIs, and the caller's own list with unread counts.
    let by_name = bob.get("/api/v1/rooms/name:Open%20room").await.expect(200);
    assert_eq!(by_name["id"], open.as_str());
    assert_eq!(by_name["uri"], format!("ma-chan://example.com/{open}"));
    bob.put(&format!("/api/v1/me/follows/{open}"), json!({})).await.expect(204);
    bob.post("/api/v1/me/read", json!({ "room": open, "seq": 10 })).await.expect(204);
    let mine = bob.get("/api/v1/me/rooms").await.expect(200);
    let entry = mine["items"].as_array().unwrap().iter().find(|r| r["room"]["id"] == open.as_str()).unwrap().clone();
    assert_eq!(
        (entry["following"].as_bool(), entry["unread"].as_i64(), entry["last_seq"].as_i64()),
        (Some(true), Some(2), Some(12))
    );
    let listed: Vec<&str> =
        mine["items"].as_array().unwrap().iter().map(|r| r["room"]["name"].as_str().unwrap()).collect();
    assert!(listed.contains(&"Stage") && !listed.contains(&"Closed room"), "{listed:?}");
    // Following needs read access.
    bob.put(&format!("/api/v1/me/follows/{closed}"), json!({})).await.problem(403, "forbidden", None);

    // Category deletion only when empty.
    w.admin.delete(&format!("/api/v1/categories/{cat}")).await.problem(409, "category_not_empty", None);
}

#[tokio::test]
async fn idempotent_post_returns_the_original() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let first = alice
        .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "once", "client_id": "k-1" }))
        .await
        .expect(201);
    let again = alice
        .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "once", "client_id": "k-1" }))
        .await
        .expect(200);
    assert_eq!(first, again);
    assert_eq!(alice.all_messages(&room).await.len(), 1);
}

#[tokio::test]
async fn policy_gates_every_chat_action() {
    let server = Server::start().await;
    let admin = server.admin().await;
    admin
        .post(
            "/api/v1/users",
            json!({ "address": "u@example.com", "display_name": "U", "password": crate::harness::PASSWORD }),
        )
        .await
        .expect(201);
    let cat =
        admin.post("/api/v1/categories", json!({ "name": "C", "allowed_members": ["*"] })).await.expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let room =
        admin.post("/api/v1/rooms", json!({ "name": "R", "category": cat, "privacy": "open" })).await.expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let u = server.api(None).signed_in("u@example.com", crate::harness::PASSWORD).await;
    // The global default is off.
    assert_eq!(u.get("/api/v1/me").await.expect(200)["chat_enabled"], false);
    u.get("/api/v1/rooms").await.problem(403, "chat_disabled_by_policy", None);
    u.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "x" })).await.problem(
        403,
        "chat_disabled_by_policy",
        None,
    );
    // Most specific scope wins.
    admin.put("/api/v1/policies/site:default", json!({ "enable_persistent_chat": true })).await.expect(200);
    admin.put("/api/v1/policies/user:u@example.com", json!({ "enable_persistent_chat": false })).await.expect(200);
    let eff = admin.get("/api/v1/users/u@example.com/effective-policy").await.expect(200);
    assert_eq!(eff, json!({ "enable_persistent_chat": false, "from_scope": "user:u@example.com" }));
    admin.delete("/api/v1/policies/user:u@example.com").await.expect(204);
    let eff = u.get("/api/v1/users/u@example.com/effective-policy").await.expect(200);
    assert_eq!(eff, json!({ "enable_persistent_chat": true, "from_scope": "site:default" }));
    u.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "x" })).await.expect(201);
    admin.get("/api/v1/policies/pool:default").await.problem(404, "not_found", None);
    // Only user administrators manage policy.
    u.put("/api/v1/policies/global", json!({ "enable_persistent_chat": false })).await.problem(403, "forbidden", None);
    assert_eq!(admin.get("/api/v1/policies/global").await.expect(200)["enable_persistent_chat"], false);
}

#[tokio::test]
async fn roles_groups_and_deny_wins() {
    let w = World::new().await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    w.admin.post("/api/v1/groups", json!({ "name": "desk" })).await.expect(201);
    w.admin.post("/api/v1/groups", json!({ "name": "floor" })).await.expect(201);
    w.admin.patch("/api/v1/groups/desk", json!({ "members": { "add": ["bob@example.com"] } })).await.expect(200);
    w.admin
        .patch("/api/v1/groups/floor", json!({ "members": { "add": ["group:desk", "carol@example.com"] } }))
        .await
        .expect(200);
    w.admin.patch("/api/v1/groups/desk", json!({ "members": { "add": ["group:floor"] } })).await.problem(
        400,
        "validation_failed",
        Some("members"),
    );
    let cat = w
        .admin
        .post(
            "/api/v1/categories",
            json!({ "name": "Walled", "allowed_members": ["group:floor"], "creators": ["group:floor"] }),
        )
        .await
        .expect(201);
    let cat = cat["id"].as_str().unwrap();
    // bob is in scope through nested groups; alice is not.
    let room =
        bob.post("/api/v1/rooms", json!({ "name": "Desk chat", "category": cat, "privacy": "open" })).await.expect(201);
    assert_eq!(room["managers"], json!(["bob@example.com"]), "the creator becomes a manager");
    let room = room["id"].as_str().unwrap().to_owned();
    alice.post("/api/v1/rooms", json!({ "name": "Nope", "category": cat })).await.problem(
        400,
        "validation_failed",
        Some("category"),
    );
    alice.get(&format!("/api/v1/rooms/{room}")).await.problem(404, "not_found", None);
    bob.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "inside" })).await.expect(201);
    // An ethical wall: denying the desk group cuts bob off at once, though he is still allowed through floor.
    w.admin
        .patch(&format!("/api/v1/categories/{cat}"), json!({ "denied_members": { "add": ["group:desk"] } }))
        .await
        .expect(200);
    bob.get(&format!("/api/v1/rooms/{room}")).await.problem(404, "not_found", None);
    // Principals on role lists must be in scope.
    w.admin
        .patch(&format!("/api/v1/rooms/{room}"), json!({ "managers": { "add": ["alice@example.com"] } }))
        .await
        .problem(400, "principal_out_of_scope", Some("managers"));
    // Managers manage, others may not; only admins delete.
    let carol = w.user("carol@example.com").await;
    carol.patch(&format!("/api/v1/rooms/{room}"), json!({ "description": "x" })).await.problem(403, "forbidden", None);
    w.admin
        .patch(&format!("/api/v1/rooms/{room}"), json!({ "managers": { "add": ["carol@example.com"] } }))
        .await
        .expect(200);
    carol.patch(&format!("/api/v1/rooms/{room}"), json!({ "description": "carol's" })).await.expect(200);
    carol.delete(&format!("/api/v1/rooms/{room}")).await.problem(403, "forbidden", None);
    // Admin roles through the API.
    w.admin.post("/api/v1/admins", json!({ "user": "alice@example.com", "role": "user_admin" })).await.expect(201);
    let alice = w.user("alice@example.com").await;
    assert_eq!(alice.get("/api/v1/me").await.expect(200)["roles"], json!(["user_admin"]));
    alice
        .post("/api/v1/users", json!({ "address": "new@example.com", "display_name": "N", "password": "password-1" }))
        .await
        .expect(201);
    alice.post("/api/v1/categories", json!({ "name": "X" })).await.problem(403, "forbidden", None);
    w.admin.delete(&format!("/api/v1/rooms/{room}")).await.expect(204);
    w.admin.get(&format!("/api/v1/rooms/{room}")).await.problem(404, "not_found", None);
}

#[tokio::test]
async fn moving_a_room_drops_out_of_scope_entries() {
    let w = World::new().await;
    let a = w.category("A").await;
    let b = w
        .admin
        .post(
            "/api/v1/categories",
            json!({ "name": "B", "allowed_members": ["alice@example.com", "carol@example.com"] }),
        )
        .await
        .expect(201);
    let b = b["id"].as_str().unwrap().to_owned();
    let room = w
        .room(
            &a,
            "Mover",
            json!({ "members": ["alice@example.com", "bob@example.com"], "managers": ["carol@example.com"] }),
        )
        .await;
    let carol = w.user("carol@example.com").await;
    // A manager who is not a creator of the target category cannot move it.
    carol.patch(&format!("/api/v1/rooms/{room}"), json!({ "category": b })).await.problem(403, "forbidden", None);
    let moved = w.admin.patch(&format!("/api/v1/rooms/{room}"), json!({ "category": b })).await.expect(200);
    assert_eq!(moved["category"], b.as_str());
    assert_eq!(moved["members"], json!(["alice@example.com"]));
    assert_eq!(moved["managers"], json!(["carol@example.com"]));
}

#[tokio::test]
async fn administrators_clear_remove_and_replace_messages() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let (alice, bob) = (w.user("alice@example.com").await, w.user("bob@example.com").await);
    for (who, text) in [(&alice, "buy bonds now"), (&bob, "sell BONDS"), (&alice, "lunch?"), (&bob, "bonds bonds")] {
        who.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": text })).await.expect(201);
    }
    // Authors cannot delete their own messages.
    alice
        .post(
            &format!("/api/v1/rooms/{room}/messages/remove"),
            json!({ "author": "alice@example.com", "match": "all" }),
        )
        .await
        .problem(403, "forbidden", None);
    let replaced = w
        .admin
        .post(
            &format!("/api/v1/rooms/{room}/messages/remove"),
            json!({ "keywords": "bonds", "match": "all", "author": "bob@example.com", "replace_with": "" }),
        )
        .await
        .expect(200);
    assert_eq!(replaced["affected"], 2);
    let msgs = alice.all_messages(&room).await;
    assert_eq!(msgs[1]["text"], "This message was replaced by the Persistent Chat administrator.");
    assert_eq!(msgs[1]["replaced"], true);
    let removed = w
        .admin
        .post(&format!("/api/v1/rooms/{room}/messages/remove"), json!({ "keywords": "buy now", "match": "exact" }))
        .await
        .expect(200);
    assert_eq!(removed["affected"], 0, "exact phrase only");
    let removed = w
        .admin
        .post(
            &format!("/api/v1/rooms/{room}/messages/remove"),
            json!({ "keywords": "BUY", "match": "any", "case_sensitive": false }),
        )
        .await;
    assert_eq!(removed.expect(200)["affected"], 1);
    assert_eq!(alice.all_messages(&room).await.len(), 3);
    let cleared = w
        .admin
        .post(&format!("/api/v1/rooms/{room}/clear"), json!({ "end_date": "2999-01-01T00:00:00Z" }))
        .await
        .expect(200);
    assert_eq!(cleared["removed"], 3);
    assert!(alice.all_messages(&room).await.is_empty());
    let next = alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "after" })).await.expect(201);
    assert_eq!(next["seq"], 5, "seq values are never reused");
}

#[tokio::test]
async fn invitations_follow_category_and_room_settings() {
    let w = World::new().await;
    let cat = w
        .admin
        .post(
            "/api/v1/categories",
            json!({ "name": "Inv", "allowed_members": ["domain:example.com"], "invitations": true }),
        )
        .await
        .expect(201);
    let cat = cat["id"].as_str().unwrap().to_owned();
    w.admin.post("/api/v1/groups", json!({ "name": "team" })).await.expect(201);
    w.admin.patch("/api/v1/groups/team", json!({ "members": { "add": ["carol@example.com"] } })).await.expect(200);
    let r1 = w.room(&cat, "Invited", json!({ "members": ["bob@example.com"] })).await;
    let r2 = w.room(&cat, "Not invited", json!({ "members": ["bob@example.com"], "invitations": "off" })).await;
    let bob = w.user("bob@example.com").await;
    let inv = bob.get("/api/v1/me/invitations").await.expect(200);
    let rooms: Vec<&str> = inv["items"].as_array().unwrap().iter().map(|i| i["room"]["id"].as_str().unwrap()).collect();
    assert_eq!(rooms, [r1.as_str()]);
    let first_id = inv["items"][0]["id"].as_i64().unwrap();
    // Adding a group invites its members; ids increase per user.
    w.admin.patch(&format!("/api/v1/rooms/{r1}"), json!({ "members": { "add": ["group:team"] } })).await.expect(200);
    let carol = w.user("carol@example.com").await;
    assert_eq!(carol.get("/api/v1/me/invitations").await.expect(200)["items"].as_array().unwrap().len(), 1);
    assert!(
        bob.get(&format!("/api/v1/me/invitations?after={first_id}")).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let _ = r2;
}

#[tokio::test]
async fn list_endpoints_page_with_limit_and_cursor() {
    let w = World::new().await;
    for name in ["A", "B", "C"] {
        w.category(name).await;
        w.admin.post("/api/v1/groups", json!({ "name": format!("g{name}") })).await.expect(201);
    }
    for path in ["/api/v1/categories", "/api/v1/groups", "/api/v1/users"] {
        let first = w.admin.get(&format!("{path}?limit=2")).await.expect(200);
        assert_eq!(first["items"].as_array().unwrap().len(), 2, "{path}");
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let rest = w.admin.get(&format!("{path}?limit=500&cursor={cursor}")).await.expect(200);
        assert!(rest["next_cursor"].is_null(), "{path}");
        let all = w.admin.get(&format!("{path}?limit=500")).await.expect(200)["items"].as_array().unwrap().len();
        assert_eq!(2 + rest["items"].as_array().unwrap().len(), all, "{path}: pages cover the list once");
    }
    w.admin.get("/api/v1/categories?limit=0").await.problem(400, "validation_failed", Some("limit"));
    w.admin.get("/api/v1/categories?limit=501").await.problem(400, "validation_failed", Some("limit"));
    w.admin.get("/api/v1/categories?cursor=zz").await.problem(400, "validation_failed", Some("cursor"));
    assert_eq!(names(&w.admin.get("/api/v1/categories?limit=1").await.expect(200)), ["A"]);
}
