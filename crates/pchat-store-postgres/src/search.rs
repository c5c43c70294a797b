//! The search index on PostgreSQL: `search_postings (term, ts, room_num, seq)` with that primary key, the same
//! index as on SQLite. Appended messages reach it through the queue of `indexer.rs`, which every search reads
//! beside the table; replacements, removals, clears and imports write and delete postings with arrays (`unnest`)
//! in the transaction that changes the messages; an index built by another tokenizer version is rebuilt under the
//! migration lock.

use async_trait::async_trait;
use pchat_core::text::{TOKENIZER_VERSION, index_terms};
use pchat_store::{
    Found, MessageRecord, Posting, Scan, ScanPage, Search, SearchFilter, SearchKey, StoreResult, TermCount, holds_in,
    keys_in,
};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tracing::info;

use crate::store::{PgStore, col, message_from_row, unavailable};

/// Postings sent to the database in one statement at most.
const CHUNK: usize = 50_000;

/// Postings to add or remove, as the arrays one statement takes.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    terms: Vec<String>,
    times: Vec<i64>,
    rooms: Vec<i64>,
    seqs: Vec<i64>,
}

impl Postings {
    /// The postings of one message.
    pub(crate) fn add(&mut self, room_num: i64, ts: i64, seq: i64, text: &str, title: Option<&str>) {
        for term in index_terms(text, title) {
            self.terms.push(term);
            self.times.push(ts);
            self.rooms.push(room_num);
            self.seqs.push(seq);
        }
    }

    pub(crate) fn add_message(&mut self, room_num: i64, m: &MessageRecord) {
        self.add(room_num, m.ts, m.seq, &m.text, m.story_title.as_deref());
    }

    /// Puts the postings in term order.
    pub(crate) fn sort(&mut self) {
        let mut all: Vec<(String, i64, i64, i64)> = std::mem::take(&mut self.terms)
            .into_iter()
            .zip(self.times.drain(..))
            .zip(self.rooms.drain(..))
            .zip(self.seqs.drain(..))
            .map(|(((term, ts), room), seq)| (term, ts, room, seq))
            .collect();
        all.sort_unstable();
        for (term, ts, room, seq) in all {
            self.terms.push(term);
            self.times.push(ts);
            self.rooms.push(room);
            self.seqs.push(seq);
        }
    }

    pub(crate) async fn insert(&self, tx: &Transaction<'_>) -> StoreResult<()> {
        self.each_chunk(
            tx,
            "INSERT INTO search_postings (term, ts, room_num, seq) SELECT * FROM unnest($1::text[], \
             $2::bigint[], $3::bigint[], $4::bigint[]) ON CONFLICT DO NOTHING",
        )
        .await
    }

    pub(crate) async fn delete(&self, tx: &Transaction<'_>) -> StoreResult<()> {
        self.each_chunk(
            tx,
            "DELETE FROM search_postings p USING unnest($1::text[], $2::bigint[], $3::bigint[], \
             $4::bigint[]) AS d(term, ts, room_num, seq) WHERE p.term = d.term AND p.ts = d.ts \
             AND p.room_num = d.room_num AND p.seq = d.seq",
        )
        .await
    }

    async fn each_chunk(&self, tx: &Transaction<'_>, sql: &str) -> StoreResult<()> {
        let mut start = 0;
        while start < self.terms.len() {
            let end = (start + CHUNK).min(self.terms.len());
            let (terms, times, rooms, seqs) =
                (&self.terms[start..end], &self.times[start..end], &self.rooms[start..end], &self.seqs[start..end]);
            tx.execute(sql, &[&terms, &times, &rooms, &seqs]).await.map_err(unavailable)?;
            start = end;
        }
        Ok(())
    }
}

/// The number of the room with this id, locking nothing (`None` if there is no such room).
pub(crate) async fn room_num(tx: &Transaction<'_>, room_id: &str) -> StoreResult<Option<i64>> {
    let row = tx.query_opt("SELECT num FROM rooms WHERE id = $1", &[&room_id]).await.map_err(unavailable)?;
    row.map(|r| col(&r, 0)).transpose()
}

