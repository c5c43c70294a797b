//! Sessions and passwords on SQLite (the `sessions` table).

use async_trait::async_trait;
use pchat_store::sessions::NEVER;
use pchat_store::{SessionRecord, Sessions, StoreError, StoreResult};
use rusqlite::{OptionalExtension, Row, params};

use crate::store::{SqliteStore, db, named, query_all};

const COLUMNS: &str = "id, token_hash, address, created_at, last_used_at, expires_at, client";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        address: r.get(2)?,
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        expires_at: r.get(5)?,
        client: r.get(6)?,
    })
}

#[async_trait]
impl Sessions for SqliteStore {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let s = s.clone();
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![s.id, s.token_hash, s.address, s.created_at, s.last_used_at, s.expires_at, s.client],
            )
            .map_err(named)
            .map(drop)
        })
        .await
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let hash = token_hash.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM sessions WHERE token_hash = ?1"), [hash], session_from_row)
                .optional()
                .map_err(db)
        })
        .await
    }

    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"), [id], session_from_row)
                .optional()
                .map_err(db)
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, at: i64) -> StoreResult<()> {
        let hash = token_hash.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE sessions SET last_used_at = ?2 WHERE token_hash = ?1 AND last_used_at < ?2",
                params![hash, at],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    async fn sessions_of(&self, address: &str) -> StoreResult<Vec<SessionRecord>> {
        let address = address.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM sessions WHERE address = ?1 ORDER BY created_at DESC, id DESC");
            query_all(c, &sql, [address], session_from_row)
        })
        .await
    }

    async fn end_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let hash = token_hash.to_owned();
        self.write(move |c| {
            c.query_row(
                &format!("DELETE FROM sessions WHERE token_hash = ?1 RETURNING {COLUMNS}"),
                [hash],
                session_from_row,
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn end_session_by_id(&self, address: &str, id: &str) -> StoreResult<()> {
        let (address, id) = (address.to_owned(), id.to_owned());
        self.write(move |c| {
            let n =
                c.execute("DELETE FROM sessions WHERE address = ?1 AND id = ?2", params![address, id]).map_err(db)?;
            if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn end_sessions(&self, address: &str, keep: Option<&str>) -> StoreResult<u64> {
        let (address, keep) = (address.to_owned(), keep.unwrap_or("").to_owned());
        self.write(move |c| {
            let n = c
                .execute("DELETE FROM sessions WHERE address = ?1 AND token_hash <> ?2", params![address, keep])
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn set_password(&self, address: &str, password_hash: &str, keep: Option<&str>) -> StoreResult<u64> {
        let (address, hash, keep) = (address.to_owned(), password_hash.to_owned(), keep.unwrap_or("").to_owned());
        self.write(move |c| {
            let n = c
                .execute("UPDATE users SET password_hash = ?2 WHERE address = ?1", params![address, hash])
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let ended = c
                .execute("DELETE FROM sessions WHERE address = ?1 AND token_hash <> ?2", params![address, keep])
                .map_err(db)?;
            Ok(ended as u64)
        })
        .await
    }

    async fn purge_sessions(&self, now: i64, idle_before: i64) -> StoreResult<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM sessions WHERE expires_at < ?1 OR (expires_at <> ?3 AND last_used_at < ?2)",
                    params![now, idle_before, NEVER],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }
}
