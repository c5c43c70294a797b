//! The compliance archive on PostgreSQL: in the chat database ([`PgStore`] implements [`Archive`], following a
//! failover like everything else) or in a database of its own ([`PgArchive`], `compliance.database_url`).
//! Appends to one pool's chain are serialized by locking the pool's chain head row, so every server of a pool
//! can run a worker; each outbox event is archived once (`UNIQUE (pool, outbox_id)` and a check under the lock).

use async_trait::async_trait;
use deadpool_postgres::Object;
use deadpool_postgres::Pool;
use pchat_store::compliance::{ChainAnchor, ChainKey, event_hash};
use pchat_store::{
    Archive, ArchivedEvent, EventQuery, ExportClaim, ExportCursor, ExportRequest, OutboxEvent, StoreResult,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::migrations;
use crate::store::{
    EVENT_COLUMNS, EventArrays, OpenError, PgStore, build_pool, col, event_array_args, event_at, parse_url, redact,
    unavailable,
};

/// An archive in a database of its own.
pub struct PgArchive {
    pool: Pool,
}

impl PgArchive {
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        let shown = redact(url);
        let pool = build_pool(parse_url(url)?, 4, &shown)?;
        let mut client =
            pool.get().await.map_err(|e| OpenError::Connect { url: shown.clone(), message: e.to_string() })?;
        migrations::apply_archive(&mut client).await.map_err(|source| OpenError::Migrate { url: shown, source })?;
        drop(client);
        Ok(Self { pool })
    }
}

impl PgArchive {
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(unavailable)
    }
}

/// `Archive` over the functions below, for a type with `async fn client(&self) -> StoreResult<Object>`.
macro_rules! archive_on_client {
    ($type:ty) => {
        #[async_trait]
        impl Archive for $type {
            async fn append(&self, pool: &str, events: &[OutboxEvent], key: Option<&ChainKey>) -> StoreResult<u64> {
                append(&mut self.client().await?, pool, events, key).await
            }

            async fn events(&self, query: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
                events(&self.client().await?, query).await
            }

            async fn pools(&self) -> StoreResult<Vec<String>> {
                pools(&self.client().await?).await
            }

            async fn chain_head(&self, pool: &str) -> StoreResult<Option<(i64, String)>> {
                chain_head(&self.client().await?, pool).await
            }

            async fn claim_export(&self, request: &ExportRequest) -> StoreResult<Option<ExportClaim>> {
                claim_export(&mut self.client().await?, request).await
            }

            async fn finish_export(&self, pool: &str, to_id: i64, now_ms: i64) -> StoreResult<bool> {
                finish_export(&self.client().await?, pool, to_id, now_ms).await
            }

            async fn export_cursor(&self, pool: &str) -> StoreResult<ExportCursor> {
                export_cursor(&self.client().await?, pool).await
            }

            async fn principal_ids(&self, addresses: &[String]) -> StoreResult<Vec<i64>> {
                principal_ids(&self.client().await?, addresses).await
            }

            async fn purge(&self, pool: &str, before_ts: i64, max_id: i64) -> StoreResult<u64> {
                purge(&mut self.client().await?, pool, before_ts, max_id).await
            }

            async fn chain_anchor(&self, pool: &str) -> StoreResult<ChainAnchor> {
                chain_anchor(&self.client().await?, pool).await
            }
        }
    };
}

archive_on_client!(PgArchive);
archive_on_client!(PgStore);

