//! Bad input: each gets the problem document of API.md naming the field, and nothing is written.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Server, World};

/// (method, path, body, status, code, field)
type Case = (Method, String, Value, u16, &'static str, Option<&'static str>);

#[tokio::test]
async fn every_bad_input_is_refused_with_its_field_and_writes_nothing() {
    let w = World::new().await;
    let cat = w.category("Cat").await;
    let room = w.room(&cat, "Room", json!({ "privacy": "open" })).await;
    let long = "n".repeat(257);
    let p = Method::POST;
    let cases: Vec<Case> = vec![
        // Names: empty, blank, too long, control characters; on every kind of object.
        (p.clone(), "/api/v1/categories".into(), json!({ "name": "" }), 400, "validation_failed", Some("name")),
        (p.clone(), "/api/v1/categories".into(), json!({ "name": "   " }), 400, "validation_failed", Some("name")),
        (p.clone(), "/api/v1/categories".into(), json!({ "name": long }), 400, "validation_failed", Some("name")),
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "bell\u{7}" }),
            400,
            "validation_failed",
            Some("name"),
        ),
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "D", "description": "d".repeat(257) }),
            400,
            "validation_failed",
            Some("description"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "", "category": cat }),
            400,
            "validation_failed",
            Some("name"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "x\ny", "category": cat }),
            400,
            "validation_failed",
            Some("name"),
        ),
        (p.clone(), "/api/v1/groups".into(), json!({ "name": " " }), 400, "validation_failed", Some("name")),
        (
            p.clone(),
            "/api/v1/addins".into(),
            json!({ "name": "", "url": "https://a.example.com" }),
            400,
            "validation_failed",
            Some("name"),
        ),
        (
            p.clone(),
            "/api/v1/addins".into(),
            json!({ "name": "A", "url": "ftp://a.example.com" }),
            400,
            "validation_failed",
            Some("url"),
        ),
        (
            p.clone(),
            "/api/v1/users".into(),
            json!({ "address": "not-an-address", "display_name": "X", "password": "password-1" }),
            400,
            "validation_failed",
            Some("address"),
        ),
        (
            p.clone(),
            "/api/v1/users".into(),
            json!({ "address": "x@example.com", "display_name": "", "password": "password-1" }),
            400,
            "validation_failed",
            Some("display_name"),
        ),
        (
            p.clone(),
            "/api/v1/users".into(),
            json!({ "address": "x@example.com", "display_name": "X", "password": "short" }),
            400,
            "validation_failed",
            Some("password"),
        ),
        (
            p.clone(),
            "/api/v1/users".into(),
            json!({ "address": "alice@example.com", "display_name": "X", "password": "password-1" }),
            409,
            "name_taken",
            Some("address"),
        ),
        // Wrong types and unknown fields.
        (p.clone(), "/api/v1/categories".into(), json!({ "name": 5 }), 400, "validation_failed", Some("name")),
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "T", "file_upload": "yes" }),
            400,
            "validation_failed",
            Some("file_upload"),
        ),
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "U", "colour": "red" }),
            400,
            "validation_failed",
            Some("colour"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "privacy": "public" }),
            400,
            "validation_failed",
            Some("privacy"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "type": "stadium" }),
            400,
            "validation_failed",
            Some("type"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "privacy": "open", "members": ["bob@example.com"] }),
            400,
            "validation_failed",
            Some("members"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "presenters": ["bob@example.com"] }),
            400,
            "validation_failed",
            Some("presenters"),
        ),
        // Invalid principals, unknown and out-of-scope ones.
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "W", "allowed_members": ["nobody"] }),
            400,
            "validation_failed",
            Some("allowed_members"),
        ),
        (
            p.clone(),
            "/api/v1/categories".into(),
            json!({ "name": "W", "allowed_members": ["group:ghosts"] }),
            400,
            "validation_failed",
            Some("allowed_members"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "members": ["eve@other.org"] }),
            400,
            "principal_out_of_scope",
            Some("members"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "members": ["domain:"] }),
            400,
            "validation_failed",
            Some("members"),
        ),
        // Unknown ids: in the path 404, in the body a validation error on that field.
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": "no-such-category" }),
            400,
            "validation_failed",
            Some("category"),
        ),
        (
            p.clone(),
            "/api/v1/rooms".into(),
            json!({ "name": "V", "category": cat, "addin": "ghost" }),
            400,
            "validation_failed",
            Some("addin"),
        ),
        (Method::GET, "/api/v1/rooms/no-such-room".into(), Value::Null, 404, "not_found", None),
        (Method::PATCH, "/api/v1/categories/no-such-category".into(), json!({ "name": "Z" }), 404, "not_found", None),
        (Method::DELETE, "/api/v1/groups/ghosts".into(), Value::Null, 404, "not_found", None),
        // Out-of-range configuration.
        (
            Method::PUT,
            "/api/v1/configuration/global".into(),
            json!({ "default_chat_history": 0 }),
            400,
            "validation_failed",
            Some("default_chat_history"),
        ),
        (
            Method::PUT,
            "/api/v1/configuration/global".into(),
            json!({ "default_chat_history": 501 }),
            400,
            "validation_failed",
            Some("default_chat_history"),
        ),
        (
            Method::PUT,
            "/api/v1/configuration/global".into(),
            json!({ "max_message_bytes": -1 }),
            400,
            "validation_failed",
            Some("max_message_bytes"),
        ),
        (
            Method::PUT,
            "/api/v1/configuration/global".into(),
            json!({ "participant_update_limit": 0 }),
            400,
            "validation_failed",
            Some("participant_update_limit"),
        ),
        (
            Method::PUT,
            "/api/v1/configuration/global".into(),
            json!({ "room_management_url": "javascript:alert(1)" }),
            400,
            "validation_failed",
            Some("room_management_url"),
        ),
        (Method::PUT, "/api/v1/configuration/tenant:x".into(), json!({}), 400, "validation_failed", Some("scope")),
        (
            Method::PUT,
            "/api/v1/policies/user:ghost@example.com".into(),
            json!({ "enable_persistent_chat": true }),
            400,
            "validation_failed",
            Some("scope"),
        ),
        // Messages.
        (
            p.clone(),
            format!("/api/v1/rooms/{room}/messages"),
            json!({ "text": "" }),
            400,
            "validation_failed",
            Some("text"),
        ),
        (
            p.clone(),
            format!("/api/v1/rooms/{room}/messages"),
            json!({ "text": "x", "alert": "loud" }),
            400,
            "validation_failed",
            Some("alert"),
        ),
        (
            p.clone(),
            format!("/api/v1/rooms/{room}/clear"),
            json!({ "end_date": "yesterday" }),
            400,
            "validation_failed",
            Some("end_date"),
        ),
        (
            p.clone(),
            format!("/api/v1/rooms/{room}/messages/remove"),
            json!({ "keywords": "x", "match": "some" }),
            400,
            "validation_failed",
            Some("match"),
        ),
    ];
    let before = snapshot(&w).await;
    for (method, path, body, status, code, field) in cases {
        let reply = w.admin.call(method.clone(), &path, if body.is_null() { None } else { Some(body.clone()) }).await;
        let context = format!("{method} {path} {body}");
        assert_eq!(reply.status.as_u16(), status, "{context}: {}", reply.body);
        reply.problem(status, code, field);
    }
    assert_eq!(snapshot(&w).await, before, "a refused request wrote nothing");

    // Malformed JSON, wrong content type, oversized bodies and messages.
    let path = "/api/v1/categories";
    w.admin.raw(Method::POST, path, b"{\"name\": ".to_vec(), "application/json").await.problem(
        400,
        "validation_failed",
        Some("body"),
    );
    w.admin.raw(Method::POST, path, b"name=x".to_vec(), "application/x-www-form-urlencoded").await.problem(
        400,
        "validation_failed",
        Some("body"),
    );
    let huge = serde_json::to_vec(&json!({ "name": "x".repeat(2 * 1024 * 1024) })).unwrap();
    w.admin.raw(Method::POST, path, huge, "application/json").await.problem(413, "payload_too_large", None);
    let alice = w.user("alice@example.com").await;
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "y".repeat(32_769) })).await.problem(
        413,
        "payload_too_large",
        Some("text"),
    );
    assert!(alice.all_messages(&room).await.is_empty());
    assert_eq!(snapshot(&w).await, before);
}

