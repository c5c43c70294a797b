//! Sign-in that survives attack, sessions that end, and passwords: throttling per account and client address,
//! bounded password hashing under a flood, token expiry (idle and absolute), sign-out, a user's own sessions,
//! password changes ending the other sessions, and `?token=` accepted only on the stream.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{ADMIN, PASSWORD, World, Ws};

const TRUST_LOCALHOST: &str = "[security]\ntrusted_proxies = [\"127.0.0.1\"]\n";

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_account_and_address_without_locking_out_the_real_user() {
    let w = World::with_config(TRUST_LOCALHOST).await;
    let anon = w.server.api(None);
    // Bob signs in once from his own machine, which makes it a known address for him.
    anon.try_sign_in("bob@example.com", PASSWORD, Some("10.9.9.9")).await.expect(201);

    // Five wrong passwords from one address are free; the sixth locks that address out of the account.
    for _ in 0..5 {
        anon.try_sign_in("bob@example.com", "wrong-password", Some("10.0.0.1")).await.problem(
            401,
            "unauthenticated",
            None,
        );
    }
    anon.try_sign_in("bob@example.com", "wrong-password", Some("10.0.0.1")).await.problem(401, "unauthenticated", None);
    let locked = anon.try_sign_in("bob@example.com", PASSWORD, Some("10.0.0.1")).await;
    let retry_after = locked.retry_after;
    locked.problem(429, "rate_limited", None);
    assert!(retry_after.is_some_and(|s| (1..=900).contains(&s)), "Retry-After: {retry_after:?}");
    // Another user from the same address, and Bob from elsewhere, are not affected.
    anon.try_sign_in("carol@example.com", PASSWORD, Some("10.0.0.1")).await.expect(201);
    anon.try_sign_in("bob@example.com", PASSWORD, Some("10.9.9.9")).await.expect(201);
    // A lockout is short at first: after Retry-After the address may try again.
    tokio::time::sleep(Duration::from_secs(retry_after.unwrap())).await;
    anon.try_sign_in("bob@example.com", "wrong-password", Some("10.0.0.1")).await.problem(401, "unauthenticated", None);

    // A distributed guess: many addresses, a few failures each, passes the account-wide limit (50)...
    for n in 0..60 {
        let address = format!("10.1.{}.{}", n / 200, n % 200 + 1);
        let reply = anon.try_sign_in("bob@example.com", "wrong-password", Some(&address)).await;
        assert!(matches!(reply.status.as_u16(), 401 | 429), "{}", reply.status);
    }
    // ...so strangers are now refused even with the right password, but Bob's own machine still gets in.
    anon.try_sign_in("bob@example.com", PASSWORD, Some("10.2.0.1")).await.problem(429, "rate_limited", None);
    anon.try_sign_in("bob@example.com", PASSWORD, Some("10.9.9.9")).await.expect(201);
}

#[tokio::test]
async fn bad_sign_in_input_is_rejected_and_only_valid_names_are_captured() {
    let w = World::new().await;
    crate::compliance::enable_into(&w.admin, "").await;
    let anon = w.server.api(None);
    let long_user = format!("{}@example.com", "a".repeat(400));
    anon.try_sign_in(&long_user, "x", None).await.problem(400, "validation_failed", Some("user"));
    anon.try_sign_in("not an address\u{1b}[31m", "x", None).await.problem(400, "validation_failed", Some("user"));
    anon.try_sign_in("bob@example.com", &"p".repeat(1025), None).await.problem(
        400,
        "validation_failed",
        Some("password"),
    );
    anon.try_sign_in("nobody@example.com", "whatever-1", None).await.problem(401, "unauthenticated", None);
    // Only the well-formed name was captured, as the user of its SIGN_IN_FAILED event.
    let mut failed = vec![];
    for _ in 0..100 {
        let events = w.admin.get("/api/v1/compliance/events?type=SIGN_IN_FAILED").await.expect(200);
        failed = events["items"].as_array().unwrap().iter().map(|e| e["user"].as_str().unwrap().to_owned()).collect();
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, ["nobody@example.com"]);
}

#[tokio::test]
async fn a_sign_in_flood_is_bounded_and_other_users_keep_posting() {
    let w = World::with_config(TRUST_LOCALHOST).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let rss_before = w.server.rss_kib();

    // 500 attempts at once, each from its own address for its own (unknown) account, so that throttling does not
    // stop them: only the bounded hashing does.
    let anon = w.server.api(None);
    let flood: Vec<_> = (0..500)
        .map(|n| {
            let anon = anon.clone();
            tokio::spawn(async move {
                let address = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256 + 1);
                anon.try_sign_in(&format!("guess{n}@example.com"), "wrong-password", Some(&address))
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    // Meanwhile Alice posts; each post is timed.
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let started = Instant::now();
        alice
            .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("during the flood {n}") }))
            .await
            .expect(201);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut statuses = std::collections::BTreeMap::new();
    for attempt in flood {
        *statuses.entry(attempt.await.unwrap()).or_insert(0) += 1;
    }
    let rss_after = w.server.rss_kib();
    assert!(slowest < Duration::from_millis(1000), "a post took {slowest:?} during the flood");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<u16>>().iter().filter(|s| ![401, 503].contains(*s)).count(),
        0,
        "{statuses:?}"
    );
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "hashing was not bounded: {statuses:?}");
    // One hash at a time: memory grows by a few Argon2 blocks at most, not 500 of them (19 MiB each).
    assert!(rss_after < rss_before + 200 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    println!("flood: {statuses:?}, slowest post {slowest:?}, RSS {rss_before} -> {rss_after} KiB");
}

