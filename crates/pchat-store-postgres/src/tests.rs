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
