//! The compliance archive on PostgreSQL: in the chat database ([`PgStore`] implements [`Archive`], following a
//! failover like everything else) or in a database of its own ([`PgArchive`], `compliance.database_url`).
//! Appends to one pool's chain are serialized by locking the pool's chain head row, so every server of a pool
//! can run a worker; each outbox event is archived once (`UNIQUE (pool, outbox_id)` and a check under the lock).

use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::Object;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pchat_store::compliance::event_hash;
use pchat_store::{Archive, ArchivedEvent, EventQuery, NewEvent, OutboxEvent, StoreResult};
use tokio_postgres::{NoTls, Row};

use crate::migrations;
use crate::store::{OpenError, PgStore, redact, unavailable};

/// An archive in a database of its own.
pub struct PgArchive {
    pool: Pool,
}

impl PgArchive {
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        let shown = redact(url);
        let config =
            tokio_postgres::Config::from_str(url).map_err(|source| OpenError::Url { url: shown.clone(), source })?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .build()
            .map_err(|e| OpenError::Connect { url: shown.clone(), message: e.to_string() })?;
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
        let kinds: Vec<&str> = fresh.iter().map(|o| o.event.kind.as_str()).collect();
        let times: Vec<i64> = fresh.iter().map(|o| o.event.ts).collect();
        let rooms: Vec<Option<&str>> = fresh.iter().map(|o| o.event.room_id.as_deref()).collect();
        let actors: Vec<&str> = fresh.iter().map(|o| o.event.actor.as_str()).collect();
        let contents: Vec<&str> = fresh.iter().map(|o| o.event.content.as_str()).collect();
        let details: Vec<&str> = fresh.iter().map(|o| o.event.details.as_str()).collect();
        // unnest keeps the order, so archive ids follow the chain.
        tx.execute(
            "INSERT INTO compliance_archive (pool, outbox_id, kind, ts, room_id, actor, content, details, prev_hash, \
             hash) SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[])",
            &[&pool, &outbox_ids, &kinds, &times, &rooms, &actors, &contents, &details, &prevs, &hashes],
        )
        .await
        .map_err(unavailable)?;
        tx.execute("UPDATE compliance_chain_head SET last_hash = $2 WHERE pool = $1", &[&pool, &last])
            .await
            .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(fresh.len() as u64)
}

const COLUMNS: &str = "id, pool, outbox_id, kind, ts, room_id, actor, content, details, prev_hash, hash";

fn archived_from_row(r: &Row) -> ArchivedEvent {
    ArchivedEvent {
        id: r.get(0),
        pool: r.get(1),
        outbox_id: r.get(2),
        event: NewEvent {
            kind: r.get(3),
            ts: r.get(4),
            room_id: r.get(5),
            actor: r.get(6),
            content: r.get(7),
            details: r.get(8),
        },
        prev_hash: r.get(9),
        hash: r.get(10),
    }
}

async fn events(client: &Object, q: &EventQuery) -> StoreResult<Vec<ArchivedEvent>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM compliance_archive WHERE id > $1 AND ($2::text IS NULL OR pool = $2) \
         AND ($3::bigint IS NULL OR ts >= $3) AND ($4::bigint IS NULL OR ts <= $4) \
         AND ($5::text IS NULL OR room_id = $5) AND ($6::text IS NULL OR actor = $6) \
         AND ($7::text IS NULL OR kind = $7) ORDER BY id LIMIT $8"
    );
    let rows = client
        .query(&sql, &[&q.after_id, &q.pool, &q.from_ts, &q.to_ts, &q.room_id, &q.actor, &q.kind, &i64::from(q.limit)])
        .await
        .map_err(unavailable)?;
    Ok(rows.iter().map(archived_from_row).collect())
}

async fn pools(client: &Object) -> StoreResult<Vec<String>> {
    let rows = client.query("SELECT pool FROM compliance_chain_head ORDER BY pool", &[]).await.map_err(unavailable)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
