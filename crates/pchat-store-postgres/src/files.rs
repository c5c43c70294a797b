//! File records on PostgreSQL (the `files` table).

use async_trait::async_trait;
use pchat_store::{FileRecord, Files, StoreError, StoreResult};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::{PgStore, all, col, named, unavailable};

const COLUMNS: &str = "id, room_id, name, size, content_type, sha256, uploader, created_at, message_id, ready";

fn file_from_row(r: &Row) -> StoreResult<FileRecord> {
    Ok(FileRecord {
        id: col(r, 0)?,
        room_id: col(r, 1)?,
        name: col(r, 2)?,
        size: col(r, 3)?,
        content_type: col(r, 4)?,
        sha256: col(r, 5)?,
        uploader: col(r, 6)?,
        created_at: col(r, 7)?,
        message_id: col(r, 8)?,
        ready: col(r, 9)?,
    })
}

const INSERT: &str = "INSERT INTO files (id, room_id, name, size, content_type, sha256, uploader, created_at, \
                      message_id, ready) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn params(f: &FileRecord) -> [&(dyn ToSql + Sync); 10] {
    [
        &f.id,
        &f.room_id,
        &f.name,
        &f.size,
        &f.content_type,
        &f.sha256,
        &f.uploader,
        &f.created_at,
        &f.message_id,
        &f.ready,
    ]
}

#[async_trait]
impl Files for PgStore {
    async fn create_pending_file(&self, file: &FileRecord) -> StoreResult<()> {
        let f = FileRecord { ready: false, message_id: None, ..file.clone() };
        let client = self.client().await?;
        match client.execute(INSERT, &params(&f)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(StoreError::NotFound)
            }
            Err(e) => Err(named(e)),
        }
    }

    async fn get_file(&self, id: &str) -> StoreResult<Option<FileRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1");
        self.query_opt(&sql, &[&id]).await?.as_ref().map(file_from_row).transpose()
    }

    async fn delete_file(&self, id: &str) -> StoreResult<()> {
        self.execute_one("DELETE FROM files WHERE id = $1", &[&id]).await
    }

    async fn existing_files(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let rows = self.query("SELECT id FROM files WHERE id = ANY($1)", &[&ids]).await?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    async fn stale_pending_files(&self, before: i64) -> StoreResult<Vec<FileRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE NOT ready AND created_at < $1");
        all(self.query(&sql, &[&before]).await?, file_from_row)
    }

    async fn room_files(&self, room_id: &str) -> StoreResult<Vec<FileRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE room_id = $1 AND ready ORDER BY created_at, id");
        all(self.query(&sql, &[&room_id]).await?, file_from_row)
    }

    async fn import_files(&self, files: &[FileRecord]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for f in files {
            tx.execute(INSERT, &params(f)).await.map_err(named)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}
