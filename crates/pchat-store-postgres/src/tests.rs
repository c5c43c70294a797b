//! The conformance suite on a real PostgreSQL server (`PCHAT_TEST_POSTGRES_URL`, by default the local one on
//! 127.0.0.1:5432): each test in a database of its own with a unique name, dropped afterwards. There is no
//! fallback: without a server these tests fail.

use std::sync::Arc;

use pchat_store::conformance::Harness;
use pchat_store::{NewMessage, Store};
use tokio_postgres::NoTls;

use super::PgStore;
use crate::testing::TempDatabase;

async fn fresh() -> Harness {
    let (database, config) = TempDatabase::create().await;
    let store = PgStore::connect_with(config, database.name.clone()).await.unwrap();
    Harness { store: Arc::new(store), guard: Box::new(database) }
}

pchat_store::conformance_tests!(fresh());

mod archive {
    use pchat_store::conformance::ArchiveHarness;

    use super::*;
    use crate::PgArchive;

    /// The archive in a database of its own.
    async fn separate() -> ArchiveHarness {
        let (database, _) = TempDatabase::create().await;
        let archive = PgArchive::connect(&database.url()).await.unwrap();
        ArchiveHarness { archive: Arc::new(archive), guard: Box::new(database) }
    }

    pchat_store::archive_conformance_tests!(separate());

    mod in_the_chat_database {
        use super::*;

        async fn shared() -> ArchiveHarness {
            let (database, config) = TempDatabase::create().await;
            let store = PgStore::connect_with(config, database.name.clone()).await.unwrap();
            ArchiveHarness { archive: Arc::new(store), guard: Box::new(database) }
        }

        pchat_store::archive_conformance_tests!(shared());
    }
}

