//! The search index's backlog: postings committed with their messages but not yet in `search_postings`.
//!
//! Inserting a message's ~26 postings into the term-ordered index in its own commit dirties ~26 index pages, and
//! the writer spent most of its time writing those pages to the WAL (`bench/RESULTS.md`). So an append commits its
//! message and a row in `search_pending` (a small insertion-ordered table: a page or two per commit), and its
//! postings stay in the writer's memory as a sorted *run*. After [`MERGE_AFTER`] the runs then held are merged into
//! `search_postings` in term order, [`CHUNK`] postings per commit, so that one index page takes the postings of
//! many messages at once and no commit waits long for the merge. When a merge completes, its messages' pending
//! rows are deleted in the same transaction.
//!
//! Readers see the runs still to merge ([`Published`]): a search loads them *before* its read transaction starts,
//! and a run's postings leave the published list only after the commit that put them in the table, so every
//! committed message's postings are in the table of the reader's snapshot, in the list it loaded, or in both (the
//! search removes duplicates).
//!
//! An import queues its messages' postings as appends do. Writes that read or delete postings (replacing or
//! removing messages, clearing or deleting a room) first put the whole backlog into the table, in their own
//! batch: they see the index complete. On a clean stop the backlog is written out; after a crash, the messages
//! named in `search_pending` are indexed again when the database opens ([`recover`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pchat_core::text::index_terms;
use pchat_store::SearchKey;
use rusqlite::{Connection, params};
use tracing::info;

/// A posting: term, ts, room number, seq.
pub(crate) type Entry = pchat_store::Posting;

/// How long the oldest run waits before a merge starts (tests merge at once, in tiny chunks, to exercise every
/// state a reader can meet).
#[cfg(not(test))]
const MERGE_AFTER: Duration = Duration::from_millis(1000);
#[cfg(test)]
const MERGE_AFTER: Duration = Duration::from_millis(2);
/// Postings a merge inserts per commit, at least (more when the merge is large: it takes at most [`STEPS`]
/// commits).
#[cfg(not(test))]
const CHUNK: usize = 1024;
#[cfg(test)]
const CHUNK: usize = 7;
/// Most commits one merge is spread over.
const STEPS: usize = 64;
/// A backlog this large is written out at once (the writer is falling behind: bound the memory).
const MAX_BACKLOG: usize = 1_000_000;
/// Postings [`index_selected`] sorts and inserts at a time (half a part of the index, so parts fill evenly).
const SELECT_BATCH: usize = 250_000;

/// The postings of one committed batch of appends, sorted; the first `done` are in `search_postings` already.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    entries: Arc<Vec<Entry>>,
    done: usize,
    /// The highest `search_pending` id when the run was committed.
    last_pending: i64,
    born: Instant,
}

impl Run {
    fn rest(&self) -> &[Entry] {
        &self.entries[self.done..]
    }
}

/// The runs not yet wholly merged, as readers see them.
pub(crate) type Tail = Arc<Vec<Run>>;

/// Where the writer publishes the backlog for readers.
#[derive(Clone, Default)]
pub(crate) struct Published(Arc<RwLock<Tail>>);

