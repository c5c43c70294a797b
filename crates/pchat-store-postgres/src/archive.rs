//! The compliance archive on PostgreSQL: in the chat database ([`PgStore`] implements [`Archive`], following a
//! failover like everything else) or in a database of its own ([`PgArchive`], `compliance.database_url`).
//! Appends to one pool's chain are serialized by locking the pool's chain head row, so every server of a pool
//! can run a worker; each outbox event is archived once (`UNIQUE (pool, outbox_id)` and a check under the lock).

use async_trait::async_trait;
use deadpool_postgres::Object;
use deadpool_postgres::Pool;
use pchat_store::compliance::event_hash;
use pchat_store::{Archive, ArchivedEvent, EventQuery, OutboxEvent, StoreResult};
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

#[async_trait]
impl Archive for PgArchive {
    async fn append(&self, pool: &str, events: &[OutboxEvent]) -> StoreResult<u64> {
        append(&mut self.pool.get().await.map_err(unavailable)?, pool, events).await
    }

    async fn events(&self, query: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
        events(&self.pool.get().await.map_err(unavailable)?, query).await
    }

    async fn pools(&self) -> StoreResult<Vec<String>> {
        pools(&self.pool.get().await.map_err(unavailable)?).await
    }
}

#[async_trait]
impl Archive for PgStore {
    async fn append(&self, pool: &str, events: &[OutboxEvent]) -> StoreResult<u64> {
        append(&mut self.client().await?, pool, events).await
    }

    async fn events(&self, query: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
        events(&self.client().await?, query).await
    }

    async fn pools(&self) -> StoreResult<Vec<String>> {
        pools(&self.client().await?).await
    }
}

async fn append(client: &mut Object, pool: &str, events: &[OutboxEvent]) -> StoreResult<u64> {
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
        let hash = event_hash(pool, o.id, &o.event, &last);
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

async fn pools(client: &Object) -> StoreResult<Vec<String>> {
    let rows = client.query("SELECT pool FROM compliance_chain_head ORDER BY pool", &[]).await.map_err(unavailable)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
