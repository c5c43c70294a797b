//! The search index on SQLite: `search_postings (term, ts, room_num, seq)`, a `WITHOUT ROWID` table whose primary
//! key is the index itself. Appended messages' postings reach it through the writer's backlog (`backlog.rs`), which
//! every search reads beside the table; replacements, removals, clears and imports write and delete postings in
//! their own transaction. An index built by another tokenizer version is rebuilt when the database opens.

use async_trait::async_trait;
use pchat_core::text::{TOKENIZER_VERSION, index_terms};
use pchat_store::{Found, Scan, ScanPage, Search, SearchFilter, SearchKey, StoreResult, TermCount};
use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};
use tracing::info;

use crate::backlog;
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

/// Fails a write that would touch the index without having been submitted as one that does (the backlog may
/// hold postings it would miss).
fn complete() -> StoreResult<()> {
    if crate::writer::index_complete() {
        return Ok(());
    }
    tracing::error!("a write touched the search index without write_indexed; it is refused");
    Err(pchat_store::StoreError::Unavailable("internal error: search index written out of order".into()))
}

/// Adds a message's postings.
pub(crate) fn index(conn: &Connection, p: &Posting<'_>) -> StoreResult<()> {
    complete()?;
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
    complete()?;
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
    complete()?;
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
    if messages == 0 {
        // A new database: nothing to index, nothing to announce.
        conn.execute("UPDATE search_meta SET tokenizer = ?1", [TOKENIZER_VERSION])?;
        return Ok(());
    }
    info!(messages, from = built, to = TOKENIZER_VERSION, "building the search index");
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM search_postings; DELETE FROM search_pending;")?;
    crate::backlog::index_selected(
        conn,
        "SELECT r.num, m.seq, m.ts, m.text, m.story_title FROM messages m JOIN rooms r ON r.id = m.room_id",
    )?;
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

/// The numbers of the filter's rooms (`None`: every room).
fn room_nums(c: &Connection, rooms: &Option<String>) -> StoreResult<Option<HashSet<i64>>> {
    let Some(rooms) = rooms else { return Ok(None) };
    let nums = query_all(c, "SELECT num FROM rooms WHERE id IN (SELECT value FROM json_each(?1))", [rooms], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(Some(nums.into_iter().collect()))
}

/// The columns of a found message, for [`message_from_row`].
const FOUND_COLUMNS: &str =
    "m.id, m.room_id, m.seq, m.author, m.ts, m.text, m.story_title, m.alert, m.client_id, m.replaced, m.file";

#[async_trait]
impl Search for SqliteStore {
    async fn term_counts(&self, terms: &[String], filter: &SearchFilter, cap: u32) -> StoreResult<Vec<TermCount>> {
        let terms = terms.to_vec();
        let (from, to, rooms) = filter_params(filter);
        let backlog = self.backlog().clone();
        self.read(move |c| {
            // Loaded before the reads below (see `backlog.rs`).
            let tail = backlog.load();
            let sql = format!(
                "SELECT count(*), coalesce(sum({ROOMS}), 0) FROM \
                 (SELECT p.room_num FROM search_postings p WHERE p.term = ?1 AND {TIMES} LIMIT ?5) p"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let mut counts = terms
                .iter()
                .map(|t| {
                    stmt.query_row(params![t, from, to, rooms, cap], |r| {
                        Ok(TermCount { postings: r.get::<_, i64>(0)? as u64, in_rooms: r.get::<_, i64>(1)? as u64 })
                    })
                    .map_err(db)
                })
                .collect::<StoreResult<Vec<_>>>()?;
            if !tail.is_empty() {
                let nums = room_nums(c, &rooms)?;
                for (count, term) in counts.iter_mut().zip(&terms) {
                    for key in backlog::keys_of(&tail, term).filter(|k| k.ts >= from && k.ts <= to) {
                        count.postings += 1;
                        count.in_rooms += u64::from(nums.as_ref().is_none_or(|n| n.contains(&key.room)));
                    }
                    count.postings = count.postings.min(u64::from(cap));
                    count.in_rooms = count.in_rooms.min(count.postings);
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn scan(&self, scan: &Scan<'_>) -> StoreResult<ScanPage> {
        let (driver, others, window) = (scan.driver.to_owned(), scan.others.to_vec(), scan.window.max(1));
        let (from, to, rooms) = filter_params(scan.filter);
        let authors = scan.filter.authors.as_deref().map(json_strings);
        let before = scan.before.unwrap_or(SearchKey { ts: i64::MAX, room: i64::MAX, seq: i64::MAX });
        // The tightest time bounds go in the plain `ts` range: SQLite bounds the index walk by the first range it
        // sees on `ts`, not the row-value ones (measured: 69 ms instead of 2 for a window of `the` on 1M messages).
        let upper = to.min(before.ts);
        let backlog = self.backlog().clone();
        self.read(move |c| {
            // Loaded before the transaction's first read (see `backlog.rs`).
            let tail = backlog.load();
            let tx = c.unchecked_transaction().map_err(db)?;
            // The driver's postings not yet in the table, newest first.
            let mut tail_keys: Vec<SearchKey> =
                backlog::keys_of(&tail, &driver).filter(|k| k.ts >= from && k.ts <= upper && *k < before).collect();
            tail_keys.sort_unstable_by(|a, b| b.cmp(a));
            tail_keys.dedup();
            let table_keys = |limit: u32, offset: u32| {
                query_all(
                    &tx,
                    &format!(
                        "SELECT p.ts, p.room_num, p.seq FROM search_postings p WHERE p.term = ?1 AND {TIMES} \
                         AND (p.ts, p.room_num, p.seq) < (?4, ?5, ?6) \
                         ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC LIMIT ?7 OFFSET ?8"
                    ),
                    params![driver, from, upper, before.ts, before.room, before.seq, limit, offset],
                    |r| Ok(SearchKey { ts: r.get(0)?, room: r.get(1)?, seq: r.get(2)? }),
                )
            };
            // Where this window ends: the `window`-th posting, if there are that many.
            let last: Option<SearchKey> = if tail_keys.is_empty() {
                table_keys(1, window - 1)?.pop()
            } else {
                let mut keys = table_keys(window, 0)?;
                keys.extend(&tail_keys);
                keys.sort_unstable_by(|a, b| b.cmp(a));
                keys.dedup();
                keys.get(window as usize - 1).copied()
            };
            let floor = last.unwrap_or(SearchKey { ts: i64::MIN, room: i64::MIN, seq: i64::MIN });
            // Another term is required of a posting in the table unless the backlog holds some of its postings:
            // then it is looked for in both, row by row.
            let (in_table, in_both): (Vec<&String>, Vec<&String>) =
                others.iter().partition(|o| backlog::keys_of(&tail, o).next().is_none());
            let mut sql = format!("SELECT {FOUND_COLUMNS}, p.ts, p.room_num, p.seq");
            for i in 0..in_both.len() {
                sql.push_str(&format!(
                    ", EXISTS (SELECT 1 FROM search_postings o WHERE o.term = ?{} AND o.ts = p.ts \
                     AND o.room_num = p.room_num AND o.seq = p.seq)",
                    12 + i
                ));
            }
            sql.push_str(&format!(
                " FROM search_postings p \
                 JOIN rooms r ON r.num = p.room_num JOIN messages m ON m.room_id = r.id AND m.seq = p.seq \
                 WHERE p.term = ?1 AND {TIMES} AND {ROOMS} AND (p.ts, p.room_num, p.seq) < (?5, ?6, ?7) \
                 AND (p.ts, p.room_num, p.seq) >= (?8, ?9, ?10) AND (?11 IS NULL OR m.author IN (SELECT value FROM json_each(?11)))"
            ));
            let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(driver.clone()),
                Box::new(from.max(floor.ts)),
                Box::new(upper),
                Box::new(rooms.clone()),
                Box::new(before.ts),
                Box::new(before.room),
                Box::new(before.seq),
                Box::new(floor.ts),
                Box::new(floor.room),
                Box::new(floor.seq),
                Box::new(authors.clone()),
            ];
            values.extend(in_both.iter().map(|o| Box::new((*o).clone()) as Box<dyn rusqlite::ToSql>));
            for other in &in_table {
                values.push(Box::new((*other).clone()));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM search_postings o WHERE o.term = ?{} AND o.ts = p.ts \
                     AND o.room_num = p.room_num AND o.seq = p.seq)",
                    values.len()
                ));
            }
            sql.push_str(" ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC");
            let rows = query_all(&tx, &sql, rusqlite::params_from_iter(values.iter().map(|v| &**v)), |r| {
                let key = SearchKey { ts: r.get(11)?, room: r.get(12)?, seq: r.get(13)? };
                let mut held = true;
                for (i, other) in in_both.iter().enumerate() {
                    held &= r.get::<_, bool>(14 + i)? || backlog::holds(&tail, other, key);
                }
                held.then(|| message_from_row(r).map(|message| Found { message, key })).transpose()
            })?;
            let mut hits: Vec<Found> = rows.into_iter().flatten().collect();
            if !tail_keys.is_empty() {
                let nums = room_nums(&tx, &rooms)?;
                let mut message = tx
                    .prepare_cached(&format!(
                        "SELECT {FOUND_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id \
                         WHERE r.num = ?1 AND m.seq = ?2 AND (?3 IS NULL OR m.author IN (SELECT value FROM json_each(?3)))"
                    ))
                    .map_err(db)?;
                let mut in_index = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM search_postings WHERE term = ?1 AND ts = ?2 AND room_num = ?3 \
                         AND seq = ?4)",
                    )
                    .map_err(db)?;
                for key in tail_keys.iter().filter(|k| **k >= floor) {
                    if nums.as_ref().is_some_and(|n| !n.contains(&key.room)) {
                        continue;
                    }
                    let mut held = true;
                    for other in &others {
                        held = held
                            && (backlog::holds(&tail, other, *key)
                                || in_index
                                    .query_row(params![other, key.ts, key.room, key.seq], |r| r.get::<_, bool>(0))
                                    .map_err(db)?);
                    }
                    if !held {
                        continue;
                    }
                    if let Some(found) = message
                        .query_row(params![key.room, key.seq, authors], message_from_row)
                        .optional()
                        .map_err(db)?
                    {
                        hits.push(Found { message: found, key: *key });
                    }
                }
                hits.sort_unstable_by_key(|f| std::cmp::Reverse(f.key));
                hits.dedup_by(|a, b| a.key == b.key);
            }
            tx.commit().map_err(db)?;
            Ok(ScanPage { hits, last })
        })
        .await
    }
}
