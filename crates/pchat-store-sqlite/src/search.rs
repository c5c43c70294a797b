//! The search index on SQLite: `search_postings (part, term, ts, room_num, seq)`, a `WITHOUT ROWID` table whose
//! primary key is the index itself, in parts by time (`search_parts`; new postings go into the small newest part,
//! and queries walk the parts newest first). Appended messages' postings reach it through the writer's backlog
//! (`backlog.rs`), which every search reads beside the table, and so do imported messages'; replacements,
//! removals and clears write and delete postings in their own transaction. An index built by another tokenizer
//! version or layout is rebuilt when the database opens. See "Write cost" in `ARCHITECTURE.md`.

use std::collections::HashSet;

use async_trait::async_trait;
use pchat_core::text::{TOKENIZER_VERSION, index_terms};
use pchat_store::{Found, Scan, ScanPage, Search, SearchFilter, SearchKey, StoreResult, TermCount};
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

/// Postings a part of the index takes before a newer part starts (tests: a few, so that searches cross parts).
/// Measured on a history of 1M messages (`bench/RESULTS.md`): 2,000,000 cost 21-30 % of durable posting
/// throughput, 500,000 cost 10-21 %; search p95 stayed within 14 ms with about 50 parts.
#[cfg(not(test))]
const PART_SIZE: i64 = 500_000;
#[cfg(test)]
const PART_SIZE: i64 = 30;

/// The part that holds postings of time `?2`: the newest whose `from_ts` is not after it.
const PART_OF: &str = "(SELECT max(part) FROM search_parts WHERE from_ts <= ?2)";

/// Inserts postings (best sorted: neighbours share pages), each into the part of its time, and starts a new part
/// after the times already in the newest one when it is full. The one place postings are inserted.
pub(crate) fn insert_postings<'a>(
    conn: &Connection,
    entries: impl IntoIterator<Item = &'a crate::backlog::Entry>,
) -> rusqlite::Result<()> {
    let (newest, from): (i64, i64) = conn
        .prepare_cached("SELECT part, from_ts FROM search_parts ORDER BY part DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Postings of the newest part's times (nearly all) go in statements of ROWS rows: per-statement work was most
    // of the cost of one row. Older times (an import, a clock step back) go one by one into their own part.
    const ROWS: usize = 32;
    let mut older = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO search_postings (part, term, ts, room_num, seq) VALUES ({PART_OF}, ?1, ?2, ?3, ?4)"
    ))?;
    let values = |n: usize| vec!["(?, ?, ?, ?, ?)"; n].join(", ");
    let mut many = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO search_postings (part, term, ts, room_num, seq) VALUES {}",
        values(ROWS)
    ))?;
    let mut one = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO search_postings (part, term, ts, room_num, seq) VALUES {}",
        values(1)
    ))?;
    let (mut added, mut max_ts) = (0_i64, i64::MIN);
    let mut newest_rows: Vec<&crate::backlog::Entry> = Vec::with_capacity(ROWS);
    let mut flush = |rows: &mut Vec<&crate::backlog::Entry>| -> rusqlite::Result<i64> {
        let statement = if rows.len() == ROWS { &mut many } else { &mut one };
        let mut inserted = 0;
        for chunk in rows.chunks(if rows.len() == ROWS { ROWS } else { 1 }) {
            let params: Vec<&dyn rusqlite::ToSql> = chunk
                .iter()
                .flat_map(|(term, ts, room_num, seq)| -> [&dyn rusqlite::ToSql; 5] {
                    [&newest, term, ts, room_num, seq]
                })
                .collect();
            inserted += statement.execute(params.as_slice())? as i64;
        }
        rows.clear();
        Ok(inserted)
    };
    for entry in entries {
        if entry.1 >= from {
            max_ts = max_ts.max(entry.1);
            newest_rows.push(entry);
            if newest_rows.len() == ROWS {
                added += flush(&mut newest_rows)?;
            }
        } else {
            let (term, ts, room_num, seq) = entry;
            older.execute(params![term, ts, room_num, seq])?;
        }
    }
    added += flush(&mut newest_rows)?;
    if added > 0 {
        let full: bool = conn
            .prepare_cached(
                "UPDATE search_parts SET postings = postings + ?2, max_ts = max(coalesce(max_ts, ?3), ?3) \
                 WHERE part = ?1 RETURNING postings >= ?4 AND max_ts < 9223372036854775807",
            )?
            .query_row(params![newest, added, max_ts, PART_SIZE], |r| r.get(0))?;
        if full {
            conn.prepare_cached(
                "INSERT INTO search_parts (part, from_ts) SELECT part + 1, max_ts + 1 FROM search_parts WHERE part = ?1",
            )?
            .execute([newest])?;
        }
    }
    Ok(())
}

