//! The post path: one task per server takes every queued append and commits them in one transaction.
//!
//! Per batch it locks the counter rows of the batch's rooms (`SELECT … FOR UPDATE`, in id order, so that servers
//! locking several rooms cannot deadlock), settles `client_id` retries with one lookup, assigns the next `seq`
//! values in memory, inserts every new message with one `INSERT … SELECT FROM unnest(…)` and moves the counters
//! with one `UPDATE`: a fixed number of statements however many rooms the batch spans. The row locks make `seq`
//! gap-free and ordered across every server of a pool; the single commit shares one WAL flush between all posts
//! of the batch. Each new message is also announced with `pg_notify` inside the same transaction, so every
//! server's listener (this one's included) hears it exactly when it commits, in commit order; callers are answered
//! only after the commit. Kept messages are queued for the search index in the statement that inserts them
//! (`indexer.rs`), or indexed in the transaction while the indexer is behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deadpool_postgres::Pool;
use pchat_store::codec::now_micros;
use pchat_store::compliance;
use pchat_store::{Appended, MessageRecord, NewEvent, NewMessage, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::indexer::Pending;
use crate::notify;
use crate::search::Postings;
use crate::store::{
    InUse, MESSAGE_ARRAYS, MESSAGE_COLUMNS, MessageArrays, insert_events, message_from_row, unavailable,
};

/// The most appends committed together.
const MAX_BATCH: usize = 512;

pub(crate) struct AppendJob {
    pub(crate) message: NewMessage,
    pub(crate) reply: oneshot::Sender<StoreResult<Appended>>,
}

pub(crate) fn start(current: InUse, pending: Arc<Pending>) -> mpsc::UnboundedSender<AppendJob> {
    let (queue, jobs) = mpsc::unbounded_channel();
    tokio::spawn(run(current, pending, jobs));
    queue
}

async fn run(current: InUse, pending: Arc<Pending>, mut jobs: mpsc::UnboundedReceiver<AppendJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let messages: Vec<NewMessage> = batch.iter().map(|j| j.message.clone()).collect();
        // Each batch goes to the database in use now (after a failover, the backup).
        let pool = current.borrow().pool.clone();
        match commit_batch(&pool, messages, pending.behind()).await {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                error!(error = %e, posts = batch.len(), "post batch failed to commit");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Unavailable(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

/// Commits the batch; its kept messages are queued for the indexer unless `index_now`.
///
/// The number of statements does not grow with the number of rooms in the batch: the rooms' counter rows are
/// locked by one statement, `client_id` retries looked up by one, the messages of every room inserted by one and
/// the counters moved by one. A statement per room (three round trips each) made a batch across 40 rooms take
/// 40–120 ms on an idle server, during which the next batch queued up, so one burst of posts kept acks waiting
/// for the better part of a second (lync-server on PostgreSQL, 4,000 users, posts spread over 1,665 rooms).
async fn commit_batch(
    pool: &Pool,
    messages: Vec<NewMessage>,
    index_now: bool,
) -> Result<Vec<StoreResult<Appended>>, StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let mut by_room: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        by_room.entry(m.room_id.as_str()).or_default().push(i);
    }
    // Locked in id order (byte order, the column's collation, as the map's), so that servers locking several
    // rooms cannot deadlock: the row locks are taken above the sort.
    let room_ids: Vec<&str> = by_room.keys().copied().collect();
    let sql = "SELECT id, disabled, last_seq, last_ts, num FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE";
    let mut counters: HashMap<String, (bool, i64, i64, i64)> = HashMap::with_capacity(room_ids.len());
    for row in tx.query(sql, &[&room_ids]).await.map_err(unavailable)? {
        counters.insert(row.get(0), (row.get(1), row.get(2), row.get(3), row.get(4)));
    }
    // Only posts to rooms that can take them can be retries.
    let open = |room: &str| counters.get(room).is_some_and(|&(disabled, ..)| !disabled);
    let mut known = retried(&tx, messages.iter().filter(|m| open(&m.room_id))).await?;
    let mut results: Vec<Option<StoreResult<Appended>>> = messages.iter().map(|_| None).collect();
    let mut notices: Vec<String> = Vec::new();
    let mut captured: Vec<NewEvent> = Vec::new();
    let mut postings = Postings::default();
    let mut new_rows: Vec<(i64, MessageRecord)> = Vec::new();
    let mut moved: (Vec<&str>, Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new(), Vec::new());
    for (room, indexes) in by_room {
        let Some(&(disabled, mut seq, last_ts, num)) = counters.get(room) else {
            indexes.iter().for_each(|&i| results[i] = Some(Err(StoreError::NotFound)));
            continue;
        };
        if disabled {
            indexes.iter().for_each(|&i| results[i] = Some(Err(StoreError::RoomDisabled)));
            continue;
        }
        let first_seq = seq;
        let ts = now_micros().max(last_ts);
        for i in indexes {
            let m = &messages[i];
            let retry = m.client_id.as_deref().and_then(|c| known.get(room).and_then(|ids| ids.get(c)));
            if let Some(original) = retry {
                results[i] = Some(Ok(Appended { message: original.clone(), created: false }));
                continue;
            }
            seq += 1;
            let record = MessageRecord {
                id: m.id.clone(),
                room_id: room.to_owned(),
                seq,
                author: m.author.clone(),
                ts,
                text: m.text.clone(),
                story_title: m.story_title.clone(),
                alert: m.alert,
                client_id: m.client_id.clone(),
                replaced: false,
                file: m.file.as_ref().map(|f| f.meta.clone()),
            };
            if let Some(f) = &m.file {
                let sql = "UPDATE files SET ready = true, message_id = $3, size = $4, sha256 = $5 \
                           WHERE id = $1 AND room_id = $2 AND NOT ready";
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&f.meta.id, &room, &record.id, &f.meta.size, &f.sha256];
                if tx.execute(sql, &params).await.map_err(unavailable)? == 0 {
                    // The upload's record is gone (its room was deleted, or it was swept): nothing is posted.
                    seq -= 1;
                    results[i] = Some(Err(StoreError::NotFound));
                    continue;
                }
            }
            if let Some(c) = &m.client_id {
                // A retry within the same batch gets this message too.
                known.entry(room.to_owned()).or_default().insert(c.clone(), record.clone());
            }
            if m.keep {
                if index_now {
                    postings.add_message(num, &record);
                }
                new_rows.push((num, record.clone()));
            }
            notices.push(notify::encode(&record));
            if m.capture {
                captured.push(compliance::posted_event(&record, m.file.as_ref(), m.keep));
            }
            results[i] = Some(Ok(Appended { message: record, created: true }));
        }
        if seq > first_seq {
            moved.0.push(room);
            moved.1.push(seq);
            moved.2.push(ts);
        }
    }
    if !new_rows.is_empty() {
        insert_messages(&tx, !index_now, &new_rows).await?;
    }
    if !moved.0.is_empty() {
        let sql = "UPDATE rooms SET last_seq = u.seq, last_ts = u.ts \
                   FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(id, seq, ts) WHERE rooms.id = u.id";
        tx.execute(sql, &[&moved.0, &moved.1, &moved.2]).await.map_err(unavailable)?;
    }
    if !notices.is_empty() {
        // unnest yields the array in order, so notifications go out in seq order (and the listener reads any gap
        // back from the table should they not).
        tx.execute("SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice", &[&notify::MESSAGES, &notices])
            .await
            .map_err(unavailable)?;
    }
    postings.insert(&tx).await?;
    insert_events(&tx, &captured).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("not run".into())))).collect())
}

