//! Search conformance: one table of queries, run through [`crate::search::search`] on every backend, and the
//! index following every change of history.

use std::sync::Arc;

use pchat_core::text::{MatchMode, TextQuery};

use super::{category, post, room};
use crate::search::{SearchRequest, search};
use crate::{MessageRecord, SearchFilter, Store};

/// One message of the history: (id, room, author, ts, text, story title).
type Line = (&'static str, &'static str, &'static str, i64, &'static str, Option<&'static str>);

/// The history every case searches.
const HISTORY: &[Line] = &[
    ("m1", "r1", "alice@example.com", 1_000, "We buy Bonds today", None),
    ("m2", "r1", "bob@example.com", 2_000, "bonds are boring", None),
    ("m3", "r1", "alice@example.com", 3_000, "Café meeting at noon", None),
    ("m4", "r1", "carol@example.com", 4_000, "我们明天去北京开会", None),
    ("m5", "r1", "bob@example.com", 5_000, "新款iPhone手机发布", None),
    ("m6", "r1", "alice@example.com", 6_000, "これはカタカナのテストです", None),
    ("m7", "r1", "bob@example.com", 7_000, "내일 회의는 취소되었습니다", None),
    ("m8", "r1", "carol@example.com", 8_000, "buy now, bonds later", None),
    ("m9", "r1", "alice@example.com", 9_000, "see attached", Some("Quarterly Bonds")),
    ("m10", "r2", "bob@example.com", 1_500, "BONDS in research", None),
    ("m11", "r2", "carol@example.com", 2_500, "北京大学の学生", None),
    ("m12", "r3", "alice@example.com", 3_500, "cafe au lait", None),
];

/// Writes the history the search cases use (three rooms, messages in several scripts).
pub async fn with_history(store: &dyn Store) {
    store.create_category(&category("c1", "Cat")).await.unwrap();
    for (id, name) in [("r1", "Deals"), ("r2", "Research"), ("r3", "Other")] {
        store.create_room(&room(id, name, "c1")).await.unwrap();
        let messages: Vec<MessageRecord> = HISTORY
            .iter()
            .filter(|m| m.1 == id)
            .enumerate()
            .map(|(i, &(mid, rid, author, ts, text, title))| MessageRecord {
                id: mid.to_owned(),
                room_id: rid.to_owned(),
                seq: i as i64 + 1,
                author: author.to_owned(),
                ts,
                text: text.to_owned(),
                story_title: title.map(str::to_owned),
                alert: false,
                client_id: None,
                replaced: false,
                file: None,
            })
            .collect();
        let last = messages.len() as i64;
        store.import_messages(id, &messages, last).await.unwrap();
    }
}

/// Appends 80 messages to `r3` of [`with_history`] at once, for [`finds_appended_messages`] to look for while the
/// backend indexes them: even ones read "alpha beta gamma zeta n{i}", odd ones "alpha delta zeta n{i}".
pub async fn append_for_indexing(store: &Arc<dyn Store>) {
    let appends: Vec<_> = (0..80)
        .map(|i| {
            let store = Arc::clone(store);
            let text =
                if i % 2 == 0 { format!("alpha beta gamma zeta n{i}") } else { format!("alpha delta zeta n{i}") };
            tokio::spawn(async move { store.append_message(post("r3", &format!("x{i}"), &text, None)).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
}

/// The messages of [`append_for_indexing`] are each found once by every kind of query (run it at every stage of
/// their indexing).
pub async fn finds_appended_messages(store: &Arc<dyn Store>) {
    // The rarest term drives; other terms may be indexed or not yet.
    let all = found_ids(store, "gamma zeta alpha", MatchMode::All, 7).await;
    assert_eq!(all.len(), 40, "{all:?}");
    assert_eq!(found_ids(store, "gamma delta", MatchMode::Any, 50).await.len(), 80);
    assert_eq!(found_ids(store, "beta gamma", MatchMode::Exact, 50).await.len(), 40);
    assert_eq!(found_ids(store, "n17", MatchMode::All, 50).await, ["x17"]);
}

/// Every result of a search (any author, room or time), `limit` per page, as message ids, each checked to come
/// once.
pub async fn found_ids(store: &Arc<dyn Store>, q: &str, mode: MatchMode, limit: u32) -> Vec<String> {
    ids(store, q, mode, false, SearchFilter::default(), limit).await
}

/// Every result of a search, page by page (`limit` per page), as message ids; checks that pages hold no
/// duplicates and that every page but the last is full.
async fn ids(
    store: &Arc<dyn Store>,
    q: &str,
    mode: MatchMode,
    cs: bool,
    filter: SearchFilter,
    limit: u32,
) -> Vec<String> {
    let query = TextQuery::parse("q", q, mode, cs).unwrap();
    let mut out: Vec<String> = vec![];
    let mut after = None;
    for _ in 0..100 {
        let request = SearchRequest { query: &query, filter: filter.clone(), after, limit };
        let page = search(store.as_ref(), &request).await.unwrap();
        assert!(page.found.len() <= limit as usize);
        assert!(page.total_estimate >= page.found.len() as u64, "{q}: estimate {}", page.total_estimate);
        for found in &page.found {
            assert!(!out.contains(&found.message.id), "{q}: {} twice", found.message.id);
            out.push(found.message.id.clone());
        }
        match page.next {
            Some(next) => {
                assert_eq!(page.found.len(), limit as usize, "{q}: a short page before the end");
                after = Some(next);
            }
            None => return out,
        }
    }
    panic!("{q}: paging does not end");
}

fn every() -> SearchFilter {
    SearchFilter::default()
}

pub async fn search_table(store: &Arc<dyn Store>) {
    with_history(store.as_ref()).await;
    use MatchMode::{All, Any, Exact};
    let rooms = |r: &[&str]| SearchFilter { rooms: Some(r.iter().map(|s| s.to_string()).collect()), ..every() };
    let authors = |a: &[&str]| SearchFilter { authors: Some(a.iter().map(|s| s.to_string()).collect()), ..every() };
    let dates = SearchFilter { from_ts: Some(1_500), to_ts: Some(8_000), ..every() };
    let cases: Vec<(&str, MatchMode, bool, SearchFilter, &[&str])> = vec![
        ("bonds", All, false, every(), &["m9", "m8", "m2", "m10", "m1"]),
        ("buy bonds", All, false, every(), &["m8", "m1"]),
        ("buy bonds", Exact, false, every(), &["m1"]),
        ("now bonds", Exact, false, every(), &["m8"]),
        ("buy boring", Any, false, every(), &["m8", "m2", "m1"]),
        ("Bonds", All, true, every(), &["m9", "m1"]),
        ("cafe", All, false, every(), &["m12", "m3"]),
        ("Café", All, true, every(), &["m3"]),
        ("bond", All, false, every(), &[]),
        ("北京", All, false, every(), &["m4", "m11"]),
        ("北京开会", All, false, every(), &["m4"]),
        ("京大", All, false, every(), &["m11"]),
        ("明天北京", All, false, every(), &[]),
        ("手机", All, false, every(), &["m5"]),
        ("iPhone手机", Exact, false, every(), &["m5"]),
        ("iphone", All, false, every(), &["m5"]),
        ("カタカナ", All, false, every(), &["m6"]),
        ("テスト", All, false, every(), &["m6"]),
        ("회의", All, false, every(), &["m7"]),
        ("대학", All, false, every(), &[]),
        ("bonds", All, false, authors(&["bob@example.com"]), &["m2", "m10"]),
        ("bonds", All, false, authors(&["bob@example.com", "alice@example.com"]), &["m9", "m2", "m10", "m1"]),
        ("bonds", All, false, authors(&[]), &[]),
        ("bonds", All, false, dates, &["m8", "m2", "m10"]),
        ("bonds", All, false, rooms(&["r2"]), &["m10"]),
        ("bonds", All, false, rooms(&["r1", "r3"]), &["m9", "m8", "m2", "m1"]),
        ("bonds", All, false, rooms(&[]), &[]),
        ("北京 cafe", Any, false, every(), &["m4", "m12", "m3", "m11"]),
        ("nothing", All, false, every(), &[]),
    ];
    for (q, mode, cs, filter, expected) in cases {
        for limit in [1, 2, 50] {
            let got = ids(store, q, mode, cs, filter.clone(), limit).await;
            assert_eq!(got, expected, "{q:?} {mode:?} case_sensitive={cs} {filter:?} limit={limit}");
        }
    }
    // A first page holding everything counts exactly.
    let query = TextQuery::parse("q", "bonds", All, false).unwrap();
    let page = search(store.as_ref(), &SearchRequest { query: &query, filter: every(), after: None, limit: 50 })
        .await
        .unwrap();
    assert_eq!((page.found.len(), page.total_estimate, page.next), (5, 5, None));
}

pub async fn search_follows_history(store: &Arc<dyn Store>) {
    with_history(store.as_ref()).await;
    let find = |q: &'static str| ids(store, q, MatchMode::All, false, every(), 50);
    // Replaced text is found, and what it replaced is not.
    assert_eq!(store.alter_messages("r1", &["m1".to_owned()], Some("now about gilts")).await.unwrap(), 1);
    assert_eq!(find("gilts").await, ["m1"]);
    assert_eq!(find("bonds").await, ["m9", "m8", "m2", "m10"]);
    // Removed messages are not.
    assert_eq!(store.alter_messages("r1", &["m2".to_owned()], None).await.unwrap(), 1);
    assert_eq!(find("boring").await, Vec::<String>::new());
    // A clear takes what it removed out of the index.
    assert_eq!(store.clear_room("r1", 4_000).await.unwrap(), 3);
    assert_eq!(find("北京").await, ["m11"]);
    assert_eq!(find("cafe").await, ["m12"]);
    assert_eq!(find("gilts").await, Vec::<String>::new());
    // So does deleting a room.
    store.delete_room("r2").await.unwrap();
    assert_eq!(find("北京").await, Vec::<String>::new());
    assert_eq!(find("bonds").await, ["m9", "m8"]);
    // New posts are found at once; posts not kept (chat history off) are not.
    store.append_message(post("r3", "n1", "live bonds 上海市", None)).await.unwrap();
    let unkept = crate::NewMessage { keep: false, ..post("r3", "n2", "unkept bonds", None) };
    store.append_message(unkept).await.unwrap();
    assert_eq!(find("bonds").await, ["n1", "m9", "m8"]);
    assert_eq!(find("上海").await, ["n1"]);
    assert_eq!(find("unkept").await, Vec::<String>::new());
    // A room created after another was deleted gets its own number: nothing of the old room leaks into it.
    store.create_room(&room("r4", "Fresh", "c1")).await.unwrap();
    assert_eq!(find("北京").await, Vec::<String>::new());
}

/// What a store built from [`with_history`] must find; for backends to check an index rebuilt when they open.
pub async fn finds_history(store: &Arc<dyn Store>) {
    assert_eq!(ids(store, "bonds", MatchMode::All, false, every(), 50).await, ["m9", "m8", "m2", "m10", "m1"]);
    assert_eq!(ids(store, "北京", MatchMode::All, false, every(), 50).await, ["m4", "m11"]);
}

/// A caller who reads a quiet room finds its messages holding a word that is common elsewhere, with work bounded
/// in postings: pages may be short before the end, but together they hold every match once, newest first.
pub async fn search_in_few_rooms_of_a_common_word(store: &Arc<dyn Store>) {
    store.create_category(&category("c1", "Cat")).await.unwrap();
    // More than a count looks at on either side of the quiet messages, whichever way a backend counts.
    let busy = 2 * (crate::search::COUNT_CAP as i64 + 1_000);
    let message = |room: &str, seq: i64, ts: i64, text: &str| MessageRecord {
        id: format!("{room}-{seq}"),
        room_id: room.to_owned(),
        seq,
        author: "alice@example.com".into(),
        ts,
        text: text.to_owned(),
        story_title: None,
        alert: false,
        client_id: None,
        replaced: false,
        file: None,
    };
    store.create_room(&room("quiet", "Quiet", "c1")).await.unwrap();
    let quiet: Vec<MessageRecord> =
        (1..=3).map(|seq| message("quiet", seq, busy + seq, &format!("common rare note {seq}"))).collect();
    store.import_messages("quiet", &quiet, 3).await.unwrap();
    // Half older and half newer than the quiet messages.
    store.create_room(&room("busy", "Busy", "c1")).await.unwrap();
    let many: Vec<MessageRecord> = (1..=busy)
        .map(|seq| message("busy", seq, if seq <= busy / 2 { seq } else { 2 * busy + seq }, "common chatter"))
        .collect();
    store.import_messages("busy", &many, busy).await.unwrap();

    let only_quiet = SearchFilter { rooms: Some(vec!["quiet".into()]), ..every() };
    for (q, limit) in [("common", 2), ("common", 50), ("common rare", 50), ("rare", 1)] {
        let query = TextQuery::parse("q", q, MatchMode::All, false).unwrap();
        let (mut found, mut after, mut pages) = (Vec::<String>::new(), None, 0);
        loop {
            let request = SearchRequest { query: &query, filter: only_quiet.clone(), after, limit };
            let page = search(store.as_ref(), &request).await.unwrap();
            pages += 1;
            assert!(page.found.len() <= limit as usize && pages < 50, "{q}: page {pages}");
            found.extend(page.found.iter().map(|f| f.message.id.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, ["quiet-3", "quiet-2", "quiet-1"], "{q} limit {limit}");
    }
    // Without the filter the newest matches come first, a full page with more to follow.
    let query = TextQuery::parse("q", "common", MatchMode::All, false).unwrap();
    let page = search(store.as_ref(), &SearchRequest { query: &query, filter: every(), after: None, limit: 50 })
        .await
        .unwrap();
    assert_eq!(page.found.len(), 50);
    assert_eq!(page.found[0].message.id, format!("busy-{busy}"));
    assert!(page.next.is_some() && page.total_estimate >= 50);
}
