//! The single writer thread and its group commit.
//!
//! A write is a closure over the connection. The thread takes the first queued write, then every write queued
//! behind it (up to [`MAX_BATCH`]), and runs them all inside one `BEGIN IMMEDIATE … COMMIT`, each in its own
//! savepoint so that one failing write rolls back alone. After the commit it publishes the batch's events in
//! order and answers every caller; if the commit fails, every write of the batch fails and no event is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use pchat_store::{StoreError, StoreEvent, StoreResult};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::backlog::{Backlog, Change};

/// The most writes committed together. Large enough that commit cost is shared, small enough that one batch
/// does not hold the lock for long.
const MAX_BATCH: usize = 512;
/// How often the checkpoint thread copies the WAL into the database file (see `Writer::start_checkpoints`).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One queued write, type-erased so that writes with different results share a queue.
trait Job: Send {
    /// Runs the write inside the open transaction; pushes the events it causes when it succeeds.
    fn run(&mut self, conn: &Connection, events: &mut Vec<StoreEvent>);
    /// Answers the caller: with the write's own result if the batch committed, otherwise with `commit_error`.
    fn finish(self: Box<Self>, commit_error: Option<&str>);
    /// Whether the write failed in the database itself (I/O, a full disk), not for a reason of its own.
    fn failed_in_database(&self) -> bool;
    /// What the write does with search postings.
    fn postings(&self) -> Postings;
}

/// What a write does with search postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Postings {
    /// Nothing.
    Untouched,
    /// Queues some ([`crate::backlog::defer`]): an append.
    Defers,
    /// Reads, writes or deletes them in the index: it runs after the whole backlog is in the index.
    Indexes,
}