/// Removes the postings of the room's messages up to `end_ts` (all for `None`), pending or indexed; call before
/// deleting them.
pub(crate) async fn unindex_room(tx: &Transaction<'_>, room_id: &str, end_ts: Option<i64>) -> StoreResult<()> {
    crate::indexer::settle_room(tx, room_id, end_ts).await?;
    let Some(num) = room_num(tx, room_id).await? else { return Ok(()) };
    let sql = "SELECT seq, ts, text, story_title FROM messages WHERE room_id = $1 AND ($2::bigint IS NULL OR ts <= $2)";
    let mut postings = Postings::default();
    for row in tx.query(sql, &[&room_id, &end_ts]).await.map_err(unavailable)? {
        let title: Option<String> = col(&row, 3)?;
        postings.add(num, col(&row, 1)?, col(&row, 0)?, &col::<String>(&row, 2)?, title.as_deref());
    }
    postings.delete(tx).await
}

/// Rebuilds the index when another tokenizer version (or none) built it. Runs under the migration lock.
pub(crate) async fn rebuild_if_needed(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let built: i64 = tx.query_one("SELECT tokenizer FROM search_meta", &[]).await?.get(0);
    if built == TOKENIZER_VERSION {
        return Ok(());
    }
    let messages: i64 = tx.query_one("SELECT count(*) FROM messages", &[]).await?.get(0);
    info!(messages, from = built, to = TOKENIZER_VERSION, "building the search index");
    // Pending messages are indexed with the rest (waiting for an indexer that holds some to commit first).
    tx.batch_execute("DELETE FROM search_pending; DELETE FROM search_postings").await?;
    let select = "SELECT r.num, m.seq, m.ts, m.text, m.story_title, m.room_id FROM messages m \
                  JOIN rooms r ON r.id = m.room_id WHERE (m.room_id, m.seq) > ($1, $2) ORDER BY m.room_id, m.seq LIMIT 5000";
    let insert = "INSERT INTO search_postings (term, ts, room_num, seq) SELECT * FROM unnest($1::text[], \
                  $2::bigint[], $3::bigint[], $4::bigint[]) ON CONFLICT DO NOTHING";
    let (mut room, mut seq) = (String::new(), i64::MIN);
    loop {
        let rows = tx.query(select, &[&room, &seq]).await?;
        let Some(last) = rows.last() else { break };
        (room, seq) = (last.get(5), last.get(1));
        let mut p = Postings::default();
        for row in &rows {
            let (text, title): (String, Option<String>) = (row.get(3), row.get(4));
            p.add(row.get(0), row.get(2), row.get(1), &text, title.as_deref());
        }
        tx.execute(insert, &[&p.terms, &p.times, &p.rooms, &p.seqs]).await?;
    }
    tx.execute("UPDATE search_meta SET tokenizer = $1", &[&TOKENIZER_VERSION]).await?;
    info!(messages, "search index built");
    Ok(())
}

/// The conditions on postings `p` shared by counts and scans: `$2` from, `$3` to.
const TIMES: &str = "p.ts >= $2 AND p.ts <= $3";
/// And `$4` room ids (or NULL for every room).
const ROOMS: &str =
    "($4::text[] IS NULL OR p.room_num = ANY (ARRAY(SELECT num FROM rooms WHERE id = ANY ($4::text[]))))";

fn filter_params(f: &SearchFilter) -> (i64, i64, Option<Vec<String>>) {
    (f.from_ts.unwrap_or(i64::MIN), f.to_ts.unwrap_or(i64::MAX), f.rooms.clone())
}

/// The numbers of the filter's rooms (`None`: every room).
async fn room_nums(tx: &Transaction<'_>, rooms: &Option<Vec<String>>) -> StoreResult<Option<Vec<i64>>> {
    let Some(rooms) = rooms else { return Ok(None) };
    let rows = tx.query("SELECT num FROM rooms WHERE id = ANY($1)", &[rooms]).await.map_err(unavailable)?;
    rows.iter().map(|r| col(r, 0)).collect::<StoreResult<Vec<i64>>>().map(Some)
}

