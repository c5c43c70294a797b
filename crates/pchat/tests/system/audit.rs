//! The audit trail: administrative actions are recorded (who, when, what, before and after) whether or not
//! compliance capture is on, and administrators read them, paged and filtered, through the API and the CLI.

use serde_json::{Value, json};

use crate::harness::World;

async fn all_audit(w: &World, filter: &str) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/audit?limit=2{filter}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = w.admin.get(&path).await.expect(200);
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn administrative_actions_are_audited_with_compliance_off() {
    let w = World::new().await;
    // Compliance capture is off (the default): the audit trail is kept anyway.
    let cat = w.category("Desk").await;
    let room = w.room(&cat, "Deals", json!({ "members": ["alice@example.com"] })).await;
    w.admin
        .patch(
            &format!("/api/v1/rooms/{room}"),
            json!({ "description": "new", "members": { "add": ["bob@example.com"] } }),
        )
        .await
        .expect(200);
    w.admin.post("/api/v1/admins", json!({ "user": "carol@example.com", "role": "user_admin" })).await.expect(201);
    w.admin.delete("/api/v1/admins/carol@example.com/user_admin").await.expect(204);
    w.admin.put("/api/v1/users/bob@example.com/password", json!({ "password": "a-new-password" })).await.expect(204);
    // Chat actions are not administrative: they are not in the trail.
    let alice = w.user("alice@example.com").await;
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "hello" })).await.expect(201);
    // A refused action leaves no record.
    w.admin.patch(&format!("/api/v1/rooms/{room}"), json!({ "members": { "add": ["eve@other.org"] } })).await.problem(
        400,
        "principal_out_of_scope",
        None,
    );

    let trail = all_audit(&w, "").await;
    let kinds: Vec<&str> = trail.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "USER_CREATED",
        "POLICY_CHANGED",
        "CATEGORY_CREATED",
        "ROOM_CREATED",
        "ROOM_CHANGED",
        "ROLE_GRANTED",
        "ROLE_REVOKED",
        "PASSWORD_CHANGED",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for kind in ["CHAT", "JOIN", "SIGN_IN", "BACKCHAT"] {
        assert!(!kinds.contains(&kind), "{kind} is not an administrative action: {kinds:?}");
    }
    let ids: Vec<i64> = trail.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first, no duplicates across pages: {ids:?}");
    // Who, when, what, before and after.
    let change = trail.iter().find(|e| e["type"] == "ROOM_CHANGED").unwrap();
    assert_eq!(change["user"], crate::harness::ADMIN);
    assert_eq!(change["room"], room.as_str());
    assert!(change["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(change["details"]["before"]["members"], json!(["alice@example.com"]));
    assert_eq!(change["details"]["after"]["members"], json!(["alice@example.com", "bob@example.com"]));
    assert_eq!(change["details"]["after"]["description"], "new");
    assert_eq!(trail.iter().filter(|e| e["type"] == "ROOM_CHANGED").count(), 1, "the refused change is not recorded");
    // Nothing secret is kept: no password or hash.
    let password_change = trail.iter().find(|e| e["type"] == "PASSWORD_CHANGED").unwrap().to_string();
    assert!(!password_change.contains("a-new-password") && !password_change.contains("argon2"), "{password_change}");

    // Filters.
    let grants = all_audit(&w, "&type=ROLE_GRANTED").await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["details"]["user"], "carol@example.com");
    let in_room = all_audit(&w, &format!("&room={room}")).await;
    assert!(in_room.iter().all(|e| e["room"] == room.as_str()) && in_room.len() >= 2);
    w.admin.get("/api/v1/audit?from=yesterday").await.problem(400, "validation_failed", Some("from"));
    w.admin.get("/api/v1/audit?limit=0").await.problem(400, "validation_failed", Some("limit"));

    // Only administrators read it.
    alice.get("/api/v1/audit").await.problem(403, "forbidden", None);

    // The CLI shows the same trail.
    let out = w.server.cli(&["--json", "audit", "--type", "ROLE_REVOKED"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"][0]["details"]["user"], "carol@example.com");
}