thread_local! {
    /// Whether the write running on the writer thread may touch the index (see [`index_complete`]).
    static INDEXES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the running write was submitted with [`Writer::write_indexed`], after the backlog went into the index:
/// only such a write may read, write or delete postings, or it would miss those still in the backlog.
pub(crate) fn index_complete() -> bool {
    INDEXES.get()
}

type WriteFn<T> = Box<dyn FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send>;

struct TypedJob<T> {
    write: Option<WriteFn<T>>,
    result: Option<StoreResult<T>>,
    failed_in_database: bool,
    postings: Postings,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> Job for TypedJob<T> {
    fn run(&mut self, conn: &Connection, events: &mut Vec<StoreEvent>) {
        let Some(write) = self.write.take() else {
            return;
        };
        let deferred = crate::backlog::deferred_mark();
        let result = (|| {
            // Kept prepared: every write runs these (preparing them each time showed in profiles).
            run_cached(conn, "SAVEPOINT job")?;
            let mut own_events = Vec::new();
            // A write that panics fails alone: its savepoint is rolled back and the writer carries on.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(conn, &mut own_events)))
                .unwrap_or_else(|_| {
                    error!("a database write panicked; it is rolled back and the writer carries on");
                    Err(StoreError::Unavailable("the write failed unexpectedly".into()))
                });
            match outcome {
                Ok(value) => {
                    run_cached(conn, "RELEASE job")?;
                    events.append(&mut own_events);
                    Ok(value)
                }
                Err(e) => {
                    crate::backlog::forget_deferred_after(deferred);
                    conn.execute_batch("ROLLBACK TO job; RELEASE job").map_err(crate::store::unavailable)?;
                    Err(e)
                }
            }
        })();
        self.failed_in_database = matches!(result, Err(StoreError::Unavailable(_)));
        self.result = Some(result);
    }

    fn failed_in_database(&self) -> bool {
        self.failed_in_database
    }

    fn postings(&self) -> Postings {
        self.postings
    }

    fn finish(self: Box<Self>, commit_error: Option<&str>) {
        let answer = match (commit_error, self.result) {
            (None, Some(result)) => result,
            (Some(e), _) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            (None, None) => Err(StoreError::Unavailable("write was not run".into())),
        };
        // The caller may have gone away (a dropped request); the write stands either way.
        let _ = self.reply.send(answer);
    }
}

pub(crate) struct Writer {
    queue: std_mpsc::Sender<Box<dyn Job>>,
    health: Arc<Health>,
    /// The search postings not yet merged into the index, for readers.
    backlog: crate::backlog::Published,
    thread: Option<thread::JoinHandle<()>>,
}

/// Dropping the writer (the store closing) waits for its thread to finish: it writes the search backlog out
/// first, and a process that exits or opens the file again right after closing the store must find it written,
/// not cut short (which the next start would repair by indexing the pending messages again, slowly for an
/// import's worth).
impl Drop for Writer {
    fn drop(&mut self) {
        let (closed, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the writer thread tells the rest of the store about itself.
#[derive(Default)]
pub(crate) struct Health {
    /// False once the thread has ended (after a panic outside a write, say): nothing can be written any more.
    stopped: AtomicBool,
    /// Why the latest batch failed in the database (a full disk, an I/O error), until a batch succeeds.
    failing: Mutex<Option<String>>,
}

impl Health {
    /// Whether writes work: an error saying why not otherwise.
    pub(crate) fn check(&self) -> StoreResult<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database writer has stopped".into()));
        }
        match self.failing.lock().ok().and_then(|f| f.clone()) {
            Some(why) => Err(StoreError::Unavailable(format!("writes are failing: {why}"))),
            None => Ok(()),
        }
    }

    /// Why the store can no longer work at all (the writer thread is gone).
    pub(crate) fn fatal(&self) -> Option<String> {
        self.stopped.load(Ordering::Acquire).then(|| "the SQLite writer thread has stopped".to_owned())
    }

    fn record(&self, failure: Option<String>) {
        if let Ok(mut slot) = self.failing.lock() {
            *slot = failure;
        }
    }
}

fn run_cached(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(crate::store::unavailable)
}

/// Marks the writer stopped however its thread ends (returning, or unwinding from a panic).
struct StoppedOnDrop(Arc<Health>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        if thread::panicking() {
            error!("the SQLite writer thread panicked: no write can be made any more");
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn`. It ends when the `Writer` is dropped.
    pub(crate) fn start(conn: Connection, events: mpsc::UnboundedSender<StoreEvent>) -> std::io::Result<Self> {
        let (queue, jobs) = std_mpsc::channel::<Box<dyn Job>>();
        let health = Arc::new(Health::default());
        let thread_health = Arc::clone(&health);
        let backlog = crate::backlog::Published::default();
        let owned = Backlog::new(backlog.clone());
        let thread = thread::Builder::new()
            .name("pchat-sqlite-writer".into())
            .spawn(move || run(conn, jobs, events, thread_health, owned))?;
        Ok(Self { queue, health, backlog, thread: Some(thread) })
    }

    /// The search postings committed and not yet merged into the index.
    pub(crate) fn backlog(&self) -> &crate::backlog::Published {
        &self.backlog
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// Starts the checkpoint thread: every [`CHECKPOINT_EVERY`] it copies what the WAL holds into the database file (a passive
    /// checkpoint: it never blocks the writer or readers), so the writer's commits do not pay for it. In the
    /// writer's own thread, checkpoints were 9 % of its time under load with search postings. Every 100 ms, each
    /// checkpoint's sync of the database file (15–46 ms under load) held up the writer's own syncs often enough
    /// that acks at 80 % of the maximum rate waited 31–279 ms at p99; once a second, a page rewritten by many posts
    /// is also copied once instead of ten times (bench/RESULTS.md). It ends with the writer.
    pub(crate) fn start_checkpoints(
        &self,
        path: &std::path::Path,
        durability: crate::Durability,
    ) -> std::io::Result<()> {
        let conn = crate::open_connection(path, durability).map_err(std::io::Error::other)?;
        let health = Arc::downgrade(&self.health);
        thread::Builder::new().name("pchat-sqlite-checkpoint".into()).spawn(move || {
            let mut failing = false;
            loop {
                thread::sleep(CHECKPOINT_EVERY);
                match health.upgrade() {
                    Some(h) if !h.stopped.load(Ordering::Acquire) => {}
                    _ => return,
                }
                // A failure (a full disk) is logged once until checkpoints work again; the writer reports its own.
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "sqlite checkpoint failed; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                    Ok(()) => failing = false,
                }
            }
        })?;
        Ok(())
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, Postings::Untouched).await
    }

    /// A write that reads, writes or deletes search postings in the index.
    pub(crate) async fn write_indexed<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, Postings::Indexes).await
    }

    /// A write that may queue search postings ([`crate::backlog::defer`]) and must not read or delete any.
    pub(crate) async fn append<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, Postings::Defers).await
    }

    async fn submit<T, F>(&self, f: F, postings: Postings) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // Compliance events pending for this write are inserted in its savepoint, after it succeeds.
        let captured = pchat_store::compliance::take_pending();
        let write = move |conn: &Connection, events: &mut Vec<StoreEvent>| {
            let value = f(conn, events)?;
            crate::store::insert_captured(conn, &captured)?;
            Ok(value)
        };
        let job = TypedJob {
            write: Some(Box::new(write) as WriteFn<T>),
            result: None,
            failed_in_database: false,
            postings,
            reply,
        };
        self.queue
            .send(Box::new(job))
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?
    }
}

fn run(
    conn: Connection,
    jobs: std_mpsc::Receiver<Box<dyn Job>>,
    feed: mpsc::UnboundedSender<StoreEvent>,
    health: Arc<Health>,
    mut backlog: Backlog,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut events = Vec::new();
    // Declared after the batch, so dropped before it: the writer is marked stopped before any caller of the batch
    // being written hears that its write failed.
    let _stopped = StoppedOnDrop(Arc::clone(&health));
    loop {
        // With postings to merge, a writer left idle merges them (a batch of no writes).
        match backlog.idle_timeout() {
            None => match jobs.recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            },
            Some(wait) => match jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            },
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut change = Change::default();
        let outcome = commit_batch(&conn, &mut batch, &mut events, &backlog, &mut change);
        match &outcome {
            Ok(()) => backlog.apply(change),
            Err(e) => {
                error!(error = %e, writes = batch.len(), "sqlite batch failed to commit");
                crate::backlog::forget_deferred_after(0);
                let _ = conn.execute_batch("ROLLBACK");
                events.clear();
            }
        }
        for event in events.drain(..) {
            // Nobody listening (tests, CLI tools) is fine.
            let _ = feed.send(event);
        }
        let commit_error = outcome.err().map(|e| e.to_string());
        let database_failure = commit_error.clone().or_else(|| {
            batch.iter().any(|j| j.failed_in_database()).then(|| "a write failed in the database".to_owned())
        });
        health.record(database_failure);
        if batch.is_empty() && commit_error.is_some() {
            // A merge of the backlog failed (a full disk, say): try again later rather than at once.
            thread::sleep(std::time::Duration::from_secs(1));
        }
        if crate::failpoint("sqlite-writer-dies") && DIE.with(std::cell::Cell::get) {
            panic!("failpoint sqlite-writer-dies");
        }
        for job in batch.drain(..) {
            job.finish(commit_error.as_deref());
        }
    }
    // Every handle is gone (the store is closing): the backlog goes into the index now rather than being indexed
    // again at the next start.
    if !backlog.is_empty() {
        let mut change = Change::default();
        let flushed = conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| backlog.flush_all(&conn, &mut change))
            .and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(e) = flushed {
            error!(error = %e, "could not write the search backlog at shutdown; it is indexed at the next start");
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

thread_local! {
    /// Set by a write under the `sqlite-writer-dies` failpoint: the thread then panics outside any write.
    pub(crate) static DIE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    events: &mut Vec<StoreEvent>,
    backlog: &Backlog,
    change: &mut Change,
) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        let indexes = job.postings() == Postings::Indexes;
        if indexes {
            backlog.flush_all(conn, change)?;
        }
        INDEXES.set(indexes);
        job.run(conn, events);
        INDEXES.set(false);
    }
    backlog.end_batch(conn, change)?;
    conn.execute_batch("COMMIT")
}