/// Adds a message's postings.
pub(crate) fn index(conn: &Connection, p: &Posting<'_>) -> StoreResult<()> {
    complete()?;
    let postings: Vec<_> =
        index_terms(p.text, p.title).into_iter().map(|term| (term, p.ts, p.room_num, p.seq)).collect();
    insert_postings(conn, &postings).map_err(db)
}

/// Removes a message's postings (the terms are found again from its text).
pub(crate) fn unindex(conn: &Connection, p: &Posting<'_>) -> StoreResult<()> {
    complete()?;
    let mut delete = conn
        .prepare_cached(&format!(
            "DELETE FROM search_postings WHERE part = {PART_OF} AND term = ?1 AND ts = ?2 AND room_num = ?3 AND seq = ?4"
        ))
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
    conn.execute_batch(
        "BEGIN IMMEDIATE; DELETE FROM search_postings; DELETE FROM search_pending; DELETE FROM search_parts; \
         INSERT INTO search_parts (part, from_ts) VALUES (1, -9223372036854775807 - 1);",
    )?;
    crate::backlog::index_selected(
        conn,
        "SELECT r.num, m.seq, m.ts, m.text, m.story_title FROM messages m JOIN rooms r ON r.id = m.room_id \
         ORDER BY m.ts",
    )?;
    conn.execute("UPDATE search_meta SET tokenizer = ?1", [TOKENIZER_VERSION])?;
    conn.execute_batch("COMMIT")?;
    info!(messages, "search index built");
    Ok(())
}

