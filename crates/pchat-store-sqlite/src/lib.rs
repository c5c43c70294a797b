//! Embedded SQLite backend of the pchat storage port (`mgc.db` in the data directory).
//!
//! Writes go through one writer thread ([`writer`]): it drains every queued write, runs each in its own savepoint
//! inside one transaction, commits once (one fsync under `synchronous=FULL`), publishes committed messages to the
//! event feed in commit order, and only then answers the callers. A second SQLite writer would only wait on the
//! database lock, so one writer loses nothing and lets concurrent posts share a commit (group commit).
//! Reads run on a small pool of WAL reader connections on blocking threads and never wait for the writer.

mod archive;
mod backlog;
mod directory;
mod feeds;
mod files;
mod migrations;
mod reader;
mod search;
mod sessions;
mod store;
mod writer;

use std::path::Path;

pub use archive::SqliteArchive;
pub use migrations::MigrationError;
pub use store::{OpenError, SqliteStore};

/// SQLite's `synchronous` setting for the chat database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a process crash; the last commits may be lost on power loss.
    Normal,
}

impl Durability {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            _ => None,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Whether the test failpoint `name` is set (`PCHAT_FAILPOINT`), for tests that break the writer on purpose.
pub(crate) fn failpoint(name: &str) -> bool {
    std::env::var("PCHAT_FAILPOINT").is_ok_and(|f| f == name)
}

/// Opens a connection with the settings every connection of this backend shares.
fn open_connection(path: &Path, durability: Durability) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pchat_store::conformance::Harness;

    use super::*;