/// Two stores on one database stand for two servers of a pool: their posts to one room interleave, and `seq`
/// stays gap-free and ordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_gap_free_sequence() {
    let (database, config) = TempDatabase::create().await;
    let first = Arc::new(PgStore::connect_with(config.clone(), database.name.clone()).await.unwrap());
    let second = Arc::new(PgStore::connect_with(config, database.name.clone()).await.unwrap());
    pchat_store::conformance::users(&(first.clone() as Arc<dyn Store>)).await;
    let category = pchat_store::CategoryRecord {
        id: "c".into(),
        name: "C".into(),
        description: String::new(),
        file_upload: false,
        chat_history: true,
        invitations: false,
        allowed_members: vec![],
        denied_members: vec![],
        creators: vec![],
        version: 1,
    };
    first.create_category(&category).await.unwrap();
    let room = pchat_store::RoomRecord {
        id: "r".into(),
        name: "R".into(),
        description: String::new(),
        category_id: "c".into(),
        privacy: pchat_core::Privacy::Open,
        room_type: pchat_core::RoomType::Normal,
        invitations: pchat_core::Invitations::Inherit,
        disabled: false,
        addin: None,
        members: vec![],
        managers: vec![],
        presenters: vec![],
        created_by: "x".into(),
        created_at: 0,
        version: 1,
    };
    first.create_room(&room).await.unwrap();
    let mut tasks = vec![];
    for (server, store) in [first.clone(), second.clone()].into_iter().enumerate() {
        for writer in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = vec![];
                for n in 0..50 {
                    let id = format!("s{server}-w{writer}-{n}");
                    let message = NewMessage {
                        id: id.clone(),
                        room_id: "r".into(),
                        author: "a@example.com".into(),
                        text: "t".into(),
                        story_title: None,
                        alert: false,
                        client_id: Some(id),
                        keep: true,
                        capture: false,
                        file: None,
                    };
                    seqs.push(store.append_message(message).await.unwrap().message.seq);
                }
                seqs
            }));
        }
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<i64>>());
    drop((first, second));
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_pchat() {
    let (database, config) = TempDatabase::create().await;
    drop(PgStore::connect_with(config.clone(), database.name.clone()).await.unwrap());
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("INSERT INTO pchat_schema (version) VALUES (999)").await.unwrap();
    let err =
        PgStore::connect_with(config, database.name.clone()).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("newer"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_with_the_password_hidden() {
    let err = PgStore::connect("postgres://pchat:secret@127.0.0.1:1/mgc")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cannot connect to postgres://pchat:***@127.0.0.1:1/mgc"), "{err}");
    assert!(!err.contains("secret"));
}

/// Pooled connections run without just-in-time compilation (see `SESSION_OPTIONS`), and options in the
/// operator's URL still apply after pchat's own.
#[tokio::test]
async fn pooled_connections_run_without_jit_and_keep_the_operators_options() {
    let (database, mut config) = TempDatabase::create().await;
    config.options("-c statement_timeout=4321");
    let store = PgStore::connect_with(config, database.name.clone()).await.unwrap();
    let client = store.client().await.unwrap();
    let jit: String = client.query_one("SHOW jit", &[]).await.unwrap().get(0);
    assert_eq!(jit, "off");
    let timeout: String = client.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(timeout, "4321ms");
    drop(client);
    drop(store);
}

#[test]
fn redacts_passwords() {
    assert_eq!(super::redact("postgres://u:secret@db:5432/mgc"), "postgres://u:***@db:5432/mgc");
    assert_eq!(super::redact("postgres://db/mgc"), "postgres://db/mgc");
}

/// A database whose index is missing or was built by another tokenizer is indexed again when a server connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_is_rebuilt_when_it_is_stale() {
    let (database, config) = TempDatabase::create().await;
    {
        let store = PgStore::connect_with(config.clone(), database.name.clone()).await.unwrap();
        pchat_store::conformance::with_history(&store).await;
    }
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("DELETE FROM search_postings; UPDATE search_meta SET tokenizer = 0;").await.unwrap();
    let store: Arc<dyn Store> = Arc::new(PgStore::connect_with(config, database.name.clone()).await.unwrap());
    pchat_store::conformance::finds_history(&store).await;
}

/// A database whose name index is missing or was built by other terms is indexed again when a server connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_index_is_rebuilt_when_it_is_stale() {
    let (database, config) = TempDatabase::create().await;
    {
        let store: Arc<dyn Store> =
            Arc::new(PgStore::connect_with(config.clone(), database.name.clone()).await.unwrap());
        pchat_store::conformance::with_directory(&store).await;
    }
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("DELETE FROM directory_terms; UPDATE directory_meta SET version = 0;").await.unwrap();
    let store: Arc<dyn Store> = Arc::new(PgStore::connect_with(config, database.name.clone()).await.unwrap());
    pchat_store::conformance::finds_directory(&store).await;
}

/// A store on a database of its own holding the search cases' history, its indexer paused, the store as the port,
/// and a plain connection to the database.
async fn paused_history() -> (TempDatabase, Arc<PgStore>, Arc<dyn Store>, tokio_postgres::Client) {
    let (database, config) = TempDatabase::create().await;
    let store = Arc::new(PgStore::connect_with(config.clone(), database.name.clone()).await.unwrap());
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    pchat_store::conformance::with_history(store.as_ref()).await;
    store.pending.pause(true).await;
    (database, Arc::clone(&store), store, client)
}

/// How many messages wait in the search index's queue.
async fn pending_rows(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM search_pending", &[]).await.unwrap().get(0)
}

/// Appended messages are found while they wait in the indexer's queue, and at every stage of its work (tests index
/// three messages per transaction), by every kind of query, each exactly once; the indexer takes each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_see_pending_messages_at_every_stage_of_indexing() {
    let (_database, store, port, client) = paused_history().await;
    pchat_store::conformance::append_for_indexing(&port).await;
    assert_eq!(pending_rows(&client).await, 80);
    // One batch at a time (three messages in tests), searching after each.
    let mut batches = 0;
    loop {
        pchat_store::conformance::finds_appended_messages(&port).await;
        if store.index_batch().await == 0 {
            break;
        }
        batches += 1;
    }
    assert_eq!(batches, 27);
    assert_eq!(pending_rows(&client).await, 0);
    assert_index_matches_messages(&client).await;
}

