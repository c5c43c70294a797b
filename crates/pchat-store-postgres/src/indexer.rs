//! The search index's pending queue on PostgreSQL: appended messages are indexed after their commit, in batches.
//!
//! Inserting a message's ~26 postings into the term-ordered primary key of `search_postings` inside the post's
//! transaction made every post commit wait for ~26 random index insertions (and, on a large history, for the
//! full-page images of the leaf pages they dirty after each checkpoint). So the appender writes, in the same
//! statement as the messages, one row per message into `search_pending` (a small table keyed by room and `seq`),
//! and each server runs an indexer that takes up to [`TAKE`] pending rows at a time (`FOR UPDATE SKIP LOCKED`, so
//! the servers of a pool share the work and never index a message twice), reads their text, inserts their
//! postings sorted by term and deletes the pending rows, in one transaction: a message is either pending or
//! indexed, never half of each.
//!
//! Readers ([`load`]) read the pending messages in the snapshot they search, before the table, and tokenize them
//! (each pending message once per server: [`Pending`] caches their terms), so a search sees every committed
//! message exactly once. Writes that change indexed text (replacing or removing messages, clearing or deleting a
//! room, rebuilding the index) first delete the pending rows of what they change: that waits for an indexer
//! holding them to commit, after which the postings it wrote are in the table for the write to remove.
//!
//! When the indexer falls behind (its batch came back full), the appender indexes in the post's transaction
//! again until it catches up: the pending set, which every search reads, stays bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use pchat_core::text::index_terms;
use pchat_store::{Posting, StoreResult};
use tracing::warn;

use crate::search::Postings;
use crate::store::{InUse, col, unavailable};

/// How long the indexer waits between batches that did not fill (tests index at once, in tiny batches, so that
/// searches meet messages in every state).
#[cfg(not(test))]
const WAIT: Duration = Duration::from_millis(500);
#[cfg(test)]
const WAIT: Duration = Duration::from_millis(2);
/// Pending messages indexed per transaction at most.
#[cfg(not(test))]
const TAKE: i64 = 5_000;
#[cfg(test)]
const TAKE: i64 = 3;

/// Terms by (room number, seq).
type TermsOf = HashMap<(i64, i64), Arc<Vec<String>>>;

/// What the appender, the indexer and readers share.
#[derive(Default)]
pub(crate) struct Pending {
    /// The indexer's last batch was full: the appender indexes in its own transaction meanwhile.
    behind: AtomicBool,
    /// Stops the indexer (tests hold messages pending with it).
    paused: AtomicBool,
    /// Held by the indexer while it works on a batch.
    working: tokio::sync::Mutex<()>,
    /// The terms of pending messages by (room number, seq): a pending message's text cannot change (a
    /// replacement takes it out of the queue first).
    terms: Mutex<TermsOf>,
}

impl Pending {
    /// Whether posts should index in their own transaction.
    pub(crate) fn behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// Says the indexer is behind (tests).
    #[cfg(test)]
    pub(crate) fn set_behind(&self, behind: bool) {
        self.behind.store(behind, Ordering::Relaxed);
    }

    /// Holds (true) or releases the indexer; returns once no batch is in flight.
    #[cfg(test)]
    pub(crate) async fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        drop(self.working.lock().await);
    }
}

