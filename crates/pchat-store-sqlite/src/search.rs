//! The search index on SQLite: `search_postings (term, ts, room_num, seq)`, a `WITHOUT ROWID` table whose primary
//! key is the index itself. Postings are written and deleted by the writes that change messages, in their
//! transaction; an index built by another tokenizer version is rebuilt when the database opens.

use async_trait::async_trait;
use pchat_core::text::{TOKENIZER_VERSION, index_terms};
use pchat_store::{Found, Scan, ScanPage, Search, SearchFilter, SearchKey, StoreResult, TermCount};
use rusqlite::{Connection, OptionalExtension, params};
use tracing::info;

use crate::store::{SqliteStore, db, message_from_row, query_all};

/// A message's place in the index.
pub(crate) struct Posting<'a> {
    pub(crate) room_num: i64,
    pub(crate) ts: i64,
    pub(crate) seq: i64,
    pub(crate) text: &'a str,
    pub(crate) title: Option<&'a str>,
}

/// The number of the room with this id (`None` if there is no such room).
pub(crate) fn room_num(conn: &Connection, room_id: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT num FROM rooms WHERE id = ?1")
        .and_then(|mut s| s.query_row([room_id], |r| r.get(0)).optional())
        .map_err(db)
}

thread_local! {
    /// Postings of the messages appended in the writer's open batch, not yet inserted: they go in together, sorted by
    /// term, outside the appends' savepoints, just before the batch commits (or before a write that is not an append
    /// runs, so that every other write sees the index as it would be committed). Inserting them one message at a
    /// time inside savepoints cost most of the writer's time (each posting dirties its own index page and the
    /// savepoint journals it; see `bench/RESULTS.md`).
    static DEFERRED: std::cell::RefCell<Vec<(String, i64, i64, i64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Queues a message's postings for [`flush_deferred`] (on the writer thread, inside a write that defers).
pub(crate) fn defer_index(p: &Posting<'_>) {
    DEFERRED.with_borrow_mut(|d| {
        d.extend(index_terms(p.text, p.title).into_iter().map(|term| (term, p.ts, p.room_num, p.seq)));
    });
}

/// How many postings are queued (a write that fails forgets what it queued with [`forget_deferred_after`]).
pub(crate) fn deferred_mark() -> usize {
    DEFERRED.with_borrow(Vec::len)
}

pub(crate) fn forget_deferred_after(mark: usize) {
    DEFERRED.with_borrow_mut(|d| d.truncate(mark));
}

/// Inserts the queued postings, sorted by term (neighbouring keys share index pages).
pub(crate) fn flush_deferred(conn: &Connection) -> rusqlite::Result<()> {
    let mut postings = DEFERRED.with_borrow_mut(std::mem::take);
    if postings.is_empty() {
        return Ok(());
    }
    postings.sort_unstable();
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO search_postings (term, ts, room_num, seq) VALUES (?1, ?2, ?3, ?4)")?;
    for (term, ts, room_num, seq) in &postings {
        insert.execute(params![term, ts, room_num, seq])?;
    }
    Ok(())
}

/// Adds a message's postings.
pub(crate) fn index(conn: &Connection, p: &Posting<'_>) -> StoreResult<()> {
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO search_postings (term, ts, room_num, seq) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db)?;
    for term in index_terms(p.text, p.title) {
        insert.execute(params![term, p.ts, p.room_num, p.seq]).map_err(db)?;
    }
    Ok(())
}

/// Removes a message's postings (the terms are found again from its text).
pub(crate) fn unindex(conn: &Connection, p: &Posting<'_>) -> StoreResult<()> {
    let mut delete = conn
        .prepare_cached("DELETE FROM search_postings WHERE term = ?1 AND ts = ?2 AND room_num = ?3 AND seq = ?4")
        .map_err(db)?;
    for term in index_terms(p.text, p.title) {
        delete.execute(params![term, p.ts, p.room_num, p.seq]).map_err(db)?;
    }
    Ok(())
}

/// Removes the postings of the room's messages up to `end_ts` (all of them for `None`); call before deleting them.
pub(crate) fn unindex_room(conn: &Connection, room_id: &str, end_ts: Option<i64>) -> StoreResult<()> {
    let Some(room_num) = room_num(conn, room_id)? else { return Ok(()) };
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, ts, text, story_title FROM messages WHERE room_id = ?1 AND (?2 IS NULL OR ts <= ?2)",
        )
        .map_err(db)?;
    let mut rows = stmt.query(params![room_id, end_ts]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let (seq, ts, text, title): (i64, i64, String, Option<String>) =
            (row.get(0).map_err(db)?, row.get(1).map_err(db)?, row.get(2).map_err(db)?, row.get(3).map_err(db)?);
        unindex(conn, &Posting { room_num, ts, seq, text: &text, title: title.as_deref() })?;
    }
    Ok(())
}

/// Rebuilds the index when it was built by another tokenizer version (or never), in batches.
pub(crate) fn rebuild_if_needed(conn: &Connection) -> rusqlite::Result<()> {
    let built: i64 = conn.query_row("SELECT tokenizer FROM search_meta", [], |r| r.get(0))?;
    if built == TOKENIZER_VERSION {
        return Ok(());
    }
    let messages: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    info!(messages, from = built, to = TOKENIZER_VERSION, "building the search index");
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM search_postings;")?;
    let mut select = conn
        .prepare("SELECT r.num, m.seq, m.ts, m.text, m.story_title FROM messages m JOIN rooms r ON r.id = m.room_id")?;
    let mut insert =
        conn.prepare("INSERT OR IGNORE INTO search_postings (term, ts, room_num, seq) VALUES (?1, ?2, ?3, ?4)")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let (num, seq, ts, text, title): (i64, i64, i64, String, Option<String>) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        for term in index_terms(&text, title.as_deref()) {
            insert.execute(params![term, ts, num, seq])?;
        }
    }
    conn.execute("UPDATE search_meta SET tokenizer = ?1", [TOKENIZER_VERSION])?;
    conn.execute_batch("COMMIT")?;
    info!(messages, "search index built");
    Ok(())
}

