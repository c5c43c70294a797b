//! The listener: every server of a pool hears, on one dedicated connection, what any server commits (its own
//! posts included) and turns it into the store's event feed, in commit order. Notifications can be missed while
//! the connection is down, so the listener tracks the last `seq` it passed on per room and reads anything between
//! that and a newer notification from the table (the fallback read), and after a reconnect catches every room
//! it knows up to date. Messages of rooms without history are not in the table: those missed during a
//! disconnection cannot be recovered (they were never meant to be kept).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use pchat_store::{AccessScope, ClusterEvent, MessageRecord, StoreEvent, StoreResult};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{info, warn};

use crate::notify::{self, Notice};
use crate::store::{Database, InUse, MESSAGE_COLUMNS, message_from_row, unavailable};

/// Most messages read back at once when catching up.
const CATCH_UP_PAGE: i64 = 1000;

/// Starts the listener; resolves once it is listening (or with the error of its first attempt).
pub(crate) async fn start(current: InUse, feed: mpsc::UnboundedSender<StoreEvent>) -> Result<(), String> {
    let (ready, listening) = oneshot::channel();
    tokio::spawn(run(current, feed, ready));
    listening.await.map_err(|_| "the listener stopped".to_owned())?
}

async fn run(mut current: InUse, feed: mpsc::UnboundedSender<StoreEvent>, ready: oneshot::Sender<Result<(), String>>) {
    let mut ready = Some(ready);
    let mut last: HashMap<String, i64> = HashMap::new();
    loop {
        let database = current.borrow_and_update().clone();
        match listen(&database, &mut current, &feed, &mut last, &mut ready).await {
            Ok(()) => return, // The feed's receiver is gone: the store was dropped.
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                if feed.is_closed() || current.has_changed().is_err() {
                    return; // Nobody listens any more, or the store was dropped.
                }
                warn!(error = %e, database = database.role, "lost the PostgreSQL notification connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One connection's life: listen, catch up, then pass notifications on until the connection fails.
async fn listen(
    database: &Database,
    current: &mut InUse,
    feed: &mpsc::UnboundedSender<StoreEvent>,
    last: &mut HashMap<String, i64>,
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Result<(), String> {
    let pool = &database.pool;
    let (client, mut connection) = database.config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (notices, mut incoming) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notices.send(Some((n.channel().to_owned(), n.payload().to_owned()))).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = notices.send(None);
    });
    client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {}; LISTEN {}",
            notify::MESSAGES,
            notify::DIRECTORY,
            notify::CLUSTER
        ))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    } else {
        info!("listening for PostgreSQL notifications again; catching up");
        // Anything may have changed while we were away, including who may read what: every connection is
        // re-evaluated before any message caught up below is delivered.
        let everyone = ClusterEvent::AccessChanged { origin: String::new(), scope: AccessScope::everyone() };
        let feeds = ClusterEvent::FeedsChanged { owner: None };
        if feed.send(StoreEvent::DirectoryChanged).is_err()
            || feed.send(StoreEvent::Cluster(everyone)).is_err()
            || feed.send(StoreEvent::Cluster(feeds)).is_err()
        {
            return Ok(());
        }
        let rooms: Vec<(String, i64)> = last.iter().map(|(r, s)| (r.clone(), *s)).collect();
        for (room, after) in rooms {
            if !catch_up(pool, feed, last, &room, after, i64::MAX).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
        }
    }
    loop {
        let notice = tokio::select! {
            notice = incoming.recv() => notice,
            // A failover moved the store to the other database: listen there, catching up from its tables.
            changed = current.changed() => {
                driver.abort();
                return match changed {
                    Ok(()) => Err(format!("the store moved off the {} database", database.role)),
                    Err(_) => Ok(()), // The store was dropped.
                };
            }
            () = feed.closed() => {
                driver.abort();
                return Ok(());
            }
        };
        let Some(Some((channel, payload))) = notice else { break };
        let delivered = if channel == notify::DIRECTORY {
            feed.send(StoreEvent::DirectoryChanged).is_ok()
        } else if channel == notify::CLUSTER {
            match notify::decode_cluster(&payload) {
                Some(event) => feed.send(StoreEvent::Cluster(event)).is_ok(),
                None => {
                    warn!(%payload, "ignoring an unreadable cluster notification");
                    true
                }
            }
        } else {
            match notify::decode(&payload) {
                Some(notice) => on_message(pool, feed, last, notice).await.map_err(|e| e.to_string())?,
                None => {
                    warn!(%payload, "ignoring an unreadable notification");
                    true
                }
            }
        };
        if !delivered {
            driver.abort();
            return Ok(());
        }
    }
    driver.abort();
    drop(client);
    Err("notification connection closed".into())
}

/// Passes one message notification on, first filling any gap before it from the table. False when the feed's
/// receiver is gone.
async fn on_message(
    pool: &Pool,
    feed: &mpsc::UnboundedSender<StoreEvent>,
    last: &mut HashMap<String, i64>,
    notice: Notice,
) -> StoreResult<bool> {
    let (room, seq, message) = match notice {
        Notice::Message(m) => (m.room_id.clone(), m.seq, Some(*m)),
        Notice::Reference { room_id, seq } => (room_id, seq, None),
    };
    let previous = last.get(&room).copied();
    if previous.is_some_and(|p| seq <= p) {
        return Ok(true); // Already passed on (while catching up).
    }
    if let Some(p) = previous
        && seq > p + 1
        && !catch_up(pool, feed, last, &room, p, seq - 1).await?
    {
        return Ok(false);
    }
    match message {
        Some(m) => {
            last.insert(room, seq);
            Ok(feed.send(StoreEvent::MessagePosted(m)).is_ok())
        }
        None => catch_up(pool, feed, last, &room, seq - 1, seq).await,
    }
}

/// Reads the room's messages with `after < seq <= until` from the table and passes them on.
async fn catch_up(
    pool: &Pool,
    feed: &mpsc::UnboundedSender<StoreEvent>,
    last: &mut HashMap<String, i64>,
    room: &str,
    mut after: i64,
    until: i64,
) -> StoreResult<bool> {
    let client = pool.get().await.map_err(unavailable)?;
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
    );
    loop {
        let rows = client.query(&sql, &[&room, &after, &until, &CATCH_UP_PAGE]).await.map_err(unavailable)?;
        let full = rows.len() as i64 == CATCH_UP_PAGE;
        for row in &rows {
            let m: MessageRecord = message_from_row(row)?;
            after = m.seq;
            last.insert(room.to_owned(), m.seq);
            if feed.send(StoreEvent::MessagePosted(m)).is_err() {
                return Ok(false);
            }
        }
        if !full {
            if until != i64::MAX {
                // Whatever is missing up to `until` was not kept (a room without history): move past it.
                last.insert(room.to_owned(), until);
            }
            return Ok(true);
        }
    }
}
