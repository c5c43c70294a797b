//! The embedded compliance archive, `mgccomp.db`: one connection, used on blocking threads one call at a time
//! (the archive is written by one worker and read by investigators; it never needs concurrency).

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pchat_store::compliance::{ChainAnchor, ChainKey, event_hash};
use pchat_store::{
    Archive, ArchivedEvent, EventQuery, ExportClaim, ExportCursor, ExportRequest, OutboxEvent, StoreError, StoreResult,
};
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
    async fn append(&self, pool: &str, events: &[OutboxEvent], key: Option<&ChainKey>) -> StoreResult<u64> {
        let (pool, events, key) = (pool.to_owned(), events.to_vec(), key.cloned());
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
                    let hash = event_hash(&pool, o.id, &o.event, &last, key.as_ref());
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

    async fn chain_head(&self, pool: &str) -> StoreResult<Option<(i64, String)>> {
        let pool = pool.to_owned();
        self.with(move |conn| {
            conn.query_row("SELECT id, hash FROM archive WHERE pool = ?1 ORDER BY id DESC LIMIT 1", [&pool], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
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

    async fn claim_export(&self, request: &ExportRequest) -> StoreResult<Option<ExportClaim>> {
        let r = request.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("INSERT INTO export_cursor (pool) VALUES (?1) ON CONFLICT DO NOTHING", [&r.pool])?;
            let (done_id, last_run_ms, pending, owner, lease_until) = tx.query_row(
                "SELECT done_id, last_run_ms, pending_to, pending_options, owner, lease_until \
                 FROM export_cursor WHERE pool = ?1",
                [&r.pool],
                |row| {
                    let pending = match (row.get::<_, Option<i64>>(2)?, row.get::<_, Option<String>>(3)?) {
                        (Some(to), Some(options)) => Some((to, options)),
                        _ => None,
                    };
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        pending,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                    ))
                },
            )?;
            let claim = match pending {
                Some((to_id, options)) => {
                    if !r.may_retake(owner.as_deref(), lease_until) {
                        return Ok(None);
                    }
                    ExportClaim { pool: r.pool.clone(), after_id: done_id, to_id, options, again: true }
                }
                None => {
                    if r.now_ms < last_run_ms + r.min_gap_ms {
                        return Ok(None);
                    }
                    let to_id: Option<i64> = tx.query_row(
                        "SELECT max(id) FROM (SELECT id FROM archive WHERE pool = ?1 AND id > ?2 ORDER BY id LIMIT ?3)",
                        params![r.pool, done_id, r.max_events],
                        |row| row.get(0),
                    )?;
                    let Some(to_id) = to_id else { return Ok(None) };
                    let options = r.options.clone();
                    ExportClaim { pool: r.pool.clone(), after_id: done_id, to_id, options, again: false }
                }
            };
            tx.execute(
                "UPDATE export_cursor SET pending_to = ?2, pending_options = ?3, owner = ?4, lease_until = ?5 \
                 WHERE pool = ?1",
                params![r.pool, claim.to_id, claim.options, r.owner, r.now_ms + r.lease_ms],
            )?;
            tx.commit()?;
            Ok(Some(claim))
        })
        .await
    }

    async fn finish_export(&self, pool: &str, to_id: i64, now_ms: i64) -> StoreResult<bool> {
        let pool = pool.to_owned();
        self.with(move |conn| {
            let n = conn.execute(
                "UPDATE export_cursor SET done_id = pending_to, last_run_ms = ?3, pending_to = NULL, \
                 pending_options = NULL, owner = NULL, lease_until = NULL WHERE pool = ?1 AND pending_to = ?2",
                params![pool, to_id, now_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn export_cursor(&self, pool: &str) -> StoreResult<ExportCursor> {
        let pool = pool.to_owned();
        self.with(move |conn| {
            let cursor = conn
                .query_row(
                    "SELECT done_id, last_run_ms, pending_to FROM export_cursor WHERE pool = ?1",
                    [&pool],
                    |row| Ok(ExportCursor { done_id: row.get(0)?, last_run_ms: row.get(1)?, pending_to: row.get(2)? }),
                )
                .optional()?;
            Ok(cursor.unwrap_or_default())
        })
        .await
    }

    async fn principal_ids(&self, addresses: &[String]) -> StoreResult<Vec<i64>> {
        let addresses = addresses.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(addresses.len());
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO principals (address) VALUES (?1) ON CONFLICT DO NOTHING")?;
                let mut select = tx.prepare_cached("SELECT id FROM principals WHERE address = ?1")?;
                for a in &addresses {
                    insert.execute([a])?;
                    ids.push(select.query_row([a], |row| row.get(0))?);
                }
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    async fn purge(&self, pool: &str, before_ts: i64, max_id: i64) -> StoreResult<u64> {
        let pool = pool.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // The purged prefix ends before the first event that must stay.
            let first_kept: Option<i64> = tx.query_row(
                "SELECT min(id) FROM archive WHERE pool = ?1 AND (ts >= ?2 OR id > ?3)",
                params![pool, before_ts, max_id],
                |row| row.get(0),
            )?;
            let end = first_kept.map_or(max_id, |id| (id - 1).min(max_id));
            let last: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, hash FROM archive WHERE pool = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1",
                    params![pool, end],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((last_id, hash)) = last else { return Ok(0) };
            let n = tx.execute("DELETE FROM archive WHERE pool = ?1 AND id <= ?2", params![pool, last_id])?;
            tx.execute(
                "INSERT INTO chain_anchor (pool, purged_to, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (pool) DO UPDATE SET purged_to = excluded.purged_to, hash = excluded.hash",
                params![pool, last_id, hash],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn chain_anchor(&self, pool: &str) -> StoreResult<ChainAnchor> {
        let pool = pool.to_owned();
        self.with(move |conn| {
            let anchor = conn
                .query_row("SELECT purged_to, hash FROM chain_anchor WHERE pool = ?1", [&pool], |row| {
                    Ok(ChainAnchor { purged_to: row.get(0)?, hash: row.get(1)? })
                })
                .optional()?;
            Ok(anchor.unwrap_or_default())
        })
        .await
    }
}