    async fn fresh() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mgc.db"), Durability::Full).unwrap();
        Harness { store: Arc::new(store), guard: Box::new(dir) }
    }

    pchat_store::conformance_tests!(fresh());

    /// The bundled SQLite is compiled with the flags `.cargo/config.toml` gives it (syncs with `fdatasync`): the
    /// same cargo environment reaches libsqlite3-sys's build and this crate's, so a build without it fails here.
    #[test]
    fn the_bundled_sqlite_is_built_to_sync_with_fdatasync() {
        let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
        assert!(flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"), "LIBSQLITE3_FLAGS = {flags:?}");
    }

    /// A durable post writes the messages table and only the indexes a query uses (its id, its client id): the
    /// by-time and by-author indexes cost every post a page and no query read them; clearing a room walks the
    /// room's own key.
    #[test]
    fn a_message_is_written_to_the_indexes_queries_use_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        drop(SqliteStore::open(&path, Durability::Full).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        names.sort();
        assert_eq!(names, ["messages_client_id", "sqlite_autoindex_messages_1"], "indexes of messages");
        let plan: String = conn
            .query_row("EXPLAIN QUERY PLAN DELETE FROM messages WHERE room_id = 'r' AND ts <= 5", [], |r| r.get(3))
            .unwrap();
        assert!(plan.contains("PRIMARY KEY (room_id=?)"), "clearing a room walks {plan:?}");
    }

    /// Rooms' counters move from their rows to `room_counters` without losing one: a database made before keeps
    /// every room's `seq` going (a reset counter would reuse `seq`s), new and deleted rooms keep the table in step.
    #[tokio::test]
    async fn room_counters_carry_over_from_the_rooms_rows() {
        use pchat_store::Store as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            let before = &crate::migrations::MIGRATIONS[..crate::migrations::MIGRATIONS.len() - 1];
            crate::migrations::apply_list(&mut conn, before).unwrap();
            conn.execute_batch(
                "INSERT INTO categories (id, name, description, file_upload, chat_history, invitations, \
                 allowed_members, denied_members, creators) VALUES ('c', 'C', '', 0, 1, 0, '', '', ''); \
                 INSERT INTO rooms (id, name, description, category_id, privacy, room_type, invitations, disabled, \
                 members, managers, presenters, created_by, created_at, last_seq, last_ts, num) VALUES \
                 ('old', 'Old', '', 'c', 'open', 'normal', 'inherit', 0, '', '', '', 'a@example.com', 0, 41, \
                 4000000000000000, 1);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        assert_eq!(store.last_seq("old").await.unwrap(), 41);
        let appended = store.append_message(pchat_store::conformance::post("old", "m42", "hello", None)).await.unwrap();
        assert_eq!((appended.message.seq, appended.message.ts), (42, 4_000_000_000_000_000), "seq and ts go on");
        assert_eq!(store.last_seq("old").await.unwrap(), 42);
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert!(conn.prepare("SELECT last_seq FROM rooms").is_err(), "the rooms rows still hold a counter");
        store.delete_room("old").await.unwrap();
        let left: i64 = conn.query_row("SELECT count(*) FROM room_counters", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "a deleted room's counter stays");
        assert!(matches!(store.last_seq("old").await, Err(pchat_store::StoreError::NotFound)));
    }

    mod archive {
        use pchat_store::conformance::ArchiveHarness;

        use super::*;

        async fn fresh_archive() -> ArchiveHarness {
            let dir = tempfile::tempdir().unwrap();
            let archive = SqliteArchive::open(&dir.path().join("mgccomp.db")).unwrap();
            ArchiveHarness { archive: Arc::new(archive), guard: Box::new(dir) }
        }

        pchat_store::archive_conformance_tests!(fresh_archive());
    }

    /// Appends queue their postings until the batch commits; a replacement batched behind an append of the same
    /// message must still leave the index holding exactly the postings of the text that stands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postings_of_appends_follow_the_writes_batched_with_them() {
        use pchat_store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        let store = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        pchat_store::conformance::with_history(store.as_ref()).await;
        // A slow write first, so that every pair below queues behind it and commits in one batch.
        let slow = {
            let s = Arc::clone(&store);
            tokio::spawn(async move {
                s.write(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut pairs = vec![];
        for i in 0..100 {
            let s = Arc::clone(&store);
            pairs.push(tokio::spawn(async move {
                let id = format!("x{i}");
                let message = pchat_store::conformance::post("r3", &id, "alpha", None);
                let replacement = async {
                    tokio::task::yield_now().await;
                    s.alter_messages("r3", std::slice::from_ref(&id), Some(if i % 2 == 0 { "beta" } else { "alpha" }))
                        .await
                };
                let (appended, altered) = tokio::join!(s.append_message(message), replacement);
                appended.unwrap();
                (i % 2 == 0 && altered.unwrap() == 1) as i64
            }));
        }
        slow.await.unwrap().unwrap();
        let mut replaced = 0;
        for pair in pairs {
            replaced += pair.await.unwrap();
        }
        assert!(replaced > 0, "no replacement ran after its append");
        // A write that touches the index first puts the backlog into it; one that does not can never touch it.
        let refused = store.write(|c| crate::search::unindex_room(c, "r3", None)).await;
        assert!(matches!(refused, Err(pchat_store::StoreError::Unavailable(_))), "{refused:?}");
        store.write_indexed(|_| Ok(())).await.unwrap();
        assert!(store.backlog().load().is_empty());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let count = |term: &str| -> i64 {
            conn.query_row("SELECT count(*) FROM search_postings WHERE term = ?1", [term], |r| r.get(0)).unwrap()
        };
        assert_eq!((count("alpha"), count("beta")), (100 - replaced, replaced));
    }

    #[tokio::test]
    async fn reopens_with_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        {
            let store = SqliteStore::open(&path, Durability::Full).unwrap();
            pchat_store::Store::create_group(&store, "kept").await.unwrap();
        }
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        assert_eq!(pchat_store::Store::list_groups(&store).await.unwrap(), ["kept"]);
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, Durability::Full).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("newer"), "{err}");
    }

    /// Appended messages are found while their postings are in the writer's backlog, at every stage of its merge
    /// into the index (tests merge in chunks of 7 postings, so a message's terms are split between the index and
    /// the backlog), by every kind of query, each exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_see_the_backlog_at_every_stage_of_its_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("mgc.db"), Durability::Full).unwrap());
        let port: Arc<dyn pchat_store::Store> = store.clone();
        pchat_store::conformance::with_history(store.as_ref()).await;
        pchat_store::conformance::append_for_indexing(&port).await;
        let (mut with_backlog, mut rounds) = (0, 0);
        loop {
            let backlog = !store.backlog().load().is_empty();
            // The merge goes in term order, so `zeta` is often still in the backlog when `gamma` is in the index.
            pchat_store::conformance::finds_appended_messages(&port).await;
            rounds += 1;
            if backlog {
                with_backlog += 1;
            } else {
                break;
            }
            assert!(rounds < 10_000, "the backlog is never merged");
        }
        assert!(with_backlog > 0, "every search ran after the merge: the test proves nothing");
        let conn = rusqlite::Connection::open(dir.path().join("mgc.db")).unwrap();
        let pending: i64 = conn.query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 0, "merged messages stay pending");
        // The index split into parts by time (tests fill a part with 30 postings), and searches crossed them. (The
        // imported history's postings are merged in term order, so most of them share the part that was newest
        // when their merge began: a few parts, not one per 30 postings.)
        let parts: i64 = conn.query_row("SELECT count(*) FROM search_parts", [], |r| r.get(0)).unwrap();
        assert!(parts > 2, "{parts} parts");
        let misplaced: i64 = conn
            .query_row(
                "SELECT count(*) FROM search_postings p WHERE p.part != \
                 (SELECT max(part) FROM search_parts WHERE from_ts <= p.ts)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(misplaced, 0, "postings outside the part of their time");
    }

    /// An import's postings go through the writer's backlog; closing the store writes them into the index before
    /// it returns, so the file is complete for whoever opens it next (a server after `pchat convert`).
    #[tokio::test]
    async fn closing_the_store_writes_an_imports_backlog_out() {
        for attempt in 0.. {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mgc.db");
            let store = SqliteStore::open(&path, Durability::Normal).unwrap();
            pchat_store::conformance::with_history(&store).await;
            let unmerged = !store.backlog().load().is_empty();
            drop(store);
            if !unmerged {
                // Merged before the store closed (tests merge after 2 ms): try again.
                assert!(attempt < 100, "the backlog was always merged before the store closed");
                continue;
            }
            let conn = rusqlite::Connection::open(&path).unwrap();
            let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
            assert_eq!(count("SELECT count(*) FROM search_pending"), 0, "left pending at close");
            assert!(count("SELECT count(*) FROM search_postings") > 0, "no postings written");
            break;
        }
    }

    /// A database holding the search cases' history, closed again; the directory lives as long as the guard.
    async fn closed_history() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        pchat_store::conformance::with_history(&store).await;
        drop(store);
        (dir, path)
    }

    /// Postings still in the backlog when pchat stops without writing it out (a crash) are rebuilt from
    /// `search_pending` when the database opens.
    #[tokio::test]
    async fn messages_a_crash_left_unmerged_are_indexed_when_the_database_opens() {
        use pchat_core::text::MatchMode;
        use pchat_store::conformance::found_ids;
        let (_dir, path) = closed_history().await;
        // What a crash leaves: the message and its pending row committed, its postings only in memory.
        let conn = open_connection(&path, Durability::Full).unwrap();
        conn.execute_batch(
            "INSERT INTO messages (id, room_id, seq, author, ts, text, alert, replaced) \
             VALUES ('m99', 'r3', 2, 'alice@example.com', 9999, 'zebra crossing', 0, 0); \
             INSERT INTO search_pending (room_num, seq) SELECT num, 2 FROM rooms WHERE id = 'r3';",
        )
        .unwrap();
        drop(conn);
        let store = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        assert!(store.backlog().load().is_empty());
        let port: Arc<dyn pchat_store::Store> = store;
        assert_eq!(found_ids(&port, "zebra", MatchMode::All, 50).await, ["m99"]);
        assert_eq!(found_ids(&port, "zebra crossing", MatchMode::Exact, 50).await, ["m99"]);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let pending: i64 = conn.query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 0);
    }

    /// A database whose index is missing or was built by another tokenizer is indexed again when it opens.
    #[tokio::test]
    async fn the_search_index_is_rebuilt_when_it_is_stale() {
        let (_dir, path) = closed_history().await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DELETE FROM search_postings; UPDATE search_meta SET tokenizer = 0;").unwrap();
        drop(conn);
        let store: Arc<dyn pchat_store::Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        pchat_store::conformance::finds_history(&store).await;
    }

    /// A database whose name index is missing or was built by other terms is indexed again when it opens.
    #[tokio::test]
    async fn the_directory_index_is_rebuilt_when_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        let store: Arc<dyn pchat_store::Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        pchat_store::conformance::with_directory(&store).await;
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DELETE FROM directory_terms; UPDATE directory_meta SET version = 0;").unwrap();
        drop(conn);
        let store: Arc<dyn pchat_store::Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        pchat_store::conformance::finds_directory(&store).await;
    }
}