impl PgStore {
    /// A read-only transaction with one snapshot for all its reads, and the postings of the messages pending in
    /// it (`indexer.rs`).
    async fn search_snapshot<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
    ) -> StoreResult<(deadpool_postgres::Transaction<'a>, Vec<Posting>)> {
        let tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(unavailable)?;
        let pending = crate::indexer::load(&tx, &self.pending).await?;
        Ok((tx, pending))
    }
}

#[async_trait]
impl Search for PgStore {
    async fn term_counts(&self, terms: &[String], filter: &SearchFilter, cap: u32) -> StoreResult<Vec<TermCount>> {
        let (from, to, rooms) = filter_params(filter);
        let sql = format!(
            "SELECT t.i, c.postings, c.in_rooms FROM unnest($1::text[]) WITH ORDINALITY AS t(term, i) \
             CROSS JOIN LATERAL (SELECT count(*) AS postings, count(*) FILTER (WHERE {ROOMS}) AS in_rooms \
             FROM (SELECT p.room_num FROM search_postings p WHERE p.term = t.term AND {TIMES} LIMIT $5) p) c \
             ORDER BY t.i"
        );
        let list = terms.to_vec();
        let mut client = self.client().await?;
        let (tx, pending) = self.search_snapshot(&mut client).await?;
        let rows = tx.query(&sql, &[&list, &from, &to, &rooms, &i64::from(cap)]).await.map_err(unavailable)?;
        let mut counts = rows
            .iter()
            .map(|r| Ok(TermCount { postings: col::<i64>(r, 1)? as u64, in_rooms: col::<i64>(r, 2)? as u64 }))
            .collect::<StoreResult<Vec<_>>>()?;
        if !pending.is_empty() {
            let nums = room_nums(&tx, &rooms).await?;
            for (count, term) in counts.iter_mut().zip(terms) {
                for key in keys_in(&pending, term).filter(|k| k.ts >= from && k.ts <= to) {
                    count.postings += 1;
                    count.in_rooms += u64::from(nums.as_ref().is_none_or(|n| n.contains(&key.room)));
                }
                count.postings = count.postings.min(u64::from(cap));
                count.in_rooms = count.in_rooms.min(count.postings);
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(counts)
    }

    async fn scan(&self, scan: &Scan<'_>) -> StoreResult<ScanPage> {
        let (from, to, rooms) = filter_params(scan.filter);
        let before = scan.before.unwrap_or(SearchKey { ts: i64::MAX, room: i64::MAX, seq: i64::MAX });
        // The tightest time bounds go in the plain `ts` range, which bounds the index walk (as on SQLite).
        let upper = to.min(before.ts);
        let window = scan.window.max(1);
        let mut client = self.client().await?;
        let (tx, pending) = self.search_snapshot(&mut client).await?;
        // The driver's pending postings, newest first.
        let mut pending_keys: Vec<SearchKey> =
            keys_in(&pending, scan.driver).filter(|k| k.ts >= from && k.ts <= upper && *k < before).collect();
        pending_keys.sort_unstable_by(|a, b| b.cmp(a));
        // Where this window ends: the `window`-th posting, if there are that many.
        let table_keys = |limit: i64, offset: i64| {
            let sql = format!(
                "SELECT p.ts, p.room_num, p.seq FROM search_postings p WHERE p.term = $1 AND {TIMES} \
                 AND (p.ts, p.room_num, p.seq) < ($4, $5, $6) \
                 ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC OFFSET $7 LIMIT $8"
            );
            let tx = &tx;
            async move {
                let params: [&(dyn ToSql + Sync); 8] =
                    [&scan.driver, &from, &upper, &before.ts, &before.room, &before.seq, &offset, &limit];
                tx.query(&sql, &params)
                    .await
                    .map_err(unavailable)?
                    .iter()
                    .map(|r| Ok(SearchKey { ts: col(r, 0)?, room: col(r, 1)?, seq: col(r, 2)? }))
                    .collect::<StoreResult<Vec<_>>>()
            }
        };
        let last = if pending_keys.is_empty() {
            table_keys(1, i64::from(window) - 1).await?.pop()
        } else {
            let mut keys = table_keys(i64::from(window), 0).await?;
            keys.extend(&pending_keys);
            keys.sort_unstable_by(|a, b| b.cmp(a));
            keys.dedup();
            keys.get(window as usize - 1).copied()
        };
        let floor = last.unwrap_or(SearchKey { ts: i64::MIN, room: i64::MIN, seq: i64::MIN });
        let lower = from.max(floor.ts);
        // Another term is required of a posting in the table unless some of its postings are pending: then it is
        // looked for in both, row by row.
        let (in_table, in_both): (Vec<&String>, Vec<&String>) =
            scan.others.iter().partition(|o| keys_in(&pending, o).next().is_none());
        let mut sql = format!("SELECT {FOUND_COLUMNS}, p.ts, p.room_num, p.seq");
        for i in 0..in_both.len() {
            sql.push_str(&format!(", {}", also_indexed(12 + i)));
        }
        sql.push_str(&format!(
            " FROM search_postings p \
             JOIN rooms r ON r.num = p.room_num JOIN messages m ON m.room_id = r.id AND m.seq = p.seq \
             WHERE p.term = $1 AND {TIMES} AND {ROOMS} AND (p.ts, p.room_num, p.seq) < ($5, $6, $7) \
             AND (p.ts, p.room_num, p.seq) >= ($8, $9, $10) AND ($11::text[] IS NULL OR m.author = ANY ($11::text[]))"
        ));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &scan.driver,
            &lower,
            &upper,
            &rooms,
            &before.ts,
            &before.room,
            &before.seq,
            &floor.ts,
            &floor.room,
            &floor.seq,
            &scan.filter.authors,
        ];
        params.extend(in_both.iter().map(|o| *o as &(dyn ToSql + Sync)));
        for other in &in_table {
            params.push(*other);
            sql.push_str(&format!(" AND {}", also_indexed(params.len())));
        }
        sql.push_str(" ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC");
        let mut hits = Vec::new();
        for r in tx.query(&sql, &params).await.map_err(unavailable)? {
            let key = SearchKey { ts: col(&r, 11)?, room: col(&r, 12)?, seq: col(&r, 13)? };
            let mut held = true;
            for (i, other) in in_both.iter().enumerate() {
                held &= col::<bool>(&r, 14 + i)? || holds_in(&pending, other, key);
            }
            if held {
                hits.push(Found { message: message_from_row(&r)?, key });
            }
        }
        if !pending_keys.is_empty() {
            let nums = room_nums(&tx, &rooms).await?;
            let message = format!(
                "SELECT {FOUND_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id \
                 WHERE r.num = $1 AND m.seq = $2 AND ($3::text[] IS NULL OR m.author = ANY ($3::text[]))"
            );
            let in_index = "SELECT EXISTS (SELECT 1 FROM search_postings WHERE term = $1 AND ts = $2 \
                            AND room_num = $3 AND seq = $4)";
            for key in pending_keys.iter().filter(|k| **k >= floor) {
                if nums.as_ref().is_some_and(|n| !n.contains(&key.room)) {
                    continue;
                }
                let mut held = true;
                for other in scan.others {
                    held = held
                        && (holds_in(&pending, other, *key)
                            || tx
                                .query_one(in_index, &[other, &key.ts, &key.room, &key.seq])
                                .await
                                .map_err(unavailable)?
                                .get::<_, bool>(0));
                }
                if !held {
                    continue;
                }
                let row =
                    tx.query_opt(&message, &[&key.room, &key.seq, &scan.filter.authors]).await.map_err(unavailable)?;
                if let Some(row) = row {
                    hits.push(Found { message: message_from_row(&row)?, key: *key });
                }
            }
            hits.sort_unstable_by_key(|f| std::cmp::Reverse(f.key));
            hits.dedup_by(|a, b| a.key == b.key);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(ScanPage { hits, last })
    }
}

/// The columns of a found message, for [`message_from_row`].
const FOUND_COLUMNS: &str =
    "m.id, m.room_id, m.seq, m.author, m.ts, m.text, m.story_title, m.alert, m.client_id, m.replaced, m.file";

/// Whether the term in parameter `param` has a posting for `p`'s message in the table.
fn also_indexed(param: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM search_postings o WHERE o.term = ${param} AND o.ts = p.ts \
         AND o.room_num = p.room_num AND o.seq = p.seq)"
    )
}
