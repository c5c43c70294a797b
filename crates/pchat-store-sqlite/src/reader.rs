//! A pool of read connections used on blocking threads. WAL lets them read while the writer commits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pchat_store::{StoreError, StoreResult};
use rusqlite::Connection;

use crate::{Durability, open_connection};

/// Idle connections kept for reuse; more are opened under load and closed when the pool is full.
const MAX_IDLE: usize = 8;

#[derive(Clone)]
pub(crate) struct Readers {
    path: PathBuf,
    durability: Durability,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, durability: Durability) -> Self {
        Self { path, durability, idle: Arc::new(Mutex::new(Vec::new())) }
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match this.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(conn) => conn,
                None => open_connection(&this.path, this.durability).map_err(crate::store::unavailable)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = this.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}
