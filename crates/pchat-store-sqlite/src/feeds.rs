//! Topic feeds on SQLite (the `feeds` table).

use async_trait::async_trait;
use pchat_store::feeds::{join_lines, split_lines};
use pchat_store::{FeedRecord, Feeds, StoreError, StoreResult};
use rusqlite::{OptionalExtension, Row, params};

use crate::store::{SqliteStore, changed_one, db, named, query_all};

const COLUMNS: &str = "id, owner, name, keywords, match_mode, case_sensitive, authors, rooms, created_at";

fn feed_from_row(r: &Row<'_>) -> rusqlite::Result<FeedRecord> {
    Ok(FeedRecord {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        keywords: r.get(3)?,
        match_mode: r.get(4)?,
        case_sensitive: r.get(5)?,
        authors: split_lines(&r.get::<_, String>(6)?),
        rooms: split_lines(&r.get::<_, String>(7)?),
        created_at: r.get(8)?,
    })
}

#[async_trait]
impl Feeds for SqliteStore {
    async fn create_feed(&self, feed: &FeedRecord, max: u32) -> StoreResult<()> {
        let f = feed.clone();
        self.write(move |c| {
            // The single writer makes the count and the insert one step: two creations cannot both pass the limit.
            let held: i64 =
                c.query_row("SELECT count(*) FROM feeds WHERE owner = ?1", [&f.owner], |r| r.get(0)).map_err(db)?;
            if held >= i64::from(max) {
                return Err(StoreError::LimitReached);
            }
            c.execute(
                &format!("INSERT INTO feeds ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    f.id,
                    f.owner,
                    f.name,
                    f.keywords,
                    f.match_mode,
                    f.case_sensitive,
                    join_lines(&f.authors),
                    join_lines(&f.rooms),
                    f.created_at
                ],
            )
            .map_err(named)
            .map(drop)
        })
        .await
    }

    async fn get_feed(&self, id: &str) -> StoreResult<Option<FeedRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM feeds WHERE id = ?1"), [id], feed_from_row)
                .optional()
                .map_err(db)
        })
        .await
    }

    async fn list_feeds(&self, owner: &str) -> StoreResult<Vec<FeedRecord>> {
        let owner = owner.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM feeds WHERE owner = ?1 ORDER BY created_at, id");
            query_all(c, &sql, [owner], feed_from_row)
        })
        .await
    }

    async fn all_feeds(&self) -> StoreResult<Vec<FeedRecord>> {
        self.read(move |c| query_all(c, &format!("SELECT {COLUMNS} FROM feeds"), [], feed_from_row)).await
    }

    async fn update_feed(&self, feed: &FeedRecord) -> StoreResult<()> {
        let f = feed.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE feeds SET name = ?2, keywords = ?3, match_mode = ?4, case_sensitive = ?5, authors = ?6, \
                     rooms = ?7 WHERE id = ?1",
                    params![
                        f.id,
                        f.name,
                        f.keywords,
                        f.match_mode,
                        f.case_sensitive,
                        join_lines(&f.authors),
                        join_lines(&f.rooms)
                    ],
                )
                .map_err(named)?;
            changed_one(n)
        })
        .await
    }

    async fn delete_feed(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| changed_one(c.execute("DELETE FROM feeds WHERE id = ?1", [id]).map_err(db)?)).await
    }
}
