//! Nothing leaks a secret room: every endpoint and stream operation that takes a room (by id or by `name:`)
//! answers an outsider exactly as it answers for a room that does not exist. Each case runs against the secret
//! room and against a room that was never created, and the two answers are compared whole (status, code, field
//! and detail, with the reference itself blanked out).

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, World, Ws};

/// One way of touching a room: an HTTP request (method, path, body) or a stream operation, with `{room}` standing
/// for the reference.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Http(&'static str, &'static str, Option<&'static str>),
    Stream(&'static str),
}

const PROBES: &[Probe] = &[
    Probe::Http("GET", "/api/v1/rooms/{room}", None),
    Probe::Http("PATCH", "/api/v1/rooms/{room}", Some(r#"{"description": "mine now"}"#)),
    Probe::Http("DELETE", "/api/v1/rooms/{room}", None),
    Probe::Http("GET", "/api/v1/rooms/{room}/participants", None),
    Probe::Http("GET", "/api/v1/rooms/{room}/messages", None),
    Probe::Http("GET", "/api/v1/rooms/{room}/messages?before_seq=5&limit=10", None),
    Probe::Http("POST", "/api/v1/rooms/{room}/messages", Some(r#"{"text": "hello?"}"#)),
    Probe::Http("POST", "/api/v1/rooms/{room}/clear", Some(r#"{"end_date": "2030-01-01T00:00:00Z"}"#)),
    Probe::Http("POST", "/api/v1/rooms/{room}/messages/remove", Some(r#"{"keywords": "x"}"#)),
    Probe::Http("PUT", "/api/v1/me/follows/{room}", Some("{}")),
    Probe::Http("DELETE", "/api/v1/me/follows/{room}", None),
    Probe::Http("POST", "/api/v1/me/read", Some(r#"{"room": "{room}", "seq": 1}"#)),
    Probe::Http("GET", "/api/v1/search?q=classified&room={room}", None),
    Probe::Stream(r#"{"op": "join", "room": "{room}"}"#),
    Probe::Stream(r#"{"op": "join", "room": "{room}", "after_seq": 0}"#),
    Probe::Stream(r#"{"op": "part", "room": "{room}"}"#),
    Probe::Stream(r#"{"op": "post", "room": "{room}", "text": "hello?", "client_id": "c1"}"#),
];

/// What the outsider observes, with the reference blanked out.
async fn observe(w: &World, outsider: &Api, probe: Probe, reference: &str) -> Value {
    let blank = |v: &Value| -> Value { serde_json::from_str(&v.to_string().replace(reference, "{room}")).unwrap() };
    match probe {
        Probe::Http(method, path, body) => {
            let encoded = reference.replace(' ', "%20");
            let path = path.replace("{room}", &encoded);
            let body = body.map(|b| serde_json::from_str::<Value>(&b.replace("{room}", reference)).unwrap());
            let reply = outsider.call(Method::from_bytes(method.as_bytes()).unwrap(), &path, body).await;
            json!({ "status": reply.status.as_u16(), "content_type": reply.content_type, "body": blank(&reply.body) })
        }
        Probe::Stream(op) => {
            let mut ws = w.ws(outsider).await;
            ws.send(serde_json::from_str(&op.replace("{room}", reference)).unwrap()).await;
            let answer = ws.next().await;
            ws.close().await;
            blank(&answer)
        }
    }
}

#[tokio::test]
async fn every_room_endpoint_answers_an_outsider_as_for_a_room_that_does_not_exist() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let secret = w.room(&cat, "Skunkworks", json!({ "privacy": "secret", "members": ["alice@example.com"] })).await;
    let alice = w.user("alice@example.com").await;
    alice.post(&format!("/api/v1/rooms/{secret}/messages"), json!({ "text": "classified" })).await.expect(201);
    // Bob is in the category's scope, but not in the room.
    let bob = w.user("bob@example.com").await;
    let missing = "00000000-0000-4000-8000-000000000000";
    let pairs = [(secret.as_str(), missing), ("name:Skunkworks", "name:Nothing Here")];
    for probe in PROBES {
        for (existing, absent) in pairs {
            let seen = observe(&w, &bob, *probe, existing).await;
            let unseen = observe(&w, &bob, *probe, absent).await;
            assert_eq!(seen, unseen, "{probe:?} tells an outsider that {existing} exists");
        }
    }
    // And the probes changed nothing: the room is as it was.
    let room = alice.get(&format!("/api/v1/rooms/{secret}")).await.expect(200);
    assert_eq!(room["description"], "");
    assert_eq!(alice.all_messages(&secret).await.len(), 1);
    // The directory and the invitations list do not show it either.
    let listed = bob.get("/api/v1/rooms?query=Skunk").await.expect(200);
    assert_eq!(listed["items"], json!([]));
    assert_eq!(bob.get("/api/v1/me/invitations").await.expect(200)["items"], json!([]));
}

#[tokio::test]
async fn parting_tells_only_about_rooms_the_connection_joined() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let open = w.room(&cat, "Open", json!({ "privacy": "open" })).await;
    let bob = w.user("bob@example.com").await;
    let mut ws: Ws = w.ws(&bob).await;
    ws.join(&open, None).await;
    ws.send(json!({ "op": "part", "room": "name:Open" })).await;
    let parted = ws.next_of("parted").await;
    assert_eq!(parted["room"], open.as_str());
    ws.send(json!({ "op": "part", "room": open })).await;
    let again = ws.next().await;
    assert_eq!((again["type"].as_str(), again["code"].as_str()), (Some("error"), Some("not_found")));
}

#[tokio::test]
async fn group_membership_is_for_administrators_and_user_administrators() {
    let w = World::new().await;
    w.admin.post("/api/v1/groups", json!({ "name": "walled" })).await.expect(201);
    w.admin.patch("/api/v1/groups/walled", json!({ "members": { "add": ["bob@example.com"] } })).await.expect(200);
    let carol = w.user("carol@example.com").await;
    carol.get("/api/v1/groups").await.problem(403, "forbidden", None);
    carol.get("/api/v1/groups/walled").await.problem(403, "forbidden", None);
    carol.get("/api/v1/groups/no-such-group").await.problem(403, "forbidden", None);
    // A user administrator (without the admin role) may read them.
    w.admin.post("/api/v1/admins", json!({ "user": "carol@example.com", "role": "user_admin" })).await.expect(201);
    assert_eq!(carol.get("/api/v1/groups/walled").await.expect(200)["members"], json!(["bob@example.com"]));
    assert_eq!(carol.get("/api/v1/groups").await.expect(200)["items"][0]["name"], "walled");
}