async fn append(client: &mut Object, pool: &str, events: &[OutboxEvent], key: Option<&ChainKey>) -> StoreResult<u64> {
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("INSERT INTO compliance_chain_head (pool, last_hash) VALUES ($1, '') ON CONFLICT DO NOTHING", &[&pool])
        .await
        .map_err(unavailable)?;
    let mut last: String = tx
        .query_one("SELECT last_hash FROM compliance_chain_head WHERE pool = $1 FOR UPDATE", &[&pool])
        .await
        .map_err(unavailable)?
        .get(0);
    let ids: Vec<i64> = events.iter().map(|o| o.id).collect();
    let archived: std::collections::HashSet<i64> = tx
        .query("SELECT outbox_id FROM compliance_archive WHERE pool = $1 AND outbox_id = ANY($2)", &[&pool, &ids])
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let fresh: Vec<&OutboxEvent> = events.iter().filter(|o| !archived.contains(&o.id)).collect();
    let mut prevs = Vec::with_capacity(fresh.len());
    let mut hashes = Vec::with_capacity(fresh.len());
    for o in &fresh {
        let hash = event_hash(pool, o.id, &o.event, &last, key);
        prevs.push(std::mem::replace(&mut last, hash.clone()));
        hashes.push(hash);
    }
    if !fresh.is_empty() {
        let outbox_ids: Vec<i64> = fresh.iter().map(|o| o.id).collect();
        let arrays = EventArrays::of(fresh.iter().map(|o| &o.event));
        // unnest zips the arrays and keeps their order, so archive ids follow the chain.
        let sql = format!(
            "INSERT INTO compliance_archive (pool, outbox_id, prev_hash, hash, {EVENT_COLUMNS}) \
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], {})",
            event_array_args(5)
        );
        let head: [&(dyn ToSql + Sync); 4] = [&pool, &outbox_ids, &prevs, &hashes];
        let params: Vec<&(dyn ToSql + Sync)> = head.into_iter().chain(arrays.params()).collect();
        tx.execute(&sql, &params).await.map_err(unavailable)?;
        tx.execute("UPDATE compliance_chain_head SET last_hash = $2 WHERE pool = $1", &[&pool, &last])
            .await
            .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(fresh.len() as u64)
}

fn archived_from_row(r: &Row) -> StoreResult<ArchivedEvent> {
    Ok(ArchivedEvent {
        id: col(r, 0)?,
        pool: col(r, 1)?,
        outbox_id: col(r, 2)?,
        prev_hash: col(r, 3)?,
        hash: col(r, 4)?,
        event: event_at(r, 5)?,
    })
}

async fn events(client: &Object, q: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
    let sql = format!(
        "SELECT id, pool, outbox_id, prev_hash, hash, {EVENT_COLUMNS} FROM compliance_archive WHERE id > $1 AND ($2::text IS NULL OR pool = $2) \
         AND ($3::bigint IS NULL OR ts >= $3) AND ($4::bigint IS NULL OR ts <= $4) \
         AND ($5::text IS NULL OR room_id = $5) AND ($6::text IS NULL OR actor = $6) \
         AND ($7::text IS NULL OR kind = $7) ORDER BY id LIMIT $8"
    );
    let rows = client
        .query(&sql, &[&q.after_id, &q.pool, &q.from_ts, &q.to_ts, &q.room_id, &q.actor, &q.kind, &i64::from(q.limit)])
        .await
        .map_err(unavailable)?;
    rows.iter().map(archived_from_row).collect()
}

async fn chain_head(client: &Object, pool: &str) -> StoreResult<Option<(i64, String)>> {
    let sql = "SELECT id, hash FROM compliance_archive WHERE pool = $1 ORDER BY id DESC LIMIT 1";
    let row = client.query_opt(sql, &[&pool]).await.map_err(unavailable)?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

async fn pools(client: &Object) -> StoreResult<Vec<String>> {
    let rows = client.query("SELECT pool FROM compliance_chain_head ORDER BY pool", &[]).await.map_err(unavailable)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn claim_export(client: &mut Object, r: &ExportRequest) -> StoreResult<Option<ExportClaim>> {
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("INSERT INTO compliance_export_cursor (pool) VALUES ($1) ON CONFLICT DO NOTHING", &[&r.pool])
        .await
        .map_err(unavailable)?;
    let row = tx
        .query_one(
            "SELECT done_id, last_run_ms, pending_to, pending_options, owner, lease_until \
             FROM compliance_export_cursor WHERE pool = $1 FOR UPDATE",
            &[&r.pool],
        )
        .await
        .map_err(unavailable)?;
    let (done_id, last_run_ms): (i64, i64) = (col(&row, 0)?, col(&row, 1)?);
    let pending: (Option<i64>, Option<String>) = (col(&row, 2)?, col(&row, 3)?);
    let claim = match pending {
        (Some(to_id), Some(options)) => {
            let (owner, lease_until): (Option<String>, Option<i64>) = (col(&row, 4)?, col(&row, 5)?);
            if !r.may_retake(owner.as_deref(), lease_until) {
                return Ok(None);
            }
            ExportClaim { pool: r.pool.clone(), after_id: done_id, to_id, options, again: true }
        }
        _ => {
            if r.now_ms < last_run_ms + r.min_gap_ms {
                return Ok(None);
            }
            let to_id: Option<i64> = tx
                .query_one(
                    "SELECT max(id) FROM (SELECT id FROM compliance_archive WHERE pool = $1 AND id > $2 \
                     ORDER BY id LIMIT $3) AS next",
                    &[&r.pool, &done_id, &i64::from(r.max_events)],
                )
                .await
                .map_err(unavailable)?
                .get(0);
            let Some(to_id) = to_id else { return Ok(None) };
            ExportClaim { pool: r.pool.clone(), after_id: done_id, to_id, options: r.options.clone(), again: false }
        }
    };
    tx.execute(
        "UPDATE compliance_export_cursor SET pending_to = $2, pending_options = $3, owner = $4, lease_until = $5 \
         WHERE pool = $1",
        &[&r.pool, &claim.to_id, &claim.options, &r.owner, &(r.now_ms + r.lease_ms)],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Some(claim))
}

async fn finish_export(client: &Object, pool: &str, to_id: i64, now_ms: i64) -> StoreResult<bool> {
    let n = client
        .execute(
            "UPDATE compliance_export_cursor SET done_id = pending_to, last_run_ms = $3, pending_to = NULL, \
             pending_options = NULL, owner = NULL, lease_until = NULL WHERE pool = $1 AND pending_to = $2",
            &[&pool, &to_id, &now_ms],
        )
        .await
        .map_err(unavailable)?;
    Ok(n == 1)
}

async fn export_cursor(client: &Object, pool: &str) -> StoreResult<ExportCursor> {
    let row = client
        .query_opt("SELECT done_id, last_run_ms, pending_to FROM compliance_export_cursor WHERE pool = $1", &[&pool])
        .await
        .map_err(unavailable)?;
    match row {
        Some(r) => Ok(ExportCursor { done_id: col(&r, 0)?, last_run_ms: col(&r, 1)?, pending_to: col(&r, 2)? }),
        None => Ok(ExportCursor::default()),
    }
}

async fn principal_ids(client: &Object, addresses: &[String]) -> StoreResult<Vec<i64>> {
    client
        .execute(
            "INSERT INTO compliance_principals (address) SELECT DISTINCT a FROM unnest($1::text[]) AS a \
             ORDER BY a ON CONFLICT DO NOTHING",
            &[&addresses],
        )
        .await
        .map_err(unavailable)?;
    let rows = client
        .query("SELECT address, id FROM compliance_principals WHERE address = ANY($1)", &[&addresses])
        .await
        .map_err(unavailable)?;
    let ids: std::collections::HashMap<String, i32> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    addresses
        .iter()
        .map(|a| ids.get(a).map(|id| i64::from(*id)).ok_or_else(|| unavailable(format!("no principal id for {a}"))))
        .collect()
}

async fn purge(client: &mut Object, pool: &str, before_ts: i64, max_id: i64) -> StoreResult<u64> {
    let tx = client.transaction().await.map_err(unavailable)?;
    // Serialized with appends by the chain head's lock.
    tx.execute("SELECT 1 FROM compliance_chain_head WHERE pool = $1 FOR UPDATE", &[&pool])
        .await
        .map_err(unavailable)?;
    let first_kept: Option<i64> = tx
        .query_one(
            "SELECT min(id) FROM compliance_archive WHERE pool = $1 AND (ts >= $2 OR id > $3)",
            &[&pool, &before_ts, &max_id],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    let end = first_kept.map_or(max_id, |id| (id - 1).min(max_id));
    let last = tx
        .query_opt(
            "SELECT id, hash FROM compliance_archive WHERE pool = $1 AND id <= $2 ORDER BY id DESC LIMIT 1",
            &[&pool, &end],
        )
        .await
        .map_err(unavailable)?;
    let Some(last) = last else { return Ok(0) };
    let (last_id, hash): (i64, String) = (col(&last, 0)?, col(&last, 1)?);
    let n = tx
        .execute("DELETE FROM compliance_archive WHERE pool = $1 AND id <= $2", &[&pool, &last_id])
        .await
        .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO compliance_chain_anchor (pool, purged_to, hash) VALUES ($1, $2, $3) \
         ON CONFLICT (pool) DO UPDATE SET purged_to = excluded.purged_to, hash = excluded.hash",
        &[&pool, &last_id, &hash],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(n)
}

async fn chain_anchor(client: &Object, pool: &str) -> StoreResult<ChainAnchor> {
    let row = client
        .query_opt("SELECT purged_to, hash FROM compliance_chain_anchor WHERE pool = $1", &[&pool])
        .await
        .map_err(unavailable)?;
    Ok(row.map(|r| ChainAnchor { purged_to: r.get(0), hash: r.get(1) }).unwrap_or_default())
}