/// A JSON array of strings, for `json_each` (room id lists can be longer than SQLite's parameter limit).
pub(crate) fn json_strings(items: &[String]) -> String {
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

/// The index's parts, newest first, with the times each holds: (part, from, to), both inclusive.
fn parts(c: &Connection) -> StoreResult<Vec<(i64, i64, i64)>> {
    let rows = query_all(c, "SELECT part, from_ts FROM search_parts ORDER BY part DESC", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut upto = i64::MAX;
    Ok(rows
        .into_iter()
        .map(|(part, from)| {
            let part = (part, from, upto);
            upto = from.saturating_sub(1);
            part
        })
        .collect())
}

/// Those of `parts` (newest first) that hold postings of `term`, found in one statement (a seek per part). A
/// query per part costs a statement each: at 10,000,000 messages (about 240 parts) a word with few matches was
/// looked for in every part, three statements per part, and its search took up to 0.9 s.
fn holding(c: &Connection, parts: &[(i64, i64, i64)], term: &str) -> StoreResult<Vec<(i64, i64, i64)>> {
    let held: HashSet<i64> = query_all(
        c,
        "SELECT s.part FROM search_parts s \
         WHERE EXISTS (SELECT 1 FROM search_postings p WHERE p.part = s.part AND p.term = ?1)",
        [term],
        |r| r.get(0),
    )?
    .into_iter()
    .collect();
    Ok(parts.iter().filter(|p| held.contains(&p.0)).copied().collect())
}

/// The parts holding times between `lo` and `hi`, newest first.
fn overlapping(parts: &[(i64, i64, i64)], lo: i64, hi: i64) -> impl Iterator<Item = i64> + '_ {
    parts.iter().filter(move |(_, from, to)| *from <= hi && *to >= lo).map(|p| p.0)
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
            let parts = parts(c)?;
            let sql = format!(
                "SELECT count(*), coalesce(sum({ROOMS}), 0) FROM \
                 (SELECT p.room_num FROM search_postings p WHERE p.part = ?6 AND p.term = ?1 AND {TIMES} LIMIT ?5) p"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let mut counts = vec![TermCount::default(); terms.len()];
            for (count, term) in counts.iter_mut().zip(&terms) {
                // Newest part first, until the cap.
                for part in overlapping(&holding(c, &parts, term)?, from, to) {
                    let left = u64::from(cap).saturating_sub(count.postings);
                    if left == 0 {
                        break;
                    }
                    let (postings, in_rooms): (i64, i64) = stmt
                        .query_row(params![term, from, to, rooms, left, part], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(db)?;
                    count.postings += postings as u64;
                    count.in_rooms += in_rooms as u64;
                }
            }
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
            // Only the parts holding the driver: every posting of the window is in one of them.
            let parts = holding(&tx, &parts(&tx)?, &driver)?;
            let table_keys = |part: i64, limit: u32, offset: u32| {
                query_all(
                    &tx,
                    &format!(
                        "SELECT p.ts, p.room_num, p.seq FROM search_postings p WHERE p.part = ?9 AND p.term = ?1 \
                         AND {TIMES} AND (p.ts, p.room_num, p.seq) < (?4, ?5, ?6) \
                         ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC LIMIT ?7 OFFSET ?8"
                    ),
                    params![driver, from, upper, before.ts, before.room, before.seq, limit, offset, part],
                    |r| Ok(SearchKey { ts: r.get(0)?, room: r.get(1)?, seq: r.get(2)? }),
                )
            };
            // Where this window ends: the `window`-th posting, if there are that many. Parts hold disjoint times,
            // so walking them newest first walks the postings in order.
            let mut last: Option<SearchKey> = None;
            if tail_keys.is_empty() {
                let mut left = window;
                for part in overlapping(&parts, from, upper) {
                    if let Some(key) = table_keys(part, 1, left - 1)?.pop() {
                        last = Some(key);
                        break;
                    }
                    let n: i64 = tx
                        .prepare_cached(&format!(
                            "SELECT count(*) FROM (SELECT 1 FROM search_postings p WHERE p.part = ?5 AND p.term = ?1 \
                             AND {TIMES} AND (p.ts, p.room_num, p.seq) < (?6, ?7, ?8) LIMIT ?4)"
                        ))
                        .and_then(|mut st| {
                            st.query_row(
                                params![driver, from, upper, left, part, before.ts, before.room, before.seq],
                                |r| r.get(0),
                            )
                        })
                        .map_err(db)?;
                    left -= n as u32;
                }
            } else {
                let mut keys = Vec::new();
                for part in overlapping(&parts, from, upper) {
                    keys.extend(table_keys(part, window - keys.len() as u32, 0)?);
                    if keys.len() >= window as usize {
                        break;
                    }
                }
                keys.extend(&tail_keys);
                keys.sort_unstable_by(|a, b| b.cmp(a));
                keys.dedup();
                last = keys.get(window as usize - 1).copied();
            }
            let floor = last.unwrap_or(SearchKey { ts: i64::MIN, room: i64::MIN, seq: i64::MIN });
            // Another term is required of a posting in the table unless the backlog holds some of its postings:
            // then it is looked for in both, row by row.
            let (in_table, in_both): (Vec<&String>, Vec<&String>) =
                others.iter().partition(|o| backlog::keys_of(&tail, o).next().is_none());
            let mut sql = format!("SELECT {FOUND_COLUMNS}, p.ts, p.room_num, p.seq");
            for i in 0..in_both.len() {
                sql.push_str(&format!(
                    ", EXISTS (SELECT 1 FROM search_postings o WHERE o.part = p.part AND o.term = ?{} \
                     AND o.ts = p.ts AND o.room_num = p.room_num AND o.seq = p.seq)",
                    13 + i
                ));
            }
            sql.push_str(&format!(
                " FROM search_postings p \
                 JOIN rooms r ON r.num = p.room_num JOIN messages m ON m.room_id = r.id AND m.seq = p.seq \
                 WHERE p.part = ?12 AND p.term = ?1 AND {TIMES} AND {ROOMS} AND (p.ts, p.room_num, p.seq) < (?5, ?6, ?7) \
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
                Box::new(0_i64),
            ];
            values.extend(in_both.iter().map(|o| Box::new((*o).clone()) as Box<dyn rusqlite::ToSql>));
            for other in &in_table {
                values.push(Box::new((*other).clone()));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM search_postings o WHERE o.part = p.part AND o.term = ?{} \
                     AND o.ts = p.ts AND o.room_num = p.room_num AND o.seq = p.seq)",
                    values.len()
                ));
            }
            sql.push_str(" ORDER BY p.ts DESC, p.room_num DESC, p.seq DESC");
            let mut hits: Vec<Found> = Vec::new();
            for part in overlapping(&parts, from.max(floor.ts), upper) {
                values[11] = Box::new(part);
                let rows = query_all(&tx, &sql, rusqlite::params_from_iter(values.iter().map(|v| &**v)), |r| {
                    let key = SearchKey { ts: r.get(11)?, room: r.get(12)?, seq: r.get(13)? };
                    let mut held = true;
                    for (i, other) in in_both.iter().enumerate() {
                        held &= r.get::<_, bool>(14 + i)? || backlog::holds(&tail, other, key);
                    }
                    held.then(|| message_from_row(r).map(|message| Found { message, key })).transpose()
                })?;
                hits.extend(rows.into_iter().flatten());
            }
            if !tail_keys.is_empty() {
                let nums = room_nums(&tx, &rooms)?;
                let mut message = tx
                    .prepare_cached(&format!(
                        "SELECT {FOUND_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id \
                         WHERE r.num = ?1 AND m.seq = ?2 AND (?3 IS NULL OR m.author IN (SELECT value FROM json_each(?3)))"
                    ))
                    .map_err(db)?;
                let mut in_index = tx
                    .prepare_cached(&format!(
                        "SELECT EXISTS (SELECT 1 FROM search_postings WHERE part = {PART_OF} AND term = ?1 \
                         AND ts = ?2 AND room_num = ?3 AND seq = ?4)"
                    ))
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