/// What the bad requests could have changed.
async fn snapshot(w: &World) -> Vec<Value> {
    let mut out = vec![];
    for path in [
        "/api/v1/categories",
        "/api/v1/rooms",
        "/api/v1/groups",
        "/api/v1/addins",
        "/api/v1/users?limit=500",
        "/api/v1/configuration/global",
        "/api/v1/policies/global",
    ] {
        out.push(w.admin.get(path).await.expect(200));
    }
    out
}

#[tokio::test]
async fn unauthenticated_and_unauthorised_requests() {
    let server = Server::start().await;
    let anon = server.api(None);
    for path in ["/api/v1/me", "/api/v1/rooms", "/api/v1/categories", "/api/v1/stream"] {
        anon.get(path).await.problem(401, "unauthenticated", None);
    }
    server.api(Some("pct_forged")).get("/api/v1/me").await.problem(401, "unauthenticated", None);
    anon.post("/api/v1/sessions", json!({ "user": "admin@example.com", "password": "wrong-password" })).await.problem(
        401,
        "unauthenticated",
        None,
    );
    anon.post("/api/v1/sessions", json!({ "user": "ghost@example.com", "password": "wrong-password" })).await.problem(
        401,
        "unauthenticated",
        None,
    );
    // Signing out ends the token.
    let admin = server.admin().await;
    admin.delete("/api/v1/sessions/current").await.expect(204);
    admin.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    // Operations.
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(anon.get("/readyz").await.status, 200);
    anon.get("/api/v1/nothing-here").await.problem(404, "not_found", None);
}

