//! Topic feeds on PostgreSQL (the `feeds` table).

use async_trait::async_trait;
use pchat_store::feeds::{join_lines, split_lines};
use pchat_store::{FeedRecord, Feeds, StoreError, StoreResult};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::{PgStore, all, col, named, unavailable};

const COLUMNS: &str = "id, owner, name, keywords, match_mode, case_sensitive, authors, rooms, created_at";

fn feed_from_row(r: &Row) -> StoreResult<FeedRecord> {
    Ok(FeedRecord {
        id: col(r, 0)?,
        owner: col(r, 1)?,
        name: col(r, 2)?,
        keywords: col(r, 3)?,
        match_mode: col(r, 4)?,
        case_sensitive: col(r, 5)?,
        authors: split_lines(&col::<String>(r, 6)?),
        rooms: split_lines(&col::<String>(r, 7)?),
        created_at: col(r, 8)?,
    })
}

#[async_trait]
impl Feeds for PgStore {
    async fn create_feed(&self, f: &FeedRecord, max: u32) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // The owner's row lock makes the count and the insert one step across every server of the pool.
        let owner = tx.query_opt("SELECT 1 FROM users WHERE address = $1 FOR UPDATE", &[&f.owner]).await;
        if owner.map_err(unavailable)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let held: i64 = col(
            &tx.query_one("SELECT count(*) FROM feeds WHERE owner = $1", &[&f.owner]).await.map_err(unavailable)?,
            0,
        )?;
        if held >= i64::from(max) {
            return Err(StoreError::LimitReached);
        }
        let (authors, rooms) = (join_lines(&f.authors), join_lines(&f.rooms));
        let params: [&(dyn ToSql + Sync); 9] =
            [&f.id, &f.owner, &f.name, &f.keywords, &f.match_mode, &f.case_sensitive, &authors, &rooms, &f.created_at];
        let sql = format!("INSERT INTO feeds ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        tx.execute(&sql, &params).await.map_err(named)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn get_feed(&self, id: &str) -> StoreResult<Option<FeedRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM feeds WHERE id = $1");
        self.query_opt(&sql, &[&id]).await?.as_ref().map(feed_from_row).transpose()
    }

    async fn list_feeds(&self, owner: &str) -> StoreResult<Vec<FeedRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM feeds WHERE owner = $1 ORDER BY created_at, id");
        all(self.query(&sql, &[&owner]).await?, feed_from_row)
    }

    async fn all_feeds(&self) -> StoreResult<Vec<FeedRecord>> {
        all(self.query(&format!("SELECT {COLUMNS} FROM feeds"), &[]).await?, feed_from_row)
    }

    async fn update_feed(&self, f: &FeedRecord) -> StoreResult<()> {
        let (authors, rooms) = (join_lines(&f.authors), join_lines(&f.rooms));
        let sql = "UPDATE feeds SET name = $2, keywords = $3, match_mode = $4, case_sensitive = $5, authors = $6, \
                   rooms = $7 WHERE id = $1";
        let params: [&(dyn ToSql + Sync); 7] =
            [&f.id, &f.name, &f.keywords, &f.match_mode, &f.case_sensitive, &authors, &rooms];
        self.execute_one(sql, &params).await
    }

    async fn delete_feed(&self, id: &str) -> StoreResult<()> {
        self.execute_one("DELETE FROM feeds WHERE id = $1", &[&id]).await
    }
}
