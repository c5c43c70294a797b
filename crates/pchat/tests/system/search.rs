//! History search and the room directory through the real server: only rooms the caller may read at query time
//! (walls, removals, secret and disabled rooms), pages without duplicates or gaps, highlights that point at the
//! match, Chinese text, BACKCHAT capture, bad input, the CLI, and a pool where one server finds what another
//! indexed.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::compliance::{enable_into, settled};
use crate::harness::{Api, Server, World};
use pchat_store_postgres::testing::TempDatabase;

/// The ids of what a search finds (one page of up to 500).
async fn found(api: &Api, query: &str) -> Vec<String> {
    let page = api.get(&format!("/api/v1/search?limit=500&{query}")).await.expect(200);
    page["items"].as_array().unwrap().iter().map(|i| i["message"]["id"].as_str().unwrap().to_owned()).collect()
}

async fn post(api: &Api, room: &str, text: &str) -> String {
    let m = api.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": text })).await.expect(201);
    m["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_search_finds_only_what_the_caller_may_read_at_that_moment() {
    let w = World::new().await;
    let admin = &w.admin;
    admin.post("/api/v1/groups", json!({ "name": "walled" })).await.expect(201);
    let body = json!({ "name": "Research", "allowed_members": ["domain:example.com"], "denied_members": ["group:walled"],
                       "creators": ["alice@example.com"] });
    let research = admin.post("/api/v1/categories", body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let deals = w.room(&research, "Deals", json!({ "privacy": "open" })).await;
    let board = w.room(&research, "Board", json!({ "members": ["alice@example.com"] })).await;
    let skunk = w.room(&research, "Skunk", json!({ "privacy": "secret", "members": ["alice@example.com"] })).await;
    let alice = w.user("alice@example.com").await;
    let bob = w.user("bob@example.com").await;
    let in_deals = post(&alice, &deals, "bonds in the open deals room").await;
    let in_board = post(&alice, &board, "bonds on the board").await;
    let in_skunk = post(&alice, &skunk, "bonds in the secret room").await;

    assert_eq!(found(&alice, "q=bonds").await, [in_skunk.as_str(), in_board.as_str(), in_deals.as_str()]);
    assert_eq!(found(&bob, "q=bonds").await, [in_deals.as_str()], "bob reads only the open room");
    // An administrator who is not a member reads what any user in scope reads.
    assert_eq!(found(admin, "q=bonds").await, [in_deals.as_str()]);

    // A secret room named by an outsider is answered exactly as a room that does not exist.
    let secret = bob.get("/api/v1/search?q=bonds&room=name:Skunk").await;
    let missing = bob.get("/api/v1/search?q=bonds&room=name:Nothing").await;
    assert_eq!(secret.status, missing.status);
    assert_eq!(secret.status.as_u16(), 404);
    let blank = |v: &Value| v.to_string().replace("Skunk", "X").replace("Nothing", "X");
    assert_eq!(blank(&secret.body), blank(&missing.body));
    // A closed room the caller may see but not read is refused as for its history.
    bob.get(&format!("/api/v1/search?q=bonds&room={board}")).await.problem(403, "forbidden", None);

    // The wall goes up: bob finds nothing from that moment.
    admin.patch("/api/v1/groups/walled", json!({ "members": { "add": ["bob@example.com"] } })).await.expect(200);
    assert_eq!(found(&bob, "q=bonds").await, Vec::<String>::new());
    // Alice leaves the board: its messages are no longer hers to find.
    admin
        .patch(&format!("/api/v1/rooms/{board}"), json!({ "members": { "remove": ["alice@example.com"] } }))
        .await
        .expect(200);
    assert_eq!(found(&alice, "q=bonds").await, [in_skunk.as_str(), in_deals.as_str()]);
    // A disabled room: gone for users, still searchable by administrators.
    admin.patch(&format!("/api/v1/rooms/{deals}"), json!({ "disabled": true })).await.expect(200);
    assert_eq!(found(&alice, "q=bonds").await, [in_skunk.as_str()]);
    assert_eq!(found(admin, "q=bonds").await, [in_deals.as_str()]);
    assert_eq!(found(admin, &format!("q=bonds&room={deals}")).await, [in_deals.as_str()]);
    alice.get(&format!("/api/v1/search?q=bonds&room={deals}")).await.problem(404, "not_found", None);
    // A user whose chat is disabled cannot search.
    admin.put("/api/v1/policies/user:alice@example.com", json!({ "enable_persistent_chat": false })).await.expect(200);
    alice.get("/api/v1/search?q=bonds").await.problem(403, "chat_disabled_by_policy", None);
}

#[tokio::test]
async fn results_come_newest_first_in_pages_with_highlights() {
    let w = World::new().await;
    let cat = w.category("Desk").await;
    let first = w.room(&cat, "First", json!({ "privacy": "open" })).await;
    let second = w.room(&cat, "Second", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let mut posted = vec![];
    for i in 0..7 {
        let room = if i % 2 == 0 { &first } else { &second };
        posted.push(post(&alice, room, &format!("Update {i}: the Bond desk is open")).await);
        post(&alice, room, &format!("noise {i}")).await;
    }
    let long = format!("{} and then BONDS at last {}", "filler words ".repeat(40), "more filler ".repeat(40));
    let long_id = post(&alice, &first, &long).await;
    let story = alice
        .post(
            &format!("/api/v1/rooms/{second}/messages"),
            json!({ "text": "see attached", "story_title": "Bond outlook" }),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut expected: Vec<String> = vec![story.clone(), long_id.clone()];
    expected.extend(posted.iter().rev().cloned());

    // Pages of 3: every result once, in order, and a cursor until the end.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/search?q=bond&limit=3&cursor={c}"),
            None => "/api/v1/search?q=bond&limit=3".to_owned(),
        };
        let page = alice.get(&path).await.expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        for item in items {
            seen.push(item["message"]["id"].as_str().unwrap().to_owned());
            let highlight = item["highlight"].as_str().unwrap();
            let chars: Vec<char> = highlight.chars().collect();
            let ranges = item["highlight_ranges"].as_array().unwrap();
            assert!(!ranges.is_empty(), "{item}");
            for r in ranges {
                let (s, e) = (r["start"].as_u64().unwrap() as usize, r["end"].as_u64().unwrap() as usize);
                let marked: String = chars[s..e].iter().collect();
                assert!(marked.eq_ignore_ascii_case("bond"), "{marked:?} in {highlight:?}");
            }
            let room_name = item["room"]["name"].as_str().unwrap();
            assert_eq!(item["room"]["id"], item["message"]["room"]);
            assert!(room_name == "First" || room_name == "Second");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a result came twice: {seen:?}");
    // "Bond" and "BONDS": whole words only, so the plural does not match "bond".
    expected.retain(|id| id != &long_id);
    assert_eq!(seen, expected);

    // The long message's highlight is a piece around the match, cut with "…".
    let page = alice.get("/api/v1/search?q=bonds").await.expect(200);
    let hit = &page["items"][0];
    assert_eq!(hit["message"]["id"], long_id.as_str());
    let highlight = hit["highlight"].as_str().unwrap();
    assert!(highlight.starts_with('…') && highlight.ends_with('…') && highlight.chars().count() <= 202, "{highlight}");
    assert_eq!(hit["highlight_field"], "text");
    assert_eq!(page["total_estimate"], 1);
    // A match only in a story's title highlights the title.
    let page = alice.get("/api/v1/search?q=outlook").await.expect(200);
    assert_eq!(page["items"][0]["highlight_field"], "story_title");
    assert_eq!(page["items"][0]["highlight"], "Bond outlook");
    // Other modes through the API: the exact phrase, any word, case, author, dates.
    assert_eq!(found(&alice, "q=bond%20desk&match=exact").await.len(), 7);
    assert_eq!(found(&alice, "q=desk%20bond&match=exact").await.len(), 0);
    assert_eq!(found(&alice, "q=noise%20outlook&match=any").await.len(), 8);
    assert_eq!(found(&alice, "q=BONDS&case_sensitive=true").await, [long_id.as_str()]);
    assert_eq!(found(&alice, "q=bonds&case_sensitive=true").await.len(), 0);
    assert_eq!(found(&alice, "q=bond&author=bob@example.com").await.len(), 0);
    assert_eq!(found(&alice, "q=bond&to=2000-01-01T00:00:00Z").await.len(), 0);
    assert_eq!(found(&alice, &format!("q=bond&room={first}&room=name:Second")).await.len(), 8);
    assert_eq!(found(&alice, &format!("q=bond&room={first}")).await.len(), 4);
}

#[tokio::test]
async fn chinese_japanese_and_korean_words_are_found_inside_longer_text() {
    let w = World::new().await;
    let cat = w.category("Asia").await;
    let room = w.room(&cat, "Tokyo", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let zh = post(&alice, &room, "我们明天去北京开会，讨论iPhone手机的价格").await;
    let ja = post(&alice, &room, "明日の会議はキャンセルになりました").await;
    let ko = post(&alice, &room, "내일 회의는 취소되었습니다").await;
    assert_eq!(found(&alice, "q=%E5%8C%97%E4%BA%AC").await, [zh.as_str()], "北京");
    assert_eq!(found(&alice, "q=%E5%8C%97%E4%BA%AC%E5%BC%80%E4%BC%9A").await, [zh.as_str()], "北京开会");
    assert_eq!(found(&alice, "q=iphone%E6%89%8B%E6%9C%BA&match=exact").await, [zh.as_str()], "iphone手机");
    assert_eq!(found(&alice, "q=%E4%BC%9A%E8%AD%B0").await, [ja.as_str()], "会議");
    assert_eq!(found(&alice, "q=%E3%82%AD%E3%83%A3%E3%83%B3%E3%82%BB%E3%83%AB").await, [ja.as_str()], "キャンセル");
    assert_eq!(found(&alice, "q=%ED%9A%8C%EC%9D%98").await, [ko.as_str()], "회의");
    let page = alice.get("/api/v1/search?q=%E5%8C%97%E4%BA%AC").await.expect(200);
    let hit = &page["items"][0];
    let chars: Vec<char> = hit["highlight"].as_str().unwrap().chars().collect();
    let r = &hit["highlight_ranges"][0];
    let marked: String =
        chars[r["start"].as_u64().unwrap() as usize..r["end"].as_u64().unwrap() as usize].iter().collect();
    assert_eq!(marked, "北京");
    // One character alone is not a word to search for.
    alice.get("/api/v1/search?q=%E5%8C%97").await.problem(400, "validation_failed", Some("q"));

    // The room directory folds case and accents and finds names by any part, Chinese included.
    let cafe = w.room(&cat, "Café Zürich", json!({ "privacy": "open" })).await;
    let beijing = w.room(&cat, "北京办公室", json!({ "privacy": "open" })).await;
    let _secret = w.room(&cat, "北京秘密", json!({ "privacy": "secret", "members": ["alice@example.com"] })).await;
    let names = |v: Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let bob = w.user("bob@example.com").await;
    assert_eq!(names(bob.get("/api/v1/rooms?query=CAFE%20zurich").await.expect(200)), [cafe.as_str()]);
    assert_eq!(names(bob.get("/api/v1/rooms?query=%E5%8C%97%E4%BA%AC").await.expect(200)), [beijing.as_str()]);
    assert_eq!(names(alice.get("/api/v1/rooms?query=%E5%8C%97%E4%BA%AC").await.expect(200)).len(), 2);
}

#[tokio::test]
async fn searches_are_captured_and_bad_input_changes_nothing() {
    let w = World::new().await;
    enable_into(&w.admin, "").await;
    let cat = w.category("Desk").await;
    let one = w.room(&cat, "One", json!({ "privacy": "open" })).await;
    let two = w.room(&cat, "Two", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let a = post(&alice, &one, "quarterly numbers").await;
    let b = post(&alice, &two, "numbers again").await;
    post(&alice, &two, "nothing to see").await;

    // Bad input: a clear error naming the parameter, and nothing captured.
    let long = "a".repeat(1001);
    let rooms: String = (0..51).map(|i| format!("&room=r{i}")).collect();
    for (query, field) in [
        ("", "q"),
        ("q=%20%20", "q"),
        ("q=!!!", "q"),
        (&format!("q={long}") as &str, "q"),
        ("q=x&match=some", "match"),
        ("q=x&from=yesterday", "from"),
        ("q=x&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        (&format!("q=x{rooms}"), "room"),
        ("q=x&cursor=zz", "cursor"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=501", "limit"),
        ("q=x&author=nobody", "author"),
        ("q=x&case_sensitive=maybe", "case_sensitive"),
    ] {
        alice.get(&format!("/api/v1/search?{query}")).await.problem(400, "validation_failed", Some(field));
    }

    // A search records one BACKCHAT event per room with results, naming the messages found.
    assert_eq!(found(&alice, "q=numbers").await, [b.as_str(), a.as_str()]);
    let backchat = settled(&w.admin, |e| e["type"] == "BACKCHAT", 2).await;
    assert_eq!(backchat.len(), 2, "{backchat:?}");
    let mut rooms_hit: Vec<&str> = backchat.iter().map(|e| e["room"].as_str().unwrap()).collect();
    rooms_hit.sort_unstable();
    let mut expected = vec![one.as_str(), two.as_str()];
    expected.sort_unstable();
    assert_eq!(rooms_hit, expected);
    for event in &backchat {
        assert_eq!(event["user"], "alice@example.com");
        assert_eq!(event["details"]["via"], "search");
        let id = event["details"]["messages"][0]["id"].as_str().unwrap();
        assert!(id == a || id == b);
    }

    // Removing and replacing messages takes effect in search at once.
    w.admin.post(&format!("/api/v1/rooms/{one}/messages/remove"), json!({ "keywords": "quarterly" })).await.expect(200);
    assert_eq!(found(&alice, "q=quarterly").await, Vec::<String>::new());
    let body = json!({ "keywords": "again", "replace_with": "redacted by compliance" });
    w.admin.post(&format!("/api/v1/rooms/{two}/messages/remove"), body).await.expect(200);
    assert_eq!(found(&alice, "q=again").await, Vec::<String>::new());
    assert_eq!(found(&alice, "q=redacted").await, [b.as_str()]);
    // A cleared room's messages are gone from search.
    w.admin
        .post(&format!("/api/v1/rooms/{two}/clear"), json!({ "end_date": "2100-01-01T00:00:00Z" }))
        .await
        .expect(200);
    assert_eq!(found(&alice, "q=redacted").await, Vec::<String>::new());

    // The CLI mirrors the endpoint for administrators.
    let admin_rooms = w.room(&cat, "Admins", json!({ "privacy": "open" })).await;
    post(&w.admin, &admin_rooms, "the CLI finds this line").await;
    let out = w.server.cli(&["message", "search", "cli line", "--room", "Admins"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("the CLI finds this line") && stdout.contains("1 in all"), "{stdout}");
    let out = w.server.cli(&["message", "search", "cli", "--from", "nonsense"]);
    assert!(!out.status.success());
}

/// In a pool, what one server indexed another finds at once (the index is in the shared database).
#[tokio::test]
async fn in_a_pool_every_server_finds_what_another_indexed() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    let cat = w.category("Desk").await;
    let room = w.room(&cat, "Shared", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    let id = post(&alice, &room, "posted on the first server 上海市").await;
    let alice_there = other.api(None).signed_in("alice@example.com", crate::harness::PASSWORD).await;
    assert_eq!(found(&alice_there, "q=first%20server&match=exact").await, [id.as_str()]);
    assert_eq!(found(&alice_there, "q=%E4%B8%8A%E6%B5%B7").await, [id.as_str()]);
    drop((other, w));
    drop(database);
}