#[tokio::test]
async fn sessions_end_after_their_lifetime_and_the_stream_closes_then() {
    let w = World::with_config("[security]\nsession_lifetime_secs = 3\n").await;
    let bob = w.user("bob@example.com").await;
    bob.get("/api/v1/me").await.expect(200);
    let mut ws = w.ws(&bob).await;
    let (_, close) = ws.until_closed().await;
    assert_eq!(close, Some((4401, "session_expired".to_owned())));
    bob.get("/api/v1/me").await.problem(401, "unauthenticated", None);
}

#[tokio::test]
async fn idle_sessions_end_but_use_and_open_streams_keep_them() {
    let w = World::with_config("[security]\nsession_idle_timeout_secs = 2\n").await;
    let idle = w.user("bob@example.com").await;
    let used = w.user("bob@example.com").await;
    let streaming = w.user("bob@example.com").await;
    let ws = w.ws(&streaming).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        used.get("/api/v1/me").await.expect(200);
    }
    idle.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    used.get("/api/v1/me").await.expect(200);
    streaming.get("/api/v1/me").await.expect(200);
    ws.close().await;
}

#[tokio::test]
async fn signing_out_ends_the_token_and_its_connections() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let other = w.user("bob@example.com").await;
    let mut ws = w.ws(&bob).await;
    let mut other_ws = w.ws(&other).await;
    bob.delete("/api/v1/sessions/current").await.expect(204);
    bob.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    let (_, close) = ws.until_closed().await;
    assert_eq!(close, Some((4401, "session_ended".to_owned())));
    // The other session is untouched.
    other.get("/api/v1/me").await.expect(200);
    other_ws.send(json!({ "op": "ping" })).await;
    assert_eq!(other_ws.next().await["type"], "pong");
}

#[tokio::test]
async fn users_list_and_end_their_own_sessions() {
    let w = World::new().await;
    let first = w.user("bob@example.com").await;
    let second = w.user("bob@example.com").await;
    let carol = w.user("carol@example.com").await;
    let listed = first.get("/api/v1/me/sessions").await.expect(200);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    for s in items {
        assert!(s["expires_at"].is_string() && s["client"].as_str().unwrap().starts_with("127.0.0.1"), "{s}");
    }
    let other_id = items.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();
    // Nobody ends someone else's session, and an unknown id is not found.
    carol.delete(&format!("/api/v1/me/sessions/{other_id}")).await.problem(404, "not_found", None);
    first.delete("/api/v1/me/sessions/no-such-session").await.problem(404, "not_found", None);
    second.get("/api/v1/me").await.expect(200);
    first.delete(&format!("/api/v1/me/sessions/{other_id}")).await.expect(204);
    second.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    first.get("/api/v1/me").await.expect(200);
    // Ending all of a user's sessions is for user administrators.
    carol.delete("/api/v1/users/bob@example.com/sessions").await.problem(403, "forbidden", None);
    w.admin.delete("/api/v1/users/bob@example.com/sessions").await.expect(204);
    first.get("/api/v1/me").await.problem(401, "unauthenticated", None);
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_ends_the_other_sessions() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let elsewhere = w.user("bob@example.com").await;
    let mut ws = w.ws(&elsewhere).await;
    let change = |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    bob.put("/api/v1/me/password", change("not-my-password", "a-new-password")).await.problem(
        400,
        "validation_failed",
        Some("current_password"),
    );
    bob.put("/api/v1/me/password", change(PASSWORD, "short")).await.problem(
        400,
        "validation_failed",
        Some("new_password"),
    );
    bob.put("/api/v1/me/password", json!({ "current_password": PASSWORD })).await.problem(
        400,
        "validation_failed",
        None,
    );
    // Nothing changed so far.
    elsewhere.get("/api/v1/me").await.expect(200);
    w.server.api(None).try_sign_in("bob@example.com", PASSWORD, None).await.expect(201);

    bob.put("/api/v1/me/password", change(PASSWORD, "a-new-password")).await.expect(204);
    bob.get("/api/v1/me").await.expect(200);
    elsewhere.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    let (_, close) = ws.until_closed().await;
    assert_eq!(close, Some((4401, "session_ended".to_owned())));
    let anon = w.server.api(None);
    anon.try_sign_in("bob@example.com", PASSWORD, None).await.problem(401, "unauthenticated", None);
    anon.try_sign_in("bob@example.com", "a-new-password", None).await.expect(201);
}

