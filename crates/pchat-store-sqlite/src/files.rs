//! File records on SQLite (the `files` table).

use async_trait::async_trait;
use pchat_store::{FileRecord, Files, StoreError, StoreResult};
use rusqlite::{OptionalExtension, Row, params};

use crate::store::{SqliteStore, changed_one, db, named, query_all};

const COLUMNS: &str = "id, room_id, name, size, content_type, sha256, uploader, created_at, message_id, ready";

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        room_id: r.get(1)?,
        name: r.get(2)?,
        size: r.get(3)?,
        content_type: r.get(4)?,
        sha256: r.get(5)?,
        uploader: r.get(6)?,
        created_at: r.get(7)?,
        message_id: r.get(8)?,
        ready: r.get(9)?,
    })
}

fn insert(c: &rusqlite::Connection, f: &FileRecord) -> StoreResult<()> {
    c.prepare_cached(&format!("INSERT INTO files ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"))
        .and_then(|mut s| {
            s.execute(params![
                f.id,
                f.room_id,
                f.name,
                f.size,
                f.content_type,
                f.sha256,
                f.uploader,
                f.created_at,
                f.message_id,
                f.ready
            ])
        })
        .map_err(named)
        .map(drop)
}

#[async_trait]
impl Files for SqliteStore {
    async fn create_pending_file(&self, file: &FileRecord) -> StoreResult<()> {
        let f = FileRecord { ready: false, message_id: None, ..file.clone() };
        self.write(move |c| {
            let room =
                c.query_row("SELECT 1 FROM rooms WHERE id = ?1", [&f.room_id], |_| Ok(())).optional().map_err(db)?;
            if room.is_none() {
                return Err(StoreError::NotFound);
            }
            insert(c, &f)
        })
        .await
    }

    async fn get_file(&self, id: &str) -> StoreResult<Option<FileRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"), [id], file_from_row)
                .optional()
                .map_err(db)
        })
        .await
    }

    async fn delete_file(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| changed_one(c.execute("DELETE FROM files WHERE id = ?1", [id]).map_err(db)?)).await
    }

    async fn existing_files(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM files WHERE id = ?1").map_err(db)?;
            let mut out = vec![];
            for id in ids {
                if stmt.exists([&id]).map_err(db)? {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn stale_pending_files(&self, before: i64) -> StoreResult<Vec<FileRecord>> {
        self.read(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM files WHERE ready = 0 AND created_at < ?1");
            query_all(c, &sql, [before], file_from_row)
        })
        .await
    }

    async fn room_files(&self, room_id: &str) -> StoreResult<Vec<FileRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM files WHERE room_id = ?1 AND ready = 1 ORDER BY created_at, id");
            query_all(c, &sql, [room_id], file_from_row)
        })
        .await
    }

    async fn import_files(&self, files: &[FileRecord]) -> StoreResult<()> {
        let files = files.to_vec();
        self.write(move |c| files.iter().try_for_each(|f| insert(c, f))).await
    }
}
