//! Edits never undo each other: concurrent changes to one room or category each write only the fields they name,
//! so a manager's edit racing an administrator's disable does not re-enable the room, an edit racing a kick does
//! not re-add the member, and an edit racing a category's new deny entry does not drop it. Each race is run many
//! times with real concurrent requests; versions (ETag / If-Match) are checked too.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, World};

const ROUNDS: usize = 40;

async fn both<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future + Send + 'static,
    B: std::future::Future + Send + 'static,
    A::Output: Send + 'static,
    B::Output: Send + 'static,
{
    let (a, b) = (tokio::spawn(a), tokio::spawn(b));
    (a.await.unwrap(), b.await.unwrap())
}

async fn patch(api: Api, path: String, body: Value) -> u16 {
    api.patch(&path, body).await.status.as_u16()
}

#[tokio::test]
async fn a_managers_edit_racing_an_administrators_disable_never_re_enables_the_room() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let alice = w.user("alice@example.com").await;
    for round in 0..ROUNDS {
        let room = w.room(&cat, &format!("Race {round}"), json!({ "managers": ["alice@example.com"] })).await;
        let path = format!("/api/v1/rooms/{room}");
        let (edit, disable) = both(
            patch(alice.clone(), path.clone(), json!({ "description": format!("edited {round}") })),
            patch(w.admin.clone(), path.clone(), json!({ "disabled": true })),
        )
        .await;
        assert_eq!(disable, 200);
        // The manager may find the room already disabled (still visible to managers) or not; either way the
        // administrator's disable stands.
        assert!(matches!(edit, 200 | 403 | 404), "edit: {edit}");
        let after = w.admin.get(&path).await.expect(200);
        assert_eq!(after["disabled"], true, "round {round}: the edit re-enabled the room: {after}");
        if edit == 200 {
            assert_eq!(after["description"], format!("edited {round}"), "round {round}");
        }
    }
}

#[tokio::test]
async fn an_edit_racing_a_kick_never_re_adds_the_member() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let alice = w.user("alice@example.com").await;
    for round in 0..ROUNDS {
        let members = json!(["alice@example.com", "bob@example.com", "carol@example.com"]);
        let room = w
            .room(&cat, &format!("Kick {round}"), json!({ "managers": ["alice@example.com"], "members": members }))
            .await;
        let path = format!("/api/v1/rooms/{room}");
        let (edit, kick) = both(
            patch(
                alice.clone(),
                path.clone(),
                json!({ "description": format!("edited {round}"), "members": { "add": ["alice@example.com"] } }),
            ),
            patch(w.admin.clone(), path.clone(), json!({ "members": { "remove": ["bob@example.com"] } })),
        )
        .await;
        assert_eq!((edit, kick), (200, 200));
        let after = w.admin.get(&path).await.expect(200);
        let members: Vec<&str> = after["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert!(
            !members.contains(&"bob@example.com"),
            "round {round}: the edit re-added the kicked member: {members:?}"
        );
        assert!(members.contains(&"carol@example.com"), "round {round}: {members:?}");
        assert_eq!(after["description"], format!("edited {round}"), "round {round}");
    }
}

#[tokio::test]
async fn concurrent_category_changes_keep_each_others_entries() {
    let w = World::new().await;
    for round in 0..ROUNDS {
        let cat = w.category(&format!("Cat {round}")).await;
        let path = format!("/api/v1/categories/{cat}");
        let (deny, describe) = both(
            patch(w.admin.clone(), path.clone(), json!({ "denied_members": { "add": ["bob@example.com"] } })),
            patch(
                w.admin.clone(),
                path.clone(),
                json!({ "description": "renamed", "creators": { "add": ["carol@example.com"] } }),
            ),
        )
        .await;
        assert_eq!((deny, describe), (200, 200));
        let after = w.admin.get(&path).await.expect(200);
        assert_eq!(after["denied_members"], json!(["bob@example.com"]), "round {round}: {after}");
        assert_eq!(after["description"], "renamed", "round {round}");
        let creators: Vec<&str> = after["creators"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(creators, ["alice@example.com", "carol@example.com"], "round {round}");
    }
}

#[tokio::test]
async fn if_match_refuses_an_edit_based_on_a_stale_version() {
    let w = World::new().await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "Versioned", json!({})).await;
    let path = format!("/api/v1/rooms/{room}");
    let first = w.admin.call_with(Method::GET, &path, None, &[]).await;
    let etag = first.etag.clone().expect("GET answers an ETag");
    assert_eq!(etag, format!("\"{}\"", first.body["version"]));
    // An edit with the current version succeeds and moves the version on.
    let edited =
        w.admin.call_with(Method::PATCH, &path, Some(json!({ "description": "one" })), &[("if-match", &etag)]).await;
    assert_eq!(edited.status.as_u16(), 200, "{}", edited.body);
    let new_etag = edited.etag.clone().unwrap();
    assert_ne!(new_etag, etag);
    // The same stale version again: 412, nothing changed.
    let stale =
        w.admin.call_with(Method::PATCH, &path, Some(json!({ "description": "two" })), &[("if-match", &etag)]).await;
    stale.problem(412, "conflict", None);
    assert_eq!(w.admin.get(&path).await.expect(200)["description"], "one");
    // A malformed If-Match is a validation error.
    let bad =
        w.admin.call_with(Method::PATCH, &path, Some(json!({ "description": "two" })), &[("if-match", "v1")]).await;
    bad.problem(400, "validation_failed", Some("If-Match"));
    // Categories carry versions too.
    let cat_path = format!("/api/v1/categories/{cat}");
    let category = w.admin.call_with(Method::GET, &cat_path, None, &[]).await;
    let cat_etag = category.etag.clone().unwrap();
    w.admin.patch(&cat_path, json!({ "description": "moved on" })).await.expect(200);
    let stale = w
        .admin
        .call_with(Method::PATCH, &cat_path, Some(json!({ "description": "old view" })), &[("if-match", &cat_etag)])
        .await;
    stale.problem(412, "conflict", None);
}
