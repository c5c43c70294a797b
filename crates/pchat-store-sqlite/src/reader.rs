//! A pool of read connections used on blocking threads. WAL lets them read while the writer commits.
//!
//! At most [`MAX_READERS`] reads run at once; more wait for a turn. Unbounded, a storm of thousands of clients
//! opened a connection per concurrent read (three descriptors each, its own page cache), until opening failed
//! for want of descriptors and reads were refused as unavailable; a machine's cores do not read faster with more.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pchat_store::{StoreError, StoreResult};
use rusqlite::Connection;

use crate::{Durability, open_connection};

/// Reads at once, and so connections open (each kept for reuse).
const MAX_READERS: usize = 16;

#[derive(Clone)]
pub(crate) struct Readers {
    path: PathBuf,
    durability: Durability,
    idle: Arc<Mutex<Vec<Connection>>>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, durability: Durability) -> Self {
        Self {
            path,
            durability,
            idle: Arc::new(Mutex::new(Vec::new())),
            turns: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
        }
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the read pool has closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let conn = match this.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&this.path, this.durability).map_err(crate::store::unavailable)?;
                    // The statements of the hot paths (posts, joins, callers, listings) stay prepared.
                    conn.set_prepared_statement_cache_capacity(64);
                    conn
                }
            };
            let result = f(&conn);
            if let Ok(mut idle) = this.idle.lock()
                && idle.len() < MAX_READERS
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}
