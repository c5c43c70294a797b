//! The single writer thread and its group commit.
//!
//! A write is a closure over the connection. The thread takes the first queued write, then every write queued
//! behind it (up to [`MAX_BATCH`]), and runs them all inside one `BEGIN IMMEDIATE … COMMIT`, each in its own
//! savepoint so that one failing write rolls back alone. After the commit it publishes the batch's events in
//! order and answers every caller; if the commit fails, every write of the batch fails and no event is sent.

use std::sync::mpsc as std_mpsc;
use std::thread;

use pchat_store::{StoreError, StoreEvent, StoreResult};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// The most writes committed together. Large enough that commit cost is shared, small enough that one batch
/// does not hold the lock for long.
const MAX_BATCH: usize = 512;

/// One queued write, type-erased so that writes with different results share a queue.
trait Job: Send {
    /// Runs the write inside the open transaction; pushes the events it causes when it succeeds.
    fn run(&mut self, conn: &Connection, events: &mut Vec<StoreEvent>);
    /// Answers the caller: with the write's own result if the batch committed, otherwise with `commit_error`.
    fn finish(self: Box<Self>, commit_error: Option<&str>);
}

type WriteFn<T> = Box<dyn FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<T> + Send>;

struct TypedJob<T> {
    write: Option<WriteFn<T>>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> Job for TypedJob<T> {
    fn run(&mut self, conn: &Connection, events: &mut Vec<StoreEvent>) {
        let Some(write) = self.write.take() else {
            return;
        };
        let result = (|| {
            conn.execute_batch("SAVEPOINT job").map_err(crate::store::unavailable)?;
            let mut own_events = Vec::new();
            match write(conn, &mut own_events) {
                Ok(value) => {
                    conn.execute_batch("RELEASE job").map_err(crate::store::unavailable)?;
                    events.append(&mut own_events);
                    Ok(value)
                }
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job").map_err(crate::store::unavailable)?;
                    Err(e)
                }
            }
        })();
        self.result = Some(result);
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

#[derive(Clone)]
pub(crate) struct Writer {
    queue: std_mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`. It ends when every `Writer` handle is dropped.
    pub(crate) fn start(conn: Connection, events: mpsc::UnboundedSender<StoreEvent>) -> std::io::Result<Self> {
        let (queue, jobs) = std_mpsc::channel::<Box<dyn Job>>();
        thread::Builder::new().name("pchat-sqlite-writer".into()).spawn(move || run(conn, jobs, events))?;
        Ok(Self { queue })
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
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
        let job = TypedJob { write: Some(Box::new(write) as WriteFn<T>), result: None, reply };
        self.queue
            .send(Box::new(job))
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?
    }
}

fn run(conn: Connection, jobs: std_mpsc::Receiver<Box<dyn Job>>, feed: mpsc::UnboundedSender<StoreEvent>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut events = Vec::new();
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_batch(&conn, &mut batch, &mut events);
        if let Err(e) = &outcome {
            error!(error = %e, writes = batch.len(), "sqlite batch failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
            events.clear();
        }
        for event in events.drain(..) {
            // Nobody listening (tests, CLI tools) is fine.
            let _ = feed.send(event);
        }
        let commit_error = outcome.err().map(|e| e.to_string());
        for job in batch.drain(..) {
            job.finish(commit_error.as_deref());
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>], events: &mut Vec<StoreEvent>) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        job.run(conn, events);
    }
    conn.execute_batch("COMMIT")
}