#[tokio::test]
async fn a_user_administrator_sets_a_password_with_the_cli_and_every_session_ends() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let out = w.server.cli(&["user", "set-password", "bob@example.com", "--password", "chosen-by-admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    bob.get("/api/v1/me").await.problem(401, "unauthenticated", None);
    let anon = w.server.api(None);
    anon.try_sign_in("bob@example.com", "chosen-by-admin", None).await.expect(201);
    let out = w.server.cli(&["user", "set-password", "bob@example.com", "--password", "short"]);
    assert!(!out.status.success(), "a password under the minimum is refused");
    anon.try_sign_in("bob@example.com", "chosen-by-admin", None).await.expect(201);
    // A plain user may not set someone's password.
    let carol = w.user("carol@example.com").await;
    carol.put("/api/v1/users/bob@example.com/password", json!({ "password": "carols-choice" })).await.problem(
        403,
        "forbidden",
        None,
    );
    // And the administrator can change their own, as the bootstrap message advises.
    let body = json!({ "current_password": crate::harness::ADMIN_PASSWORD, "new_password": "admin-password-2" });
    w.admin.put("/api/v1/me/password", body).await.expect(204);
    anon.try_sign_in(ADMIN, "admin-password-2", None).await.expect(201);
}

#[tokio::test]
async fn a_token_in_the_query_string_works_only_on_the_stream() {
    let w = World::new().await;
    let bob = w.user("bob@example.com").await;
    let token = bob.token.clone().unwrap();
    let anon = w.server.api(None);
    anon.call(Method::GET, &format!("/api/v1/me?token={token}"), None).await.problem(401, "unauthenticated", None);
    let mut ws = Ws::connect(&w.server.url, &token).await;
    ws.send(json!({ "op": "ping" })).await;
    assert_eq!(ws.next().await["type"], "pong");
}

/// An Argon2id hash of `password` made outside pchat (as another system would have stored it).
fn foreign_hash(password: &str, m_cost: u32, t_cost: u32) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::from_b64("aW1wb3J0ZWRzYWx0MTIzNA").unwrap();
    let params = argon2::Params::new(m_cost, t_cost, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon.hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// User administrators import users with their password hashes, all or none; imported users sign in with their
/// own password; a weak or foreign hash, a bad address or a taken one refuses the whole import.
#[tokio::test]
async fn users_imported_with_their_password_hashes_sign_in_and_bad_imports_change_nothing() {
    let w = World::new().await;
    let hash = foreign_hash("imported secret 1", 19456, 2);
    let users: Vec<_> = (0..1000)
        .map(|i| json!({ "address": format!("imp{i:04}@example.com"), "display_name": format!("Imported {i}"), "password_hash": hash }))
        .collect();
    let started = Instant::now();
    let done = w.admin.post("/api/v1/users/import", json!({ "users": users })).await.expect(200);
    assert_eq!(done["created"], 1000);
    // Nothing is hashed on import: a thousand users take well under the ~20 ms per hash they would otherwise.
    assert!(started.elapsed() < Duration::from_secs(10), "import took {:?}", started.elapsed());
    let signed_in = w.server.api(None).signed_in("imp0999@example.com", "imported secret 1").await;
    assert_eq!(signed_in.get("/api/v1/me").await.expect(200)["user"]["display_name"], "Imported 999");
    w.server.api(None).try_sign_in("imp0001@example.com", "wrong password", None).await.problem(
        401,
        "unauthenticated",
        None,
    );

    // Refusals name the entry and create nobody.
    let entry = |address: &str, hash: &str| json!({ "address": address, "display_name": "New", "password_hash": hash });
    let cases = [
        (json!([entry("new1@example.com", &hash), entry("not an address", &hash)]), "users[1].address"),
        (json!([entry("new1@example.com", &foreign_hash("x", 4096, 1))]), "users[0].password_hash"),
        (
            json!([entry("new1@example.com", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW")]),
            "users[0].password_hash",
        ),
        (json!([]), "users"),
    ];
    for (users, field) in cases {
        w.admin.post("/api/v1/users/import", json!({ "users": users })).await.problem(
            400,
            "validation_failed",
            Some(field),
        );
    }
    let taken = json!([entry("new1@example.com", &hash), entry("imp0005@example.com", &hash)]);
    w.admin.post("/api/v1/users/import", json!({ "users": taken })).await.problem(409, "name_taken", Some("users"));
    let twice = json!([entry("new1@example.com", &hash), entry("new1@example.com", &hash)]);
    w.admin.post("/api/v1/users/import", json!({ "users": twice })).await.problem(409, "name_taken", Some("users"));
    w.admin.get("/api/v1/users/new1@example.com").await.problem(404, "not_found", None);
    // Only user administrators import.
    let alice = w.user("alice@example.com").await;
    alice.post("/api/v1/users/import", json!({ "users": [entry("new2@example.com", &hash)] })).await.problem(
        403,
        "forbidden",
        None,
    );
}
