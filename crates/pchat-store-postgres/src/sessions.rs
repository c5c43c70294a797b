//! Sessions and passwords on PostgreSQL (the `sessions` table).

use async_trait::async_trait;
use pchat_store::sessions::NEVER;
use pchat_store::{SessionRecord, Sessions, StoreError, StoreResult};
use tokio_postgres::Row;

use crate::store::{PgStore, all, col, commit_captured, named, unavailable};

const COLUMNS: &str = "id, token_hash, address, created_at, last_used_at, expires_at, client";

fn session_from_row(r: &Row) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: col(r, 0)?,
        token_hash: col(r, 1)?,
        address: col(r, 2)?,
        created_at: col(r, 3)?,
        last_used_at: col(r, 4)?,
        expires_at: col(r, 5)?,
        client: col(r, 6)?,
    })
}

#[async_trait]
impl Sessions for PgStore {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let sql = format!("INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&s.id, &s.token_hash, &s.address, &s.created_at, &s.last_used_at, &s.expires_at, &s.client];
        self.execute(&sql, &params).await.map(drop)
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE token_hash = $1");
        self.query_opt(&sql, &[&token_hash]).await?.as_ref().map(session_from_row).transpose()
    }

    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
        self.query_opt(&sql, &[&id]).await?.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, token_hash: &str, at: i64) -> StoreResult<()> {
        let sql = "UPDATE sessions SET last_used_at = $2 WHERE token_hash = $1 AND last_used_at < $2";
        self.execute(sql, &[&token_hash, &at]).await.map(drop)
    }

    async fn sessions_of(&self, address: &str) -> StoreResult<Vec<SessionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE address = $1 ORDER BY created_at DESC, id DESC");
        all(self.query(&sql, &[&address]).await?, session_from_row)
    }

    async fn end_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("DELETE FROM sessions WHERE token_hash = $1 RETURNING {COLUMNS}");
        let rows = self.query(&sql, &[&token_hash]).await?;
        rows.first().map(session_from_row).transpose()
    }

    async fn end_session_by_id(&self, address: &str, id: &str) -> StoreResult<()> {
        self.execute_one("DELETE FROM sessions WHERE address = $1 AND id = $2", &[&address, &id]).await
    }

    async fn end_sessions(&self, address: &str, keep: Option<&str>) -> StoreResult<u64> {
        let keep = keep.unwrap_or("");
        self.execute("DELETE FROM sessions WHERE address = $1 AND token_hash <> $2", &[&address, &keep]).await
    }

    async fn set_password(&self, address: &str, password_hash: &str, keep: Option<&str>) -> StoreResult<u64> {
        let keep = keep.unwrap_or("");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let changed = tx
            .execute("UPDATE users SET password_hash = $2 WHERE address = $1", &[&address, &password_hash])
            .await
            .map_err(named)?;
        if changed == 0 {
            return Err(StoreError::NotFound); // Nothing changed: the transaction rolls back as it drops.
        }
        let ended = tx
            .execute("DELETE FROM sessions WHERE address = $1 AND token_hash <> $2", &[&address, &keep])
            .await
            .map_err(unavailable)?;
        commit_captured(tx).await?;
        Ok(ended)
    }

    async fn purge_sessions(&self, now: i64, idle_before: i64) -> StoreResult<u64> {
        let sql = "DELETE FROM sessions WHERE expires_at < $1 OR (expires_at <> $3 AND last_used_at < $2)";
        self.execute(sql, &[&now, &idle_before, &NEVER]).await
    }
}