/// Messages by room, then by `client_id`.
type Retries = HashMap<String, HashMap<String, MessageRecord>>;

/// The messages already posted under the `client_id`s of `messages`: one statement, each key looked up through the
/// unique index (a lateral step, so it is never planned as a join over the whole table).
async fn retried(
    tx: &tokio_postgres::Transaction<'_>,
    messages: impl Iterator<Item = &NewMessage>,
) -> StoreResult<Retries> {
    let (rooms, ids): (Vec<&str>, Vec<&str>) =
        messages.filter_map(|m| m.client_id.as_deref().map(|c| (m.room_id.as_str(), c))).unzip();
    let mut known = Retries::new();
    if ids.is_empty() {
        return Ok(known);
    }
    let sql = format!(
        "SELECT x.* FROM unnest($1::text[], $2::text[]) AS k(r, c) CROSS JOIN LATERAL ( \
             SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = k.r AND client_id = k.c OFFSET 0) x"
    );
    for row in tx.query(&sql, &[&rooms, &ids]).await.map_err(unavailable)? {
        let record = message_from_row(&row)?;
        if let Some(id) = record.client_id.clone() {
            known.entry(record.room_id.clone()).or_default().insert(id, record);
        }
    }
    Ok(known)
}

/// Inserts the batch's new messages (each with its room's number) and, when `queue`, their rows in the search
/// index's queue, in one statement.
async fn insert_messages(
    tx: &tokio_postgres::Transaction<'_>,
    queue: bool,
    rows: &[(i64, MessageRecord)],
) -> StoreResult<()> {
    let records: Vec<&MessageRecord> = rows.iter().map(|(_, r)| r).collect();
    let arrays = MessageArrays::of(&records, None);
    let nums: Vec<i64> = rows.iter().map(|(num, _)| *num).collect();
    let values = format!("SELECT * FROM unnest({MESSAGE_ARRAYS}, $12::bigint[]) AS v({MESSAGE_COLUMNS}, num)");
    let sql = if queue {
        format!(
            "WITH v AS ({values}), m AS (INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT {MESSAGE_COLUMNS} FROM v) \
             INSERT INTO search_pending (room_id, seq, room_num, ts) SELECT room_id, seq, num, ts FROM v"
        )
    } else {
        format!("WITH v AS ({values}) INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT {MESSAGE_COLUMNS} FROM v")
    };
    let [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = arrays.params();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] =
        [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, &nums];
    tx.execute(&sql, &params).await.map_err(unavailable)?;
    Ok(())
}
