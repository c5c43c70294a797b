//! The post path: one task per server takes every queued append and commits them in one transaction.
//!
//! Per batch and per room (rooms in sorted order, so that servers locking several rooms cannot deadlock), it locks
//! the room's counter row (`SELECT … FOR UPDATE`), settles `client_id` retries with one lookup, assigns the next
//! `seq` values in memory, inserts the new messages with one `INSERT … SELECT FROM unnest(…)`, and moves the counter.
//! The row lock makes `seq` gap-free and ordered across every server of a pool; the single commit shares one WAL
//! flush between all posts of the batch. Each new message is also announced with `pg_notify` inside the same
//! transaction, so every server's listener (this one's included) hears it exactly when it commits, in commit order;
//! callers are answered only after the commit. Kept messages are queued for the search index in the statement
//! that inserts them (`indexer.rs`), or indexed in the transaction while the indexer is behind.

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
use crate::store::{InUse, MESSAGE_COLUMNS, insert_events, message_from_row, unavailable};

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
async fn commit_batch(
    pool: &Pool,
    messages: Vec<NewMessage>,
    index_now: bool,
) -> Result<Vec<StoreResult<Appended>>, StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let mut by_room: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        by_room.entry(m.room_id.clone()).or_default().push(i);
    }
    let mut results: Vec<Option<StoreResult<Appended>>> = messages.iter().map(|_| None).collect();
    let mut notices: Vec<String> = Vec::new();
    let mut captured: Vec<NewEvent> = Vec::new();
    let mut postings = Postings::default();
    for (room, indexes) in by_room {
        let row = tx
            .query_opt("SELECT disabled, last_seq, last_ts, num FROM rooms WHERE id = $1 FOR UPDATE", &[&room])
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            indexes.iter().for_each(|&i| results[i] = Some(Err(StoreError::NotFound)));
            continue;
        };
        let (disabled, mut seq, last_ts, num): (bool, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if disabled {
            indexes.iter().for_each(|&i| results[i] = Some(Err(StoreError::RoomDisabled)));
            continue;
        }
        let client_ids: Vec<String> = indexes.iter().filter_map(|&i| messages[i].client_id.clone()).collect();
        let mut known: HashMap<String, MessageRecord> = HashMap::new();
        if !client_ids.is_empty() {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND client_id = ANY($2)");
            for row in tx.query(&sql, &[&room, &client_ids]).await.map_err(unavailable)? {
                let record = message_from_row(&row)?;
                if let Some(id) = record.client_id.clone() {
                    known.insert(id, record);
                }
            }
        }
        let ts = now_micros().max(last_ts);
        let mut new_rows: Vec<MessageRecord> = Vec::new();
        for i in indexes {
            let m = &messages[i];
            if let Some(original) = m.client_id.as_ref().and_then(|c| known.get(c)) {
                results[i] = Some(Ok(Appended { message: original.clone(), created: false }));
                continue;
            }
            seq += 1;
            let record = MessageRecord {
                id: m.id.clone(),
                room_id: room.clone(),
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
                known.insert(c.clone(), record.clone());
            }
            if m.keep {
                if index_now {
                    postings.add_message(num, &record);
                }
                new_rows.push(record.clone());
            }
            notices.push(notify::encode(&record));
            if m.capture {
                captured.push(compliance::posted_event(&record, m.file.as_ref(), m.keep));
            }
            results[i] = Some(Ok(Appended { message: record, created: true }));
        }
        if !new_rows.is_empty() {
            insert_messages(&tx, &room, (!index_now).then_some(num), &new_rows).await?;
        }
        tx.execute("UPDATE rooms SET last_seq = $2, last_ts = $3 WHERE id = $1", &[&room, &seq, &ts])
            .await
            .map_err(unavailable)?;
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

/// Inserts the room's new messages and, with the room's number, their rows in the search index's queue.
async fn insert_messages(
    tx: &tokio_postgres::Transaction<'_>,
    room: &str,
    pending_num: Option<i64>,
    rows: &[MessageRecord],
) -> StoreResult<()> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let authors: Vec<&str> = rows.iter().map(|r| r.author.as_str()).collect();
    let times: Vec<i64> = rows.iter().map(|r| r.ts).collect();
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let titles: Vec<Option<&str>> = rows.iter().map(|r| r.story_title.as_deref()).collect();
    let alerts: Vec<bool> = rows.iter().map(|r| r.alert).collect();
    let client_ids: Vec<Option<&str>> = rows.iter().map(|r| r.client_id.as_deref()).collect();
    let files: Vec<Option<String>> = rows.iter().map(|r| r.file.as_ref().map(|f| f.encode())).collect();
    let insert = "INSERT INTO messages (room_id, id, seq, author, ts, text, story_title, alert, client_id, file) \
                  SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], \
                  $7::text[], $8::bool[], $9::text[], $10::text[])";
    let queued = format!(
        "WITH m AS ({insert} RETURNING seq, ts) INSERT INTO search_pending (room_id, seq, room_num, ts) \
         SELECT $1, seq, $11, ts FROM m"
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&room, &ids, &seqs, &authors, &times, &texts, &titles, &alerts, &client_ids, &files];
    let sql = match &pending_num {
        Some(num) => {
            params.push(num);
            queued.as_str()
        }
        None => insert,
    };
    tx.execute(sql, &params).await.map_err(unavailable)?;
    Ok(())
}