/// While the indexer is behind, posts are indexed in their own transaction and queue nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_index_themselves_while_the_indexer_is_behind() {
    // Paused first: a batch in flight ends (and says whether it was full) before the test says "behind".
    let (_database, store, port, client) = paused_history().await;
    store.pending.set_behind(true);
    pchat_store::conformance::append_for_indexing(&port).await;
    assert_eq!(pending_rows(&client).await, 0);
    pchat_store::conformance::finds_appended_messages(&port).await;
    assert_index_matches_messages(&client).await;
}

/// Replacing, removing and clearing messages while they are pending, or while the indexer holds them, leaves the
/// index exactly what the messages say: replaced text is found, removed text is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_pending_messages_leave_the_index_exact() {
    use pchat_core::text::MatchMode;
    use pchat_store::conformance::found_ids;
    let (_database, store, port, client) = paused_history().await;
    pchat_store::conformance::append_for_indexing(&port).await;
    // Held in the queue: x0-x9 replaced, x10-x19 removed.
    for i in 0..20 {
        let replacement = format!("omega n{i}");
        let ids = [format!("x{i}")];
        let changed = port.alter_messages("r3", &ids, (i < 10).then_some(replacement.as_str())).await.unwrap();
        assert_eq!(changed, 1);
    }
    assert_eq!(pending_rows(&client).await, 60);
    assert_eq!(found_ids(&port, "omega", MatchMode::All, 50).await.len(), 10);
    assert!(found_ids(&port, "n3", MatchMode::All, 50).await == ["x3"]);
    assert!(found_ids(&port, "n13", MatchMode::All, 50).await.is_empty());
    assert!(found_ids(&port, "beta n4", MatchMode::All, 50).await.is_empty());
    // While the indexer works through the rest: x20-x49 replaced, x50-x59 removed, one at a time.
    store.pending.pause(false).await;
    for i in 20..60 {
        let replacement = format!("omega n{i}");
        let ids = [format!("x{i}")];
        port.alter_messages("r3", &ids, (i < 50).then_some(replacement.as_str())).await.unwrap();
    }
    let mut rounds = 0;
    while pending_rows(&client).await > 0 {
        rounds += 1;
        assert!(rounds < 1_000, "the queue is never indexed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(found_ids(&port, "omega", MatchMode::All, 50).await.len(), 40);
    // Of the even messages, x60-x78 still read "alpha beta gamma".
    assert_eq!(found_ids(&port, "beta gamma", MatchMode::Exact, 50).await.len(), 10);
    assert!(found_ids(&port, "n55", MatchMode::All, 50).await.is_empty());
    assert_index_matches_messages(&client).await;
    // A clear of everything takes what is pending and what is indexed.
    store.pending.pause(true).await;
    for i in 0..5 {
        port.append_message(pchat_store::conformance::post("r3", &format!("y{i}"), "alpha psi", None)).await.unwrap();
    }
    assert_eq!(pending_rows(&client).await, 5);
    assert_eq!(found_ids(&port, "psi", MatchMode::All, 50).await.len(), 5);
    assert!(port.clear_room("r3", i64::MAX).await.unwrap() > 60);
    assert_eq!(pending_rows(&client).await, 0);
    assert!(found_ids(&port, "alpha", MatchMode::All, 50).await.is_empty());
    assert_index_matches_messages(&client).await;
}

/// The postings in the table are exactly the terms of the messages (none pending).
async fn assert_index_matches_messages(client: &tokio_postgres::Client) {
    let mut expected: Vec<(String, i64, i64, i64)> = vec![];
    let rows = client
        .query("SELECT r.num, m.ts, m.seq, m.text, m.story_title FROM messages m JOIN rooms r ON r.id = m.room_id", &[])
        .await
        .unwrap();
    for row in rows {
        let (num, ts, seq, text, title): (i64, i64, i64, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        expected.extend(pchat_core::text::index_terms(&text, title.as_deref()).into_iter().map(|t| (t, ts, num, seq)));
    }
    expected.sort();
    expected.dedup();
    let actual: Vec<(String, i64, i64, i64)> = client
        .query(
            "SELECT term, ts, room_num, seq FROM search_postings ORDER BY term COLLATE \"C\", ts, room_num, seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(actual.len(), expected.len());
    assert!(actual == expected, "the index differs from the messages");
}