/// A JSON array of strings, for `json_each` (room id lists can be longer than SQLite's parameter limit).
fn json_strings(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// The conditions on postings `p` shared by counts and scans: parameters `?2` from, `?3` to.
const TIMES: &str = "p.ts >= ?2 AND p.ts <= ?3";
/// And `?4` rooms (JSON, or NULL for every room).
const ROOMS: &str =
    "(?4 IS NULL OR p.room_num IN (SELECT num FROM rooms WHERE id IN (SELECT value FROM json_each(?4))))";

fn filter_params(f: &SearchFilter) -> (i64, i64, Option<String>) {
    (f.from_ts.unwrap_or(i64::MIN), f.to_ts.unwrap_or(i64::MAX), f.rooms.as_deref().map(json_strings))
}

#[async_trait]
impl Search for SqliteStore {
    async fn term_counts(&self, terms: &[String], filter: &SearchFilter, cap: u32) -> StoreResult<Vec<TermCount>> {
        let terms = terms.to_vec();
        let (from, to, rooms) = filter_params(filter);
        self.read(move |c| {
            let sql = format!(
                "SELECT count(*), coalesce(sum({ROOMS}), 0) FROM \
                 (SELECT p.room_num FROM search_postings p WHERE p.term = ?1 AND {TIMES} LIMIT ?5) p"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            terms
                .iter()
                .map(|t| {
                    stmt.query_row(params![t, from, to, rooms, cap], |r| {
                        Ok(TermCount { postings: r.get::<_, i64>(0)? as u64, in_rooms: r.get::<_, i64>(1)? as u64 })
                    })
                    .map_err(db)
                })
                .collect()
        })
        .await
    }

    async fn scan(&self, scan: &Scan<'_>) -> StoreResult<ScanPage> {
        let (driver, others, window) = (scan.driver.to_owned(), scan.others.to_vec(), scan.window);
        let (from, to, rooms) = filter_params(scan.filter);
        let authors = scan.filter.authors.as_deref().map(json_strings);
        let before = scan.before.unwrap_or(SearchKey { ts: i64::MAX, room: i64::MAX, seq: i64::MAX });
        // The tightest time bounds go in the plain `ts` range: SQLite bounds the index walk by the first range it
        // sees on `ts`, not the row-value ones (measured: 69 ms instead of 2 for a window of `the` on 1M messages).
        let upper = to.min(before.ts);
        self.read(move |c| {
            let tx = c.unchecked_transaction().map_err(db)?;
            // Where this window ends: the `window`-th posting, if there are that many.
            let last: Option<SearchKey> = tx
                .prepare_cached(&format!(
                    "SELECT p.ts, p.room_num, p.seq FROM search_postings p WHERE p.term = ?1 AND {TIMES} \
                     AND (p.ts, p.room_num, p.seq) < (?5, ?6, ?7) \
                     ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC LIMIT 1 OFFSET ?8"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![driver, from, upper, rooms, before.ts, before.room, before.seq, window.max(1) - 1],
                        |r| Ok(SearchKey { ts: r.get(0)?, room: r.get(1)?, seq: r.get(2)? }),
                    )
                    .optional()
                })
                .map_err(db)?;
            let floor = last.unwrap_or(SearchKey { ts: i64::MIN, room: i64::MIN, seq: i64::MIN });
            let mut sql = format!(
                "SELECT m.id, m.room_id, m.seq, m.author, m.ts, m.text, m.story_title, m.alert, m.client_id, \
                 m.replaced, m.file, p.ts, p.room_num, p.seq FROM search_postings p \
                 JOIN rooms r ON r.num = p.room_num JOIN messages m ON m.room_id = r.id AND m.seq = p.seq \
                 WHERE p.term = ?1 AND {TIMES} AND {ROOMS} AND (p.ts, p.room_num, p.seq) < (?5, ?6, ?7) \
                 AND (p.ts, p.room_num, p.seq) >= (?8, ?9, ?10) AND (?11 IS NULL OR m.author IN (SELECT value FROM json_each(?11)))"
            );
            let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(driver),
                Box::new(from.max(floor.ts)),
                Box::new(upper),
                Box::new(rooms),
                Box::new(before.ts),
                Box::new(before.room),
                Box::new(before.seq),
                Box::new(floor.ts),
                Box::new(floor.room),
                Box::new(floor.seq),
                Box::new(authors),
            ];
            for other in others {
                values.push(Box::new(other));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM search_postings o WHERE o.term = ?{} AND o.ts = p.ts \
                     AND o.room_num = p.room_num AND o.seq = p.seq)",
                    values.len()
                ));
            }
            sql.push_str(" ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC");
            let hits = query_all(&tx, &sql, rusqlite::params_from_iter(values.iter().map(|v| &**v)), |r| {
                Ok(Found {
                    message: message_from_row(r)?,
                    key: SearchKey { ts: r.get(11)?, room: r.get(12)?, seq: r.get(13)? },
                })
            })?;
            tx.commit().map_err(db)?;
            Ok(ScanPage { hits, last })
        })
        .await
    }
}