/// Starts the server's indexer; it ends when `pending` has no other owner.
pub(crate) fn start(current: InUse, pending: &Arc<Pending>) {
    let weak = Arc::downgrade(pending);
    tokio::spawn(async move {
        let mut full = false;
        loop {
            if !full {
                tokio::time::sleep(WAIT).await;
            }
            let Some(pending) = weak.upgrade() else { return };
            let _working = pending.working.lock().await;
            if pending.paused.load(Ordering::Relaxed) {
                full = false;
                continue;
            }
            // Each batch goes to the database in use now (after a failover, the backup).
            let pool = current.borrow().pool.clone();
            full = match index_batch(&pool).await {
                Ok(taken) => taken >= TAKE as usize,
                Err(e) => {
                    warn!(error = %e, "indexing pending messages failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
            };
            pending.behind.store(full, Ordering::Relaxed);
        }
    });
}

/// Indexes up to [`TAKE`] pending messages in one transaction; returns how many it took.
pub(crate) async fn index_batch(pool: &Pool) -> StoreResult<usize> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let taken = tx
        .query(
            "DELETE FROM search_pending WHERE (room_id, seq) IN \
             (SELECT room_id, seq FROM search_pending LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING room_id, seq",
            &[&TAKE],
        )
        .await
        .map_err(unavailable)?;
    if taken.is_empty() {
        return Ok(0);
    }
    let rooms: Vec<String> = taken.iter().map(|r| col(r, 0)).collect::<StoreResult<_>>()?;
    let seqs: Vec<i64> = taken.iter().map(|r| col(r, 1)).collect::<StoreResult<_>>()?;
    let rows = tx
        .query(
            "SELECT r.num, m.ts, m.seq, m.text, m.story_title FROM unnest($1::text[], $2::bigint[]) AS p(room_id, seq) \
             JOIN messages m ON m.room_id = p.room_id AND m.seq = p.seq JOIN rooms r ON r.id = m.room_id",
            &[&rooms, &seqs],
        )
        .await
        .map_err(unavailable)?;
    let mut postings = Postings::default();
    for row in &rows {
        let title: Option<String> = col(row, 4)?;
        postings.add(col(row, 0)?, col(row, 1)?, col(row, 2)?, &col::<String>(row, 3)?, title.as_deref());
    }
    // In term order, so that one index page takes the postings of many messages at once.
    postings.sort();
    postings.insert(&tx).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(taken.len())
}

/// Takes the pending rows of these messages out of the queue (before their text changes or they go). Waits for
/// an indexer holding them: once it has committed, their postings are in the table.
pub(crate) async fn settle(tx: &tokio_postgres::Transaction<'_>, room_id: &str, seqs: &[i64]) -> StoreResult<()> {
    tx.execute("DELETE FROM search_pending WHERE room_id = $1 AND seq = ANY($2)", &[&room_id, &seqs])
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// As [`settle`] for the room's messages up to `end_ts` (all for `None`).
pub(crate) async fn settle_room(
    tx: &tokio_postgres::Transaction<'_>,
    room_id: &str,
    end_ts: Option<i64>,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM search_pending WHERE room_id = $1 AND ($2::bigint IS NULL OR ts <= $2)",
        &[&room_id, &end_ts],
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// The postings of the messages pending in the reader's snapshot, sorted. Call in the search's transaction
/// before it reads the table.
pub(crate) async fn load(client: &tokio_postgres::Transaction<'_>, pending: &Pending) -> StoreResult<Vec<Posting>> {
    let rows = client
        .query(
            "SELECT p.room_num, p.seq, p.ts, m.text, m.story_title FROM search_pending p \
             JOIN messages m ON m.room_id = p.room_id AND m.seq = p.seq",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let mut cache = pending.terms.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen: TermsOf = HashMap::with_capacity(rows.len());
    let mut out: Vec<Posting> = Vec::new();
    for row in &rows {
        let (room, seq, ts): (i64, i64, i64) = (col(row, 0)?, col(row, 1)?, col(row, 2)?);
        let terms = match cache.get(&(room, seq)) {
            Some(terms) => Arc::clone(terms),
            None => {
                let title: Option<String> = col(row, 4)?;
                Arc::new(index_terms(&col::<String>(row, 3)?, title.as_deref()).into_iter().collect())
            }
        };
        out.extend(terms.iter().map(|t| (t.clone(), ts, room, seq)));
        seen.insert((room, seq), terms);
    }
    // Only what is still pending stays cached.
    *cache = seen;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