impl Published {
    /// The backlog as last committed: load it before the read transaction starts.
    pub(crate) fn load(&self) -> Tail {
        match self.0.read() {
            Ok(tail) => Arc::clone(&tail),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn store(&self, tail: Tail) {
        match self.0.write() {
            Ok(mut slot) => *slot = tail,
            Err(poisoned) => *poisoned.into_inner() = tail,
        }
    }
}

/// The keys of `term`'s postings in the tail (unordered).
pub(crate) fn keys_of<'a>(tail: &'a [Run], term: &'a str) -> impl Iterator<Item = SearchKey> + 'a {
    tail.iter().flat_map(move |run| pchat_store::keys_in(run.rest(), term))
}

/// Whether the tail holds this posting.
pub(crate) fn holds(tail: &[Run], term: &str, key: SearchKey) -> bool {
    tail.iter().any(|run| pchat_store::holds_in(run.rest(), term, key))
}

thread_local! {
    /// Postings of the messages appended in the writer's open batch: at its commit they become a run (or go
    /// straight into the table when a write that needs the index complete follows them in the batch).
    static DEFERRED: std::cell::RefCell<Vec<Entry>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Queues the postings of a message's `terms` (from [`index_terms`], computed before the write) and records the
/// message in `search_pending` (on the writer thread, inside an append).
pub(crate) fn defer(conn: &Connection, room_num: i64, ts: i64, seq: i64, terms: Vec<String>) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO search_pending (room_num, seq) VALUES (?1, ?2)")?
        .execute(params![room_num, seq])?;
    DEFERRED.with_borrow_mut(|d| d.extend(terms.into_iter().map(|term| (term, ts, room_num, seq))));
    Ok(())
}

/// How many postings the open batch has queued (a write that fails forgets what it queued with
/// [`forget_deferred_after`]).
pub(crate) fn deferred_mark() -> usize {
    DEFERRED.with_borrow(Vec::len)
}

pub(crate) fn forget_deferred_after(mark: usize) {
    DEFERRED.with_borrow_mut(|d| d.truncate(mark));
}

/// The writer's backlog (owned by the writer thread).
#[derive(Default)]
pub(crate) struct Backlog {
    runs: Vec<Run>,
    /// How many runs, from the front, the merge under way covers (0: none under way).
    merging: usize,
    published: Published,
}

/// What a batch does to the backlog, applied only once the batch has committed.
#[derive(Default)]
pub(crate) struct Change {
    /// The whole backlog went into the table.
    flushed: bool,
    /// A merge starts over this many runs.
    started: Option<usize>,
    /// How far the merging runs are after this batch's chunk.
    progress: Option<Vec<usize>>,
    /// The merge completed (its pending rows are deleted).
    finished: bool,
    /// The batch's own postings.
    run: Option<Run>,
}

impl Backlog {
    pub(crate) fn new(published: Published) -> Self {
        Self { runs: Vec::new(), merging: 0, published }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How long the writer may wait for work before it should merge (`None`: nothing to merge).
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        if self.merging > 0 {
            return Some(Duration::ZERO);
        }
        self.runs.first().map(|run| MERGE_AFTER.saturating_sub(run.born.elapsed()))
    }

    /// Puts the whole backlog and the batch's postings so far into the table (before a write that reads or deletes
    /// postings).
    pub(crate) fn flush_all(&self, conn: &Connection, change: &mut Change) -> rusqlite::Result<()> {
        let mut postings = DEFERRED.with_borrow_mut(std::mem::take);
        if !change.flushed && !self.runs.is_empty() {
            postings.extend(self.runs.iter().flat_map(|r| r.rest().iter().cloned()));
            change.flushed = true;
            change.started = None;
            change.progress = None;
            change.finished = false;
        }
        if postings.is_empty() {
            return Ok(());
        }
        postings.sort_unstable();
        crate::search::insert_postings(conn, &postings)?;
        conn.prepare_cached("DELETE FROM search_pending")?.execute([])?;
        Ok(())
    }

    /// Before the batch commits: its postings become a run, and a merge starts or goes on by one chunk.
    pub(crate) fn end_batch(&self, conn: &Connection, change: &mut Change) -> rusqlite::Result<()> {
        let mut postings = DEFERRED.with_borrow_mut(std::mem::take);
        let runs: &[Run] = if change.flushed { &[] } else { &self.runs };
        let backlog: usize = runs.iter().map(|r| r.rest().len()).sum::<usize>() + postings.len();
        if backlog >= MAX_BACKLOG {
            // Falling behind: write everything now.
            DEFERRED.with_borrow_mut(|d| d.append(&mut postings));
            return self.flush_all(conn, change);
        }
        if !postings.is_empty() {
            postings.sort_unstable();
            let last_pending: i64 =
                conn.prepare_cached("SELECT coalesce(max(id), 0) FROM search_pending")?.query_row([], |r| r.get(0))?;
            change.run = Some(Run { entries: Arc::new(postings), done: 0, last_pending, born: Instant::now() });
        }
        if change.flushed {
            return Ok(());
        }
        let merging = match self.merging {
            0 if self.runs.first().is_some_and(|r| r.born.elapsed() >= MERGE_AFTER) => {
                change.started = Some(self.runs.len());
                self.runs.len()
            }
            m => m,
        };
        if merging == 0 {
            return Ok(());
        }
        // The next CHUNK postings of the merging runs in term order: each run is sorted, so what is merged of each
        // is a prefix of it.
        let merged = &self.runs[..merging];
        let mut done: Vec<usize> = merged.iter().map(|r| r.done).collect();
        let mut heap: BinaryHeap<Reverse<(&Entry, usize)>> =
            merged.iter().enumerate().filter_map(|(i, r)| r.entries.get(r.done).map(|e| Reverse((e, i)))).collect();
        let size = CHUNK.max(merged.iter().map(|r| r.entries.len()).sum::<usize>() / STEPS);
        let mut chunk = Vec::with_capacity(size);
        while chunk.len() < size {
            let Some(Reverse((entry, i))) = heap.pop() else { break };
            chunk.push(entry);
            done[i] += 1;
            if let Some(next) = merged[i].entries.get(done[i]) {
                heap.push(Reverse((next, i)));
            }
        }
        crate::search::insert_postings(conn, chunk)?;
        if heap.is_empty() {
            let last = merged.iter().map(|r| r.last_pending).max().unwrap_or(0);
            conn.prepare_cached("DELETE FROM search_pending WHERE id <= ?1")?.execute([last])?;
            change.finished = true;
        }
        change.progress = Some(done);
        Ok(())
    }

    /// After the batch committed: the backlog becomes what the batch made it, and readers see it.
    pub(crate) fn apply(&mut self, change: Change) {
        let before = (self.runs.len(), self.merging);
        let mut changed = false;
        if change.flushed {
            changed = !self.runs.is_empty();
            self.runs.clear();
            self.merging = 0;
        } else {
            if let Some(m) = change.started {
                self.merging = m;
            }
            if let Some(progress) = change.progress {
                for (run, done) in self.runs.iter_mut().zip(progress) {
                    run.done = done;
                }
                changed = true;
            }
            if change.finished {
                self.runs.drain(..self.merging);
                self.merging = 0;
            }
        }
        if let Some(run) = change.run {
            self.runs.push(run);
            changed = true;
        }
        if changed || before != (self.runs.len(), self.merging) {
            self.published.store(Arc::new(self.runs.clone()));
        }
    }
}

/// Indexes the messages `select` returns as `(room_num, seq, ts, text, story_title)`, inserting their postings
/// sorted, [`SELECT_BATCH`] at a time (inside the caller's transaction; select in time order, so that the index's
/// parts split by time as they fill).
pub(crate) fn index_selected(conn: &Connection, select: &str) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(select)?;
    let mut rows = statement.query([])?;
    let mut postings = Vec::new();
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            let (num, seq, ts, text, title): (i64, i64, i64, String, Option<String>) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            postings.extend(index_terms(&text, title.as_deref()).into_iter().map(|t| (t, ts, num, seq)));
        }
        if row.is_none() || postings.len() >= SELECT_BATCH {
            postings.sort_unstable();
            crate::search::insert_postings(conn, &postings)?;
            postings.clear();
        }
        if row.is_none() {
            return Ok(());
        }
    }
}

/// Indexes the messages a crash left in `search_pending` (when the database opens, before the writer starts).
pub(crate) fn recover(conn: &Connection) -> rusqlite::Result<()> {
    let pending: i64 = conn.query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0))?;
    if pending == 0 {
        return Ok(());
    }
    info!(messages = pending, "indexing messages whose postings were not yet merged when pchat stopped");
    let tx = conn.unchecked_transaction()?;
    index_selected(
        &tx,
        "SELECT p.room_num, m.seq, m.ts, m.text, m.story_title FROM search_pending p \
         JOIN rooms r ON r.num = p.room_num JOIN messages m ON m.room_id = r.id AND m.seq = p.seq",
    )?;
    tx.execute("DELETE FROM search_pending", [])?;
    tx.commit()
}
