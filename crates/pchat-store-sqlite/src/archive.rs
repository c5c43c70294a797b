//! The embedded compliance archive, `mgccomp.db`: one connection, used on blocking threads one call at a time
//! (the archive is written by one worker and read by investigators; it never needs concurrency).

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pchat_store::compliance::event_hash;
use pchat_store::{Archive, ArchivedEvent, EventQuery, OutboxEvent, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};

use crate::migrations::{self, ARCHIVE_MIGRATIONS};
use crate::store::{EVENT_COLUMNS, OpenError, event_at, unavailable};
use crate::{Durability, open_connection};

pub struct SqliteArchive {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteArchive {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let shown = path.display().to_string();
        let mut conn = open_connection(path, Durability::Full)
            .map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        migrations::apply_list(&mut conn, ARCHIVE_MIGRATIONS)
            .map_err(|source| OpenError::Migrate { path: shown, source })?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| StoreError::Unavailable("archive connection poisoned".into()))?;
            f(&mut conn).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

fn archived_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArchivedEvent> {
    Ok(ArchivedEvent {
        id: r.get(0)?,
        pool: r.get(1)?,
        outbox_id: r.get(2)?,
        prev_hash: r.get(3)?,
        hash: r.get(4)?,
        event: event_at(r, 5)?,
    })
}

#[async_trait]
impl Archive for SqliteArchive {
    async fn append(&self, pool: &str, events: &[OutboxEvent]) -> StoreResult<u64> {
        let (pool, events) = (pool.to_owned(), events.to_vec());
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut last: String = tx
                .query_row("SELECT last_hash FROM chain_head WHERE pool = ?1", [&pool], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            let mut appended = 0;
            {
                let mut seen = tx.prepare_cached("SELECT 1 FROM archive WHERE pool = ?1 AND outbox_id = ?2")?;
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO archive (pool, outbox_id, prev_hash, hash, {EVENT_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))?;
                for o in &events {
                    if seen.exists(params![pool, o.id])? {
                        continue;
                    }
                    let hash = event_hash(&pool, o.id, &o.event, &last);
                    let e = &o.event;
                    insert.execute(params![
                        pool, o.id, last, hash, e.kind, e.ts, e.room_id, e.actor, e.content, e.details
                    ])?;
                    last = hash;
                    appended += 1;
                }
            }
            tx.execute(
                "INSERT INTO chain_head (pool, last_hash) VALUES (?1, ?2) \
                 ON CONFLICT (pool) DO UPDATE SET last_hash = excluded.last_hash",
                params![pool, last],
            )?;
            tx.commit()?;
            Ok(appended)
        })
        .await
    }

    async fn events(&self, q: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
        let q = q.clone();
        self.with(move |conn| {
            let sql = format!(
                "SELECT id, pool, outbox_id, prev_hash, hash, {EVENT_COLUMNS} FROM archive WHERE id > ?1 AND (?2 IS NULL OR pool = ?2) \
                 AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts <= ?4) AND (?5 IS NULL OR room_id = ?5) \
                 AND (?6 IS NULL OR actor = ?6) AND (?7 IS NULL OR kind = ?7) ORDER BY id LIMIT ?8"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![q.after_id, q.pool, q.from_ts, q.to_ts, q.room_id, q.actor, q.kind, q.limit],
                archived_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn pools(&self) -> StoreResult<Vec<String>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT pool FROM chain_head ORDER BY pool")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}