#[tokio::test]
async fn posting_faster_than_the_limit_is_refused_with_429() {
    let w = World::with_config("[limits]\npost_rate_per_sec = 1.0\npost_burst = 3.0\n").await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    for i in 0..3 {
        alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("{i}") })).await.expect(201);
    }
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "too many" })).await.problem(
        429,
        "rate_limited",
        None,
    );
    assert_eq!(alice.all_messages(&room).await.len(), 3);
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint_of_the_contract() {
    let server = Server::start().await;
    let doc = server.api(None).get("/api/v1/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    // Every path and method of API.md (the stream included).
    let contract = [
        ("post", "/api/v1/sessions"),
        ("delete", "/api/v1/sessions/current"),
        ("get", "/api/v1/me"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users"),
        ("delete", "/api/v1/users/{address}"),
        ("post", "/api/v1/groups"),
        ("patch", "/api/v1/groups/{name}"),
        ("get", "/api/v1/groups/{name}"),
        ("get", "/api/v1/policies/{scope}"),
        ("put", "/api/v1/policies/{scope}"),
        ("delete", "/api/v1/policies/{scope}"),
        ("get", "/api/v1/users/{address}/effective-policy"),
        ("get", "/api/v1/configuration/{scope}"),
        ("put", "/api/v1/configuration/{scope}"),
        ("post", "/api/v1/categories"),
        ("get", "/api/v1/categories"),
        ("get", "/api/v1/categories/{id}"),
        ("patch", "/api/v1/categories/{id}"),
        ("delete", "/api/v1/categories/{id}"),
        ("post", "/api/v1/rooms"),
        ("get", "/api/v1/rooms"),
        ("get", "/api/v1/rooms/{id}"),
        ("patch", "/api/v1/rooms/{id}"),
        ("delete", "/api/v1/rooms/{id}"),
        ("get", "/api/v1/rooms/{id}/participants"),
        ("get", "/api/v1/rooms/{id}/messages"),
        ("post", "/api/v1/rooms/{id}/messages"),
        ("post", "/api/v1/rooms/{id}/clear"),
        ("post", "/api/v1/rooms/{id}/messages/remove"),
        ("get", "/api/v1/me/rooms"),
        ("put", "/api/v1/me/follows/{room}"),
        ("delete", "/api/v1/me/follows/{room}"),
        ("post", "/api/v1/me/read"),
        ("get", "/api/v1/me/invitations"),
        ("get", "/api/v1/stream"),
    ];
    for (method, path) in contract {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    for schema in ["Room", "Message", "Category", "Problem", "ClientFrame", "ServerFrame", "NewRoom", "RoomPatch"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // The fields API.md fixes for a Room.
    let room = &doc["components"]["schemas"]["Room"]["properties"];
    for field in [
        "id",
        "uri",
        "name",
        "description",
        "category",
        "privacy",
        "type",
        "invitations",
        "disabled",
        "addin",
        "members",
        "managers",
        "presenters",
        "created_by",
        "created_at",
    ] {
        assert!(room[field].is_object(), "Room.{field} missing");
    }
}

#[tokio::test]
async fn undecodable_paths_queries_and_other_rejections_are_problem_documents() {
    let w = World::new().await;
    let admin = &w.admin;
    // A path segment that is not UTF-8 once decoded.
    admin.get("/api/v1/rooms/%FF%FE").await.problem(400, "validation_failed", Some("path"));
    admin.get("/api/v1/users/%C3%28").await.problem(400, "validation_failed", Some("path"));
    // A query value that is not UTF-8 once decoded names its parameter.
    admin.get("/api/v1/rooms?query=%FF").await.problem(400, "validation_failed", Some("query"));
    admin.get("/api/v1/users?query=%C3%28&limit=5").await.problem(400, "validation_failed", Some("query"));
    // Directory queries are at most 256 characters.
    let long = "a".repeat(257);
    admin.get(&format!("/api/v1/rooms?query={long}")).await.problem(400, "validation_failed", Some("query"));
    admin.get(&format!("/api/v1/users?query={long}")).await.problem(400, "validation_failed", Some("query"));
    admin.get(&format!("/api/v1/rooms?query={}", &long[1..])).await.expect(200);
    // A plain GET on the stream (no WebSocket upgrade) is refused as a problem document too.
    let stream = admin.get("/api/v1/stream").await;
    assert!(stream.status.is_client_error(), "{}", stream.status);
    assert_eq!(stream.content_type, "application/problem+json", "{}", stream.body);
    // Unknown paths and methods.
    admin.get("/api/v1/nothing-here").await.problem(404, "not_found", None);
    admin.call(Method::PUT, "/api/v1/me", None).await.problem(405, "validation_failed", None);
}
