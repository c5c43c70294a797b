//! Embedded SQLite backend of the pchat storage port (`mgc.db` in the data directory).
//!
//! Writes go through one writer thread ([`writer`]): it drains every queued write, runs each in its own savepoint
//! inside one transaction, commits once (one fsync under `synchronous=FULL`), publishes committed messages to the
//! event feed in commit order, and only then answers the callers. A second SQLite writer would only wait on the
//! database lock, so one writer loses nothing and lets concurrent posts share a commit (group commit).
//! Reads run on a small pool of WAL reader connections on blocking threads and never wait for the writer.

mod archive;
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
        use pchat_store::{NewMessage, Store};
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
                let message = NewMessage {
                    id: id.clone(),
                    room_id: "r3".into(),
                    author: "alice@example.com".into(),
                    text: "alpha".into(),
                    story_title: None,
                    alert: false,
                    client_id: None,
                    keep: true,
                    capture: false,
                    file: None,
                };
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

    /// A database whose index is missing or was built by another tokenizer is indexed again when it opens.
    #[tokio::test]
    async fn the_search_index_is_rebuilt_when_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgc.db");
        {
            let store = SqliteStore::open(&path, Durability::Full).unwrap();
            pchat_store::conformance::with_history(&store).await;
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DELETE FROM search_postings; UPDATE search_meta SET tokenizer = 0;").unwrap();
        drop(conn);
        let store: Arc<dyn pchat_store::Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        pchat_store::conformance::finds_history(&store).await;
    }
}
