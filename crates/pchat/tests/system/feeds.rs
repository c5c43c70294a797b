//! Topic feeds through the real server: a `feed_match` frame when a new message matches in a room the owner may
//! read (and none once they may not), filters by room and author, past matches listed newest first, the limit of
//! 100, privacy of feeds, bad input, and a pool where the feed, the post and the connection are on different
//! servers.
//!
//! A frame that must not come is checked by order: matching runs message by message, so after the message that
//! must not match, a later one that does is the next `feed_match` to arrive.

use serde_json::{Value, json};

use crate::harness::{Api, PASSWORD, Server, World, Ws};
use pchat_store_postgres::testing::TempDatabase;

async fn post(api: &Api, room: &str, text: &str) -> String {
    let m = api.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": text })).await.expect(201);
    m["id"].as_str().unwrap().to_owned()
}

async fn create_feed(api: &Api, body: Value) -> String {
    api.post("/api/v1/me/feeds", body).await.expect(201)["id"].as_str().unwrap().to_owned()
}

/// The next `feed_match` frame (other frames are skipped).
async fn next_match(ws: &mut Ws) -> Value {
    ws.next_of("feed_match").await
}

#[tokio::test]
async fn new_matches_arrive_live_only_while_the_room_is_readable_and_are_listed_afterwards() {
    let w = World::new().await;
    let admin = &w.admin;
    admin.post("/api/v1/groups", json!({ "name": "walled" })).await.expect(201);
    let body = json!({ "name": "Research", "allowed_members": ["domain:example.com"], "denied_members": ["group:walled"],
                       "creators": ["alice@example.com"] });
    let research = admin.post("/api/v1/categories", body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let general = w.category("General").await;
    let deals = w.room(&research, "Deals", json!({ "privacy": "open" })).await;
    let lobby = w.room(&general, "Lobby", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let bob = w.user("bob@example.com").await;
    let carol = w.user("carol@example.com").await;
    let feed = create_feed(&alice, json!({ "name": "Bonds", "keywords": "bonds" })).await;
    let cjk =
        create_feed(&alice, json!({ "name": "Beijing", "keywords": "北京", "authors": ["bob@example.com"] })).await;
    let lobby_only =
        create_feed(&alice, json!({ "name": "Lobby rates", "keywords": "rates", "rooms": ["name:Lobby"] })).await;
    let mut ws = w.ws(&alice).await;

    // A match in a room alice has not joined arrives with the feed, the message, the room and a highlight.
    post(&bob, &deals, "stocks only").await;
    let id = post(&bob, &deals, "Bonds rally in Deals").await;
    let m = next_match(&mut ws).await;
    assert_eq!(m["feed"], feed.as_str());
    assert_eq!(m["feed_name"], "Bonds");
    assert_eq!(m["message"]["id"], id.as_str());
    assert_eq!(m["room"], json!({ "id": deals, "name": "Deals" }));
    assert_eq!(m["highlight_ranges"][0], json!({ "start": 0, "end": 5 }));

    // Authors and rooms narrow a feed.
    post(&carol, &deals, "我们明天去北京开会").await;
    post(&bob, &deals, "rates up in Deals").await;
    let beijing = post(&bob, &lobby, "北京的天气").await;
    let m = next_match(&mut ws).await;
    assert_eq!((m["feed"].as_str(), m["message"]["id"].as_str()), (Some(cjk.as_str()), Some(beijing.as_str())));
    let rates = post(&carol, &lobby, "rates down in the lobby").await;
    let m = next_match(&mut ws).await;
    assert_eq!((m["feed"].as_str(), m["message"]["id"].as_str()), (Some(lobby_only.as_str()), Some(rates.as_str())));

    // The wall goes up: nothing from Deals any more, while the lobby still matches.
    admin.patch("/api/v1/groups/walled", json!({ "members": { "add": ["alice@example.com"] } })).await.expect(200);
    post(&bob, &deals, "bonds behind the wall").await;
    let visible = post(&bob, &lobby, "bonds in the lobby").await;
    let m = next_match(&mut ws).await;
    assert_eq!(m["message"]["id"], visible.as_str(), "a match behind the wall reached alice: {m}");

    // Past matches: newest first, only from rooms alice may read now.
    let past = alice.get(&format!("/api/v1/me/feeds/{feed}/messages")).await.expect(200);
    let ids: Vec<&str> =
        past["items"].as_array().unwrap().iter().map(|i| i["message"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [visible.as_str()]);
    admin.patch("/api/v1/groups/walled", json!({ "members": { "remove": ["alice@example.com"] } })).await.expect(200);
    let past = alice.get(&format!("/api/v1/me/feeds/{feed}/messages?limit=1")).await.expect(200);
    assert_eq!(past["items"].as_array().unwrap().len(), 1);
    let next = past["next_cursor"].as_str().unwrap();
    let rest = alice.get(&format!("/api/v1/me/feeds/{feed}/messages?cursor={next}")).await.expect(200);
    let mut all: Vec<String> =
        past["items"].as_array().unwrap().iter().map(|i| i["message"]["id"].as_str().unwrap().to_owned()).collect();
    all.extend(rest["items"].as_array().unwrap().iter().map(|i| i["message"]["id"].as_str().unwrap().to_owned()));
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0], visible);
    assert_eq!(all[2], id);

    // A changed feed matches by its new keywords at once; a deleted one not at all.
    alice.patch(&format!("/api/v1/me/feeds/{feed}"), json!({ "keywords": "gilts" })).await.expect(200);
    alice.delete(&format!("/api/v1/me/feeds/{lobby_only}")).await.expect(204);
    post(&bob, &lobby, "bonds and rates again").await;
    let gilts = post(&bob, &lobby, "gilts now").await;
    let m = next_match(&mut ws).await;
    assert_eq!((m["feed"].as_str(), m["message"]["id"].as_str()), (Some(feed.as_str()), Some(gilts.as_str())));
}

#[tokio::test]
async fn feeds_are_private_bounded_and_refuse_bad_input() {
    let w = World::new().await;
    let cat = w.category("Desk").await;
    let secret = w.room(&cat, "Skunk", json!({ "privacy": "secret", "members": ["bob@example.com"] })).await;
    let alice = w.user("alice@example.com").await;
    let bob = w.user("bob@example.com").await;
    let feed = create_feed(&alice, json!({ "name": "Mine", "keywords": "bonds", "match": "any" })).await;
    let got = alice.get(&format!("/api/v1/me/feeds/{feed}")).await.expect(200);
    assert_eq!(got["match"], "any");
    assert_eq!(got["case_sensitive"], false);
    // Another user's feed is answered as one that does not exist.
    for path in [format!("/api/v1/me/feeds/{feed}"), format!("/api/v1/me/feeds/{feed}/messages")] {
        bob.get(&path).await.problem(404, "not_found", None);
    }
    bob.patch(&format!("/api/v1/me/feeds/{feed}"), json!({ "keywords": "x" })).await.problem(404, "not_found", None);
    bob.delete(&format!("/api/v1/me/feeds/{feed}")).await.problem(404, "not_found", None);
    alice.get("/api/v1/me/feeds/nope").await.problem(404, "not_found", None);
    assert_eq!(bob.get("/api/v1/me/feeds").await.expect(200)["items"], json!([]));

    // Bad input: a clear error, and nothing stored.
    let authors: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
    for (body, field) in [
        (json!({ "name": "A", "keywords": "   " }), "keywords"),
        (json!({ "name": "A", "keywords": "中" }), "keywords"),
        (json!({ "name": "A", "keywords": "x".repeat(1001) }), "keywords"),
        (json!({ "name": "", "keywords": "x" }), "name"),
        (json!({ "name": "A", "keywords": "x", "match": "some" }), "match"),
        (json!({ "name": "A", "keywords": "x", "authors": ["nobody"] }), "authors"),
        (json!({ "name": "A", "keywords": "x", "authors": authors }), "authors"),
        (json!({ "name": "A", "keywords": "x", "rooms": [secret] }), "rooms"),
        (json!({ "name": "A", "keywords": "x", "rooms": ["name:Nothing"] }), "rooms"),
        (json!({ "name": "A", "keywords": "x", "colour": "red" }), "colour"),
    ] {
        alice.post("/api/v1/me/feeds", body).await.problem(400, "validation_failed", Some(field));
    }
    alice.post("/api/v1/me/feeds", json!({ "name": "Mine", "keywords": "x" })).await.problem(409, "name_taken", None);
    alice.patch(&format!("/api/v1/me/feeds/{feed}"), json!({ "match": "nope" })).await.problem(
        400,
        "validation_failed",
        Some("match"),
    );
    assert_eq!(alice.get("/api/v1/me/feeds").await.expect(200)["items"].as_array().unwrap().len(), 1);

    // At most 100 feeds: the 101st is refused and not stored.
    for i in 1..100 {
        create_feed(&alice, json!({ "name": format!("Feed {i:03}"), "keywords": format!("word{i}") })).await;
    }
    alice.post("/api/v1/me/feeds", json!({ "name": "One too many", "keywords": "x" })).await.problem(
        409,
        "limit_reached",
        None,
    );
    let mut names = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/me/feeds?limit=500&cursor={c}"),
            None => "/api/v1/me/feeds?limit=40".to_owned(),
        };
        let page = alice.get(&path).await.expect(200);
        names.extend(page["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(names.len(), 100);
    assert!(!names.contains(&"One too many".to_owned()));
    // Deleting one makes room for another.
    alice.delete(&format!("/api/v1/me/feeds/{feed}")).await.expect(204);
    create_feed(&alice, json!({ "name": "One more", "keywords": "x" })).await;
}

/// In a pool: the feed is created through one server, the message posted through another, and the owner's
/// stream is on the first; the match arrives.
#[tokio::test]
async fn in_a_pool_feeds_match_messages_posted_through_any_server() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    let cat = w.category("Desk").await;
    let room = w.room(&cat, "Shared", json!({ "privacy": "open" })).await;
    let alice_here = w.user("alice@example.com").await;
    let alice_there = other.api(None).signed_in("alice@example.com", PASSWORD).await;
    let bob_there = other.api(None).signed_in("bob@example.com", PASSWORD).await;
    let mut ws = w.ws(&alice_here).await;
    // Created through the other server: this one learns of it through the database.
    let feed = create_feed(&alice_there, json!({ "name": "Pool", "keywords": "上海 market", "match": "exact" })).await;
    let mut found = None;
    for attempt in 0..50 {
        let id = post(&bob_there, &room, &format!("上海 market update {attempt}")).await;
        // Until this server has heard of the feed, posts may not match; once one does, it is a match of this one.
        let frame = tokio::time::timeout(std::time::Duration::from_millis(200), ws.next_of("feed_match")).await;
        if let Ok(m) = frame {
            assert_eq!(m["feed"], feed.as_str());
            found = Some((m, id));
            break;
        }
    }
    let (m, _) = found.expect("no feed_match arrived through the pool");
    assert_eq!(m["room"]["name"], "Shared");
    drop((other, w));
    drop(database);
}
