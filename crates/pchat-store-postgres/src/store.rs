//! [`PgStore`]: the `Store` port on PostgreSQL (tokio-postgres with a deadpool pool). Principal lists are stored
//! one per line, as in every backend (`pchat_store::codec`).

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pchat_core::text::DirectoryTerm;
use pchat_core::{ChatConfig, ConfigScope, Invitations, PolicyScope, Principal, Privacy, RoomType, ValidationError};
use pchat_store::codec::{join_principals, like_pattern, split_principals};
use pchat_store::compliance;
use pchat_store::{
    AddinRecord, AdminRole, Appended, CallerFacts, Captured, CategoryRecord, ClusterEvent, DirectoryField, EventQuery,
    InvitationRecord, MessageFilter, MessageRange, MessageRecord, NewEvent, NewMessage, OutboxEvent, PresenceRecord,
    RoomQuery, RoomRecord, ServerRecord, Store, StoreError, StoreEvent, StoreResult, UserRecord,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use crate::appender::{self, AppendJob};
use crate::directory::{self, Indexed};
use crate::ha::{self, Pair, Role};
use crate::search::{self, Postings};
use crate::{listener, migrations, notify};

/// Connections kept open per server.
const POOL_SIZE: usize = 16;
/// Longest wait for a pooled connection, or to open one.
const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct PgStore {
    /// The database in use; a failover monitor, when there is a backup, replaces it.
    in_use: Arc<watch::Sender<Arc<Database>>>,
    appends: mpsc::UnboundedSender<AppendJob>,
    /// The search index's queue, shared with the appender and this server's indexer.
    pub(crate) pending: Arc<crate::indexer::Pending>,
    events: Mutex<Option<mpsc::UnboundedReceiver<StoreEvent>>>,
    monitor: Option<tokio::task::JoinHandle<()>>,
}

/// One database with its connection pool.
pub(crate) struct Database {
    pub(crate) pool: Pool,
    pub(crate) config: tokio_postgres::Config,
    /// `primary` or `backup`.
    pub(crate) role: &'static str,
    /// The URL, password redacted, for messages.
    pub(crate) shown: String,
}

/// What the appender and the listener follow: the database in use, changing at a failover.
pub(crate) type InUse = watch::Receiver<Arc<Database>>;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid database URL {url}: {source}")]
    Url { url: String, source: tokio_postgres::Error },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot migrate {url}: {source}")]
    Migrate { url: String, source: migrations::MigrationError },
    #[error("{url} is a standby in recovery (read-only): promote it, or run `pchat pool failover --promote`")]
    Standby { url: String },
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// Parses a database URL; errors name it with the password redacted.
pub(crate) fn parse_url(url: &str) -> Result<tokio_postgres::Config, OpenError> {
    tokio_postgres::Config::from_str(url).map_err(|source| OpenError::Url { url: redact(url), source })
}

/// Settings each pooled connection starts with, ahead of any `options` the operator's URL gives (which therefore
/// win). Just-in-time compilation is off: every statement pchat runs is a short point or range read or a small
/// write, which compiled code never pays back, and PostgreSQL decides to compile from the planner's cost estimate
/// alone. Without statistics (tables loaded in bulk before autovacuum analysed them, or autovacuum off) the
/// recursive group lookup of every caller resolution was estimated at 3,000,000 and compiled, with inlining and
/// optimisation, at every call: 1.6 s of a backend's CPU for a 0.1 ms query (lync-server on PostgreSQL, 19,000
/// users: backends busy compiling while joins waited seconds).
const SESSION_OPTIONS: &str = "-c jit=off";

fn with_session_options(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{SESSION_OPTIONS} {given}"),
        _ => SESSION_OPTIONS.to_owned(),
    };
    config.options(options);
    config
}

/// A connection pool with bounded waits: while the database is unreachable, requests fail fast (503) instead of
/// piling up.
pub(crate) fn build_pool(config: tokio_postgres::Config, size: usize, shown: &str) -> Result<Pool, OpenError> {
    let manager = Manager::from_config(
        with_session_options(config),
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|e| OpenError::Connect { url: shown.to_owned(), message: e.to_string() })
}

/// Opens a pool on the database, checks that it takes writes (not a standby) and applies pending migrations.
pub(crate) async fn open_database(
    config: tokio_postgres::Config,
    shown: &str,
    role: &'static str,
) -> Result<Database, OpenError> {
    let connect_error = |message: String| OpenError::Connect { url: shown.to_owned(), message };
    let pool = build_pool(config.clone(), POOL_SIZE, shown)?;
    let mut client = pool.get().await.map_err(|e| connect_error(e.to_string()))?;
    let standby: bool =
        client.query_one("SELECT pg_is_in_recovery()", &[]).await.map_err(|e| connect_error(e.to_string()))?.get(0);
    if standby {
        return Err(OpenError::Standby { url: shown.to_owned() });
    }
    migrations::apply(&mut client).await.map_err(|source| OpenError::Migrate { url: shown.to_owned(), source })?;
    drop(client);
    Ok(Database { pool, config, role, shown: shown.to_owned() })
}

impl PgStore {
    /// Connects, applies pending migrations and starts the post appender. Must run inside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(parse_url(url)?, redact(url)).await
    }

    /// As [`PgStore::connect`], from a parsed configuration; `shown` names the database in errors.
    pub async fn connect_with(config: tokio_postgres::Config, shown: String) -> Result<Self, OpenError> {
        Self::start(open_database(config, &shown, "primary").await?, None).await
    }

    /// Connects to a pool's primary or backup database, whichever the pool's state names (`normal`: the primary,
    /// `failed_over`: the backup), and follows later switches (`pchat pool failover` / `failback`).
    pub async fn connect_pair(primary: &str, backup: &str) -> Result<Self, OpenError> {
        let pair = Pair::parse(primary, backup)?;
        let role = pair.wanted().await.unwrap_or(Role::Primary);
        let database = pair.open(role).await?;
        Self::start(database, Some(pair)).await
    }

    async fn start(database: Database, failover: Option<Pair>) -> Result<Self, OpenError> {
        let shown = database.shown.clone();
        let (sender, in_use) = watch::channel(Arc::new(database));
        let in_use_sender = Arc::new(sender);
        let (feed, events) = mpsc::unbounded_channel();
        listener::start(in_use.clone(), feed).await.map_err(|message| OpenError::Connect { url: shown, message })?;
        let pending = Arc::new(crate::indexer::Pending::default());
        crate::indexer::start(in_use.clone(), &pending);
        let appends = appender::start(in_use, Arc::clone(&pending));
        let monitor = failover.map(|pair| ha::monitor(pair, Arc::downgrade(&in_use_sender)));
        Ok(Self { in_use: in_use_sender, appends, pending, events: Mutex::new(Some(events)), monitor })
    }

    /// Indexes one batch of pending messages here and now (tests step through indexing with the indexer paused).
    #[cfg(test)]
    pub(crate) async fn index_batch(&self) -> usize {
        let pool = self.in_use.borrow().pool.clone();
        crate::indexer::index_batch(&pool).await.unwrap()
    }

    /// The URL (password redacted) of the database in use.
    pub fn database_url(&self) -> String {
        self.in_use.borrow().shown.clone()
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        let pool = self.in_use.borrow().pool.clone();
        pool.get().await.map_err(unavailable)
    }

    /// Runs a query through the connection's statement cache: each text is parsed and described once per
    /// connection, where a query given as text is prepared again every time (a round trip and a parse more per
    /// query). Every text passed here is one of a fixed set (formats of constant column lists), so the cache stays
    /// small.
    pub(crate) async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client.query(&statement, params).await.map_err(unavailable)
    }

    /// As [`PgStore::query`], for at most one row.
    pub(crate) async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client.query_opt(&statement, params).await.map_err(unavailable)
    }

    /// A one-statement write to the directory (users, groups, roles, policies, configuration), announced to the
    /// pool's other servers in the same transaction so that they drop what they derived from it.
    async fn directory_execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        self.directory_execute_indexed(sql, params, &[]).await
    }

    /// As [`PgStore::directory_execute`], indexing `indexed` in the same transaction.
    async fn directory_execute_indexed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        indexed: &[Indexed],
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let changed = tx.execute(sql, params).await.map_err(named)?;
        directory::index(&tx, indexed).await?;
        announce_directory_change(&tx).await?;
        commit_captured(tx).await?;
        Ok(changed)
    }

    /// A one-statement write; with compliance events pending, it and they commit in one transaction.
    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        self.execute_checked(sql, params, false).await
    }

    /// As [`PgStore::execute`] for a statement that must change a row: `NotFound` (and nothing captured) if none.
    pub(crate) async fn execute_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<()> {
        self.execute_checked(sql, params, true).await.map(drop)
    }

    /// Renames or deletes an add-in (`sql`, which must change one row). Rooms follow through the foreign key; their
    /// versions move on in the same transaction, so that an edit made on the old view is re-applied.
    async fn change_addin(&self, name: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("UPDATE rooms SET version = version + 1 WHERE addin = $1", &[&name]).await.map_err(unavailable)?;
        if tx.execute(sql, params).await.map_err(named)? == 0 {
            return Err(StoreError::NotFound); // Nothing changed: the transaction rolls back as it drops.
        }
        commit_captured(tx).await
    }

    /// The outcome of a versioned update: `NotFound` becomes `Conflict` when the row exists (its version moved on).
    async fn versioned(&self, updated: StoreResult<()>, table: &str, id: &str) -> StoreResult<()> {
        match updated {
            Err(StoreError::NotFound) => {
                let exists = self.query_opt(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id]).await?.is_some();
                Err(if exists { StoreError::Conflict } else { StoreError::NotFound })
            }
            other => other,
        }
    }

    async fn execute_checked(&self, sql: &str, params: &[&(dyn ToSql + Sync)], one: bool) -> StoreResult<u64> {
        let captured = compliance::take_pending();
        let mut client = self.client().await?;
        if captured.is_empty() {
            let changed = client.execute(sql, params).await.map_err(named)?;
            return if one && changed == 0 { Err(StoreError::NotFound) } else { Ok(changed) };
        }
        let tx = client.transaction().await.map_err(unavailable)?;
        let changed = tx.execute(sql, params).await.map_err(named)?;
        if one && changed == 0 {
            return Err(StoreError::NotFound); // The transaction rolls back as it drops.
        }
        insert_captured(&tx, &captured).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(monitor) = &self.monitor {
            monitor.abort();
        }
    }
}

/// The columns of a compliance event, in the outbox and in the archive.
pub(crate) const EVENT_COLUMNS: &str = "kind, ts, room_id, actor, content, details";

/// The event whose [`EVENT_COLUMNS`] start at column `first`.
pub(crate) fn event_at(r: &Row, first: usize) -> StoreResult<NewEvent> {
    Ok(NewEvent {
        kind: col(r, first)?,
        ts: col(r, first + 1)?,
        room_id: col(r, first + 2)?,
        actor: col(r, first + 3)?,
        content: col(r, first + 4)?,
        details: col(r, first + 5)?,
    })
}

/// The event fields of `events` as arrays in [`EVENT_COLUMNS`] order, for `unnest` inserts.
pub(crate) struct EventArrays<'a> {
    kinds: Vec<&'a str>,
    times: Vec<i64>,
    rooms: Vec<Option<&'a str>>,
    actors: Vec<&'a str>,
    contents: Vec<&'a str>,
    details: Vec<&'a str>,
}

impl<'a> EventArrays<'a> {
    pub(crate) fn of(events: impl Iterator<Item = &'a NewEvent> + Clone) -> Self {
        Self {
            kinds: events.clone().map(|e| e.kind.as_str()).collect(),
            times: events.clone().map(|e| e.ts).collect(),
            rooms: events.clone().map(|e| e.room_id.as_deref()).collect(),
            actors: events.clone().map(|e| e.actor.as_str()).collect(),
            contents: events.clone().map(|e| e.content.as_str()).collect(),
            details: events.map(|e| e.details.as_str()).collect(),
        }
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [&self.kinds, &self.times, &self.rooms, &self.actors, &self.contents, &self.details]
    }
}

/// The six event array parameters, numbered from `$first`, for an `unnest(…)` argument list.
pub(crate) fn event_array_args(first: usize) -> String {
    let types = ["text", "bigint", "text", "text", "text", "text"];
    let args: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", first + i)).collect();
    args.join(", ")
}

/// Inserts what a write captured: compliance events into the outbox, audit records into the audit trail (inside
/// the caller's transaction).
pub(crate) async fn insert_captured(tx: &tokio_postgres::Transaction<'_>, captured: &Captured) -> StoreResult<()> {
    insert_events(tx, &captured.compliance).await?;
    if captured.audit.is_empty() {
        return Ok(());
    }
    let arrays = EventArrays::of(captured.audit.iter());
    let sql = format!("INSERT INTO audit_log ({EVENT_COLUMNS}) SELECT * FROM unnest({})", event_array_args(1));
    tx.execute(&sql, &arrays.params()).await.map_err(unavailable).map(drop)
}

/// Inserts captured compliance events into the outbox, inside the caller's transaction.
pub(crate) async fn insert_events(tx: &tokio_postgres::Transaction<'_>, events: &[NewEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let arrays = EventArrays::of(events.iter());
    // unnest keeps the order, and the serial ids follow it.
    let sql = format!("INSERT INTO compliance_outbox ({EVENT_COLUMNS}) SELECT * FROM unnest({})", event_array_args(1));
    tx.execute(&sql, &arrays.params()).await.map_err(unavailable).map(drop)
}

/// An arbitrary constant naming the lock that serializes taking the admin role away.
const ADMINISTRATORS_LOCK: i64 = 0x7063_6861_7402;

/// Refuses to take the admin role from `address` (by revoking it or deleting the user) when nobody else has it.
/// Takes a transaction-scoped lock first, so two administrators revoking each other cannot both succeed.
async fn keeps_an_administrator(tx: &deadpool_postgres::Transaction<'_>, address: &str) -> StoreResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMINISTRATORS_LOCK]).await.map_err(unavailable)?;
    let sql = "SELECT count(*) FILTER (WHERE address = $1), count(*) FILTER (WHERE address <> $1) \
               FROM roles WHERE role = 'admin'";
    let row = tx.query_one(sql, &[&address]).await.map_err(unavailable)?;
    let (is_admin, others): (i64, i64) = (col(&row, 0)?, col(&row, 1)?);
    if is_admin > 0 && others == 0 { Err(StoreError::LastAdministrator) } else { Ok(()) }
}

/// Commits a multi-statement write together with the compliance events pending for it.
pub(crate) async fn commit_captured(tx: deadpool_postgres::Transaction<'_>) -> StoreResult<()> {
    insert_captured(&tx, &compliance::take_pending()).await?;
    tx.commit().await.map_err(unavailable)
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A unique violation means a name is taken; anything else means the database failed.
pub(crate) fn named(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::NameTaken
    } else {
        unavailable(e)
    }
}

async fn announce_directory_change(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<()> {
    tx.execute("SELECT pg_notify($1, '')", &[&notify::DIRECTORY]).await.map_err(unavailable).map(drop)
}

pub(crate) fn changed_one(n: u64) -> StoreResult<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index).map_err(unavailable)
}

fn principals(row: &Row, index: usize) -> StoreResult<Vec<Principal>> {
    split_principals(&col::<String>(row, index)?).map_err(corrupt)
}

fn word<T>(row: &Row, index: usize, parse: fn(&str, &str) -> Result<T, ValidationError>) -> StoreResult<T> {
    parse("column", &col::<String>(row, index)?).map_err(corrupt)
}

fn corrupt(e: ValidationError) -> StoreError {
    StoreError::Unavailable(format!("corrupt stored value: {e}"))
}

fn u32_col(row: &Row, index: usize) -> StoreResult<u32> {
    u32::try_from(col::<i64>(row, index)?).map_err(unavailable)
}

const USER_COLUMNS: &str = "address, display_name, password_hash, created_at";
/// The groups `$1` belongs to, directly or through nesting (a recursive query of one column, `name`).
///
/// Each step looks up the groups found so far through the index on `member`: the lateral subquery with `OFFSET 0`
/// is not merged into a join, so PostgreSQL cannot plan the step as a hash join over every membership (its guess
/// for the recursive rows is ten times the first step's). As a plain join it did, on every caller resolution: 2.2 ms
/// with 8,000 memberships (0.1 ms now), and the lync-server scenario's joins on PostgreSQL spent most of their time there.
const GROUPS_OF: &str = "WITH RECURSIVE g(name) AS ( \
                             SELECT group_name FROM group_members WHERE member = $1 \
                             UNION \
                             SELECT x.group_name FROM g CROSS JOIN LATERAL ( \
                                 SELECT gm.group_name FROM group_members gm WHERE gm.member = 'group:' || g.name \
                                 OFFSET 0) x) \
                         SELECT name FROM g";

fn user_from_row(row: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        address: col(row, 0)?,
        display_name: col(row, 1)?,
        password_hash: col(row, 2)?,
        created_at: col(row, 3)?,
    })
}

const CATEGORY_COLUMNS: &str =
    "id, name, description, file_upload, chat_history, invitations, allowed_members, denied_members, creators, version";

fn category_from_row(row: &Row) -> StoreResult<CategoryRecord> {
    Ok(CategoryRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        description: col(row, 2)?,
        file_upload: col(row, 3)?,
        chat_history: col(row, 4)?,
        invitations: col(row, 5)?,
        allowed_members: principals(row, 6)?,
        denied_members: principals(row, 7)?,
        creators: principals(row, 8)?,
        version: col(row, 9)?,
    })
}

const ROOM_COLUMNS: &str = "id, name, description, category_id, privacy, room_type, invitations, disabled, addin, \
                            members, managers, presenters, created_by, created_at, version";

fn room_from_row(row: &Row) -> StoreResult<RoomRecord> {
    Ok(RoomRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        description: col(row, 2)?,
        category_id: col(row, 3)?,
        privacy: word(row, 4, Privacy::parse)?,
        room_type: word(row, 5, RoomType::parse)?,
        invitations: word(row, 6, Invitations::parse)?,
        disabled: col(row, 7)?,
        addin: col(row, 8)?,
        members: principals(row, 9)?,
        managers: principals(row, 10)?,
        presenters: principals(row, 11)?,
        created_by: col(row, 12)?,
        created_at: col(row, 13)?,
        version: col(row, 14)?,
    })
}

pub(crate) const MESSAGE_COLUMNS: &str =
    "id, room_id, seq, author, ts, text, story_title, alert, client_id, replaced, file";

/// The eleven arrays of [`MessageArrays`] as typed parameters `$1`–`$11`, in the order of `MESSAGE_COLUMNS`, for
/// `unnest(…)`.
pub(crate) const MESSAGE_ARRAYS: &str = "$1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], \
     $6::text[], $7::text[], $8::bool[], $9::text[], $10::bool[], $11::text[]";

/// Messages as one array per column of `MESSAGE_COLUMNS`, for inserting many rows with one statement.
pub(crate) struct MessageArrays<'a> {
    ids: Vec<&'a str>,
    rooms: Vec<&'a str>,
    seqs: Vec<i64>,
    authors: Vec<&'a str>,
    times: Vec<i64>,
    texts: Vec<&'a str>,
    titles: Vec<Option<&'a str>>,
    alerts: Vec<bool>,
    client_ids: Vec<Option<&'a str>>,
    replaced: Vec<bool>,
    files: Vec<Option<String>>,
}

impl<'a> MessageArrays<'a> {
    /// The columns of `messages`; `room`, when given, stands for every message's own `room_id`.
    pub(crate) fn of(messages: &[&'a MessageRecord], room: Option<&'a str>) -> Self {
        Self {
            ids: messages.iter().map(|m| m.id.as_str()).collect(),
            rooms: messages.iter().map(|m| room.unwrap_or(m.room_id.as_str())).collect(),
            seqs: messages.iter().map(|m| m.seq).collect(),
            authors: messages.iter().map(|m| m.author.as_str()).collect(),
            times: messages.iter().map(|m| m.ts).collect(),
            texts: messages.iter().map(|m| m.text.as_str()).collect(),
            titles: messages.iter().map(|m| m.story_title.as_deref()).collect(),
            alerts: messages.iter().map(|m| m.alert).collect(),
            client_ids: messages.iter().map(|m| m.client_id.as_deref()).collect(),
            replaced: messages.iter().map(|m| m.replaced).collect(),
            files: messages.iter().map(|m| m.file.as_ref().map(|f| f.encode())).collect(),
        }
    }

    /// The parameters `$1`–`$11` of `MESSAGE_ARRAYS`.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.ids,
            &self.rooms,
            &self.seqs,
            &self.authors,
            &self.times,
            &self.texts,
            &self.titles,
            &self.alerts,
            &self.client_ids,
            &self.replaced,
            &self.files,
        ]
    }
}

pub(crate) fn message_from_row(row: &Row) -> StoreResult<MessageRecord> {
    Ok(MessageRecord {
        id: col(row, 0)?,
        room_id: col(row, 1)?,
        seq: col(row, 2)?,
        author: col(row, 3)?,
        ts: col(row, 4)?,
        text: col(row, 5)?,
        story_title: col(row, 6)?,
        alert: col(row, 7)?,
        client_id: col(row, 8)?,
        replaced: col(row, 9)?,
        file: col::<Option<String>>(row, 10)?.as_deref().and_then(pchat_store::FileMeta::decode),
    })
}

fn addin_from_row(row: &Row) -> StoreResult<AddinRecord> {
    Ok(AddinRecord { name: col(row, 0)?, url: col(row, 1)? })
}

fn invitation_from_row(row: &Row) -> StoreResult<InvitationRecord> {
    Ok(InvitationRecord { id: col(row, 0)?, address: col(row, 1)?, room_id: col(row, 2)?, created_at: col(row, 3)? })
}

pub(crate) fn all<T>(rows: Vec<Row>, map: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

/// Whether group `$1` reaches itself through its member groups (each step a lateral lookup by `group_name`, the
/// primary key's leading column; OFFSET 0 keeps the planner from turning the step into a join over every row).
const GROUP_CYCLE: &str = "WITH RECURSIVE reach(g) AS ( \
        SELECT substr(member, 7) FROM group_members WHERE group_name = $1 AND member LIKE 'group:%' \
        UNION \
        SELECT x.g FROM reach CROSS JOIN LATERAL ( \
            SELECT substr(m.member, 7) AS g FROM group_members m \
            WHERE m.group_name = reach.g AND m.member LIKE 'group:%' OFFSET 0) x) \
    SELECT 1 FROM reach WHERE g = $1 LIMIT 1";

#[async_trait]
impl Store for PgStore {
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    async fn publish(&self, events: Vec<ClusterEvent>) -> StoreResult<()> {
        let payloads: Vec<String> = events.iter().flat_map(notify::encode_cluster).collect();
        self.query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", &[&notify::CLUSTER, &payloads])
            .await
            .map(drop)
    }

    fn database_in_use(&self) -> &'static str {
        self.in_use.borrow().role
    }

    async fn ping(&self) -> StoreResult<()> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    async fn create_user(&self, u: UserRecord) -> StoreResult<()> {
        let sql = "INSERT INTO users (address, display_name, password_hash, created_at) VALUES ($1, $2, $3, $4)";
        let params: [&(dyn ToSql + Sync); 4] = [&u.address, &u.display_name, &u.password_hash, &u.created_at];
        self.directory_execute_indexed(sql, &params, &[Indexed::user(&u)]).await.map(drop)
    }

    async fn create_users(&self, users: Vec<UserRecord>) -> StoreResult<()> {
        let column = |f: fn(&UserRecord) -> &String| users.iter().map(f).collect::<Vec<&String>>();
        let (addresses, names, hashes) =
            (column(|u| &u.address), column(|u| &u.display_name), column(|u| &u.password_hash));
        let created: Vec<i64> = users.iter().map(|u| u.created_at).collect();
        let sql = "INSERT INTO users (address, display_name, password_hash, created_at) \
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])";
        let indexed: Vec<Indexed> = users.iter().map(Indexed::user).collect();
        self.directory_execute_indexed(sql, &[&addresses, &names, &hashes, &created], &indexed).await.map(drop)
    }

    async fn users_by_address(&self, addresses: &[String]) -> StoreResult<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE address = ANY($1) ORDER BY address");
        all(self.query(&sql, &[&addresses]).await?, user_from_row)
    }

    async fn directory_keys(
        &self,
        fields: &[DirectoryField],
        term: &DirectoryTerm,
        cap: u32,
    ) -> StoreResult<Option<Vec<String>>> {
        directory::keys(&**self.client().await?, fields, term, cap).await
    }

    async fn get_user(&self, address: &str) -> StoreResult<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE address = $1");
        self.query_opt(&sql, &[&address]).await?.as_ref().map(user_from_row).transpose()
    }

    async fn search_users(&self, query: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<UserRecord>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE (lower(address) LIKE $1 ESCAPE '\\' OR lower(display_name) LIKE $1 \
             ESCAPE '\\') AND address > $2 ORDER BY address LIMIT $3"
        );
        let rows = self.query(&sql, &[&like_pattern(query), &after.unwrap_or(""), &i64::from(limit)]).await?;
        all(rows, user_from_row)
    }

    async fn delete_user(&self, address: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        keeps_an_administrator(&tx, address).await?;
        changed_one(tx.execute("DELETE FROM users WHERE address = $1", &[&address]).await.map_err(unavailable)?)?;
        let scope = format!("user:{address}");
        for sql in [
            "DELETE FROM roles WHERE address = $1",
            "DELETE FROM group_members WHERE member = $1",
            "DELETE FROM follows WHERE address = $1",
            "DELETE FROM read_marks WHERE address = $1",
            "DELETE FROM invitations WHERE address = $1",
            "DELETE FROM directory_terms WHERE key = $1",
        ] {
            tx.execute(sql, &[&address]).await.map_err(unavailable)?;
        }
        tx.execute("DELETE FROM policies WHERE scope = $1", &[&scope]).await.map_err(unavailable)?;
        announce_directory_change(&tx).await?;
        commit_captured(tx).await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let rows = self.query("SELECT count(*) FROM users", &[]).await?;
        let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
        Ok(n as u64)
    }

    async fn set_role(&self, address: &str, role: AdminRole, granted: bool) -> StoreResult<()> {
        if granted {
            let sql = "INSERT INTO roles (address, role) VALUES ($1, $2) ON CONFLICT DO NOTHING";
            return self.directory_execute(sql, &[&address, &role.as_str()]).await.map(drop);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if role == AdminRole::Admin {
            keeps_an_administrator(&tx, address).await?;
        }
        tx.execute("DELETE FROM roles WHERE address = $1 AND role = $2", &[&address, &role.as_str()])
            .await
            .map_err(unavailable)?;
        announce_directory_change(&tx).await?;
        commit_captured(tx).await
    }

    async fn list_roles(&self) -> StoreResult<Vec<(String, AdminRole)>> {
        let rows = self.query("SELECT address, role FROM roles ORDER BY address, role", &[]).await?;
        let mut out = vec![];
        for row in rows {
            let (address, role): (String, String) = (col(&row, 0)?, col(&row, 1)?);
            if let Some(role) = AdminRole::parse(&role) {
                out.push((address, role));
            }
        }
        Ok(out)
    }

    async fn create_group(&self, name: &str) -> StoreResult<()> {
        self.directory_execute("INSERT INTO groups (name) VALUES ($1)", &[&name]).await.map(drop)
    }

    async fn get_group(&self, name: &str) -> StoreResult<Option<Vec<String>>> {
        if self.query_opt("SELECT 1 FROM groups WHERE name = $1", &[&name]).await?.is_none() {
            return Ok(None);
        }
        let rows =
            self.query("SELECT member FROM group_members WHERE group_name = $1 ORDER BY member", &[&name]).await?;
        rows.iter().map(|r| col(r, 0)).collect::<StoreResult<Vec<String>>>().map(Some)
    }

    async fn list_groups(&self) -> StoreResult<Vec<String>> {
        self.query("SELECT name FROM groups ORDER BY name", &[]).await?.iter().map(|r| col(r, 0)).collect()
    }

    async fn update_group(&self, name: &str, add: &[String], remove: &[String]) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Lock the group row so that concurrent changes cannot form a cycle between them.
        if tx
            .query_opt("SELECT 1 FROM groups WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(unavailable)?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM group_members WHERE group_name = $1 AND member = ANY($2)", &[&name, &remove])
            .await
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO group_members (group_name, member) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            &[&name, &add],
        )
        .await
        .map_err(unavailable)?;
        if tx.query_opt(GROUP_CYCLE, &[&name]).await.map_err(unavailable)?.is_some() {
            return Err(StoreError::GroupCycle);
        }
        let members = tx
            .query("SELECT member FROM group_members WHERE group_name = $1 ORDER BY member", &[&name])
            .await
            .map_err(unavailable)?
            .iter()
            .map(|r| col(r, 0))
            .collect::<StoreResult<Vec<String>>>()?;
        announce_directory_change(&tx).await?;
        commit_captured(tx).await?;
        Ok(members)
    }

    async fn delete_group(&self, name: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        changed_one(tx.execute("DELETE FROM groups WHERE name = $1", &[&name]).await.map_err(unavailable)?)?;
        let member = format!("group:{name}");
        tx.execute("DELETE FROM group_members WHERE member = $1", &[&member]).await.map_err(unavailable)?;
        announce_directory_change(&tx).await?;
        commit_captured(tx).await
    }

    async fn user_groups(&self, address: &str) -> StoreResult<Vec<String>> {
        let sql = format!("SELECT name FROM ({GROUPS_OF}) g ORDER BY name");
        self.query(&sql, &[&address]).await?.iter().map(|r| col(r, 0)).collect()
    }

    async fn caller_facts(&self, address: &str, policy_scopes: &[PolicyScope]) -> StoreResult<Option<CallerFacts>> {
        // One round trip: the user's row with their groups, roles and policies as arrays (a policy not set: NULL).
        let sql = format!(
            "SELECT {USER_COLUMNS}, \
                 ARRAY(SELECT name FROM ({GROUPS_OF}) g ORDER BY name), \
                 ARRAY(SELECT role FROM roles WHERE address = $1 ORDER BY role), \
                 ARRAY(SELECT (SELECT enabled FROM policies WHERE scope = s) \
                       FROM unnest($2::text[]) WITH ORDINALITY AS x(s, i) ORDER BY i) \
             FROM users WHERE address = $1"
        );
        let scopes: Vec<String> = policy_scopes.iter().map(ToString::to_string).collect();
        let Some(row) = self.query_opt(&sql, &[&address, &scopes]).await? else { return Ok(None) };
        let roles: Vec<String> = col(&row, 5)?;
        Ok(Some(CallerFacts {
            user: user_from_row(&row)?,
            groups: col(&row, 4)?,
            roles: roles.iter().filter_map(|r| AdminRole::parse(r)).collect(),
            policies: col(&row, 6)?,
        }))
    }

    async fn get_policy(&self, scope: &PolicyScope) -> StoreResult<Option<bool>> {
        let key = scope.to_string();
        self.query_opt("SELECT enabled FROM policies WHERE scope = $1", &[&key]).await?.map(|r| col(&r, 0)).transpose()
    }

    async fn put_policy(&self, scope: &PolicyScope, enabled: bool) -> StoreResult<()> {
        let sql = "INSERT INTO policies (scope, enabled) VALUES ($1, $2) \
                   ON CONFLICT (scope) DO UPDATE SET enabled = excluded.enabled";
        self.directory_execute(sql, &[&scope.to_string(), &enabled]).await.map(drop)
    }

    async fn delete_policy(&self, scope: &PolicyScope) -> StoreResult<bool> {
        Ok(self.directory_execute("DELETE FROM policies WHERE scope = $1", &[&scope.to_string()]).await? > 0)
    }

    async fn get_config(&self, scope: &ConfigScope) -> StoreResult<Option<ChatConfig>> {
        let sql = "SELECT default_chat_history, max_file_size_kb, participant_update_limit, room_management_url, \
                   max_message_bytes FROM configs WHERE scope = $1";
        let Some(row) = self.query_opt(sql, &[&scope.to_string()]).await? else { return Ok(None) };
        Ok(Some(ChatConfig {
            default_chat_history: u32_col(&row, 0)?,
            max_file_size_kb: u32_col(&row, 1)?,
            participant_update_limit: u32_col(&row, 2)?,
            room_management_url: col(&row, 3)?,
            max_message_bytes: u32_col(&row, 4)?,
        }))
    }

    async fn list_policies(&self) -> StoreResult<Vec<(String, bool)>> {
        let rows = self.query("SELECT scope, enabled FROM policies ORDER BY scope COLLATE \"C\"", &[]).await?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
    }

    async fn list_configs(&self) -> StoreResult<Vec<(String, ChatConfig)>> {
        let sql = "SELECT scope, default_chat_history, max_file_size_kb, participant_update_limit, room_management_url, \
                   max_message_bytes FROM configs ORDER BY scope COLLATE \"C\"";
        let rows = self.query(sql, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    col(r, 0)?,
                    ChatConfig {
                        default_chat_history: u32_col(r, 1)?,
                        max_file_size_kb: u32_col(r, 2)?,
                        participant_update_limit: u32_col(r, 3)?,
                        room_management_url: col(r, 4)?,
                        max_message_bytes: u32_col(r, 5)?,
                    },
                ))
            })
            .collect()
    }

    async fn put_config(&self, scope: &ConfigScope, c: &ChatConfig) -> StoreResult<()> {
        let sql = "INSERT INTO configs (scope, default_chat_history, max_file_size_kb, participant_update_limit, \
                   room_management_url, max_message_bytes) VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (scope) DO UPDATE SET default_chat_history = excluded.default_chat_history, \
                   max_file_size_kb = excluded.max_file_size_kb, \
                   participant_update_limit = excluded.participant_update_limit, \
                   room_management_url = excluded.room_management_url, max_message_bytes = excluded.max_message_bytes";
        let values = [
            i64::from(c.default_chat_history),
            i64::from(c.max_file_size_kb),
            i64::from(c.participant_update_limit),
            i64::from(c.max_message_bytes),
        ];
        let params: [&(dyn ToSql + Sync); 6] =
            [&scope.to_string(), &values[0], &values[1], &values[2], &c.room_management_url, &values[3]];
        self.directory_execute(sql, &params).await.map(drop)
    }

    async fn delete_config(&self, scope: &ConfigScope) -> StoreResult<bool> {
        Ok(self.directory_execute("DELETE FROM configs WHERE scope = $1", &[&scope.to_string()]).await? > 0)
    }

    async fn create_category(&self, k: &CategoryRecord) -> StoreResult<()> {
        let sql =
            format!("INSERT INTO categories ({CATEGORY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        let (allowed, denied, creators) =
            (join_principals(&k.allowed_members), join_principals(&k.denied_members), join_principals(&k.creators));
        let params: [&(dyn ToSql + Sync); 10] = [
            &k.id,
            &k.name,
            &k.description,
            &k.file_upload,
            &k.chat_history,
            &k.invitations,
            &allowed,
            &denied,
            &creators,
            &k.version,
        ];
        self.execute(&sql, &params).await.map(drop)
    }

    async fn get_category(&self, id: &str) -> StoreResult<Option<CategoryRecord>> {
        let sql = format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = $1");
        self.query_opt(&sql, &[&id]).await?.as_ref().map(category_from_row).transpose()
    }

    async fn get_category_by_name(&self, name: &str) -> StoreResult<Option<CategoryRecord>> {
        let sql = format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE name = $1");
        self.query_opt(&sql, &[&name]).await?.as_ref().map(category_from_row).transpose()
    }

    async fn list_categories(&self) -> StoreResult<Vec<CategoryRecord>> {
        all(
            self.query(&format!("SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY name"), &[]).await?,
            category_from_row,
        )
    }

    async fn update_category(&self, k: &CategoryRecord) -> StoreResult<()> {
        let sql = "UPDATE categories SET name = $2, description = $3, file_upload = $4, chat_history = $5, \
                   invitations = $6, allowed_members = $7, denied_members = $8, creators = $9, version = version + 1 \
                   WHERE id = $1 AND version = $10";
        let (allowed, denied, creators) =
            (join_principals(&k.allowed_members), join_principals(&k.denied_members), join_principals(&k.creators));
        let params: [&(dyn ToSql + Sync); 10] = [
            &k.id,
            &k.name,
            &k.description,
            &k.file_upload,
            &k.chat_history,
            &k.invitations,
            &allowed,
            &denied,
            &creators,
            &k.version,
        ];
        let updated = self.execute_one(sql, &params).await;
        self.versioned(updated, "categories", &k.id).await
    }

    async fn delete_category(&self, id: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Lock the category so that no room is created in it while it is being deleted.
        if tx
            .query_opt("SELECT 1 FROM categories WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(unavailable)?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        if tx
            .query_opt("SELECT 1 FROM rooms WHERE category_id = $1 LIMIT 1", &[&id])
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Err(StoreError::CategoryNotEmpty);
        }
        tx.execute("DELETE FROM categories WHERE id = $1", &[&id]).await.map_err(unavailable)?;
        commit_captured(tx).await
    }

    async fn create_addin(&self, a: &AddinRecord) -> StoreResult<()> {
        self.execute("INSERT INTO addins (name, url) VALUES ($1, $2)", &[&a.name, &a.url]).await.map(drop)
    }

    async fn get_addin(&self, name: &str) -> StoreResult<Option<AddinRecord>> {
        self.query_opt("SELECT name, url FROM addins WHERE name = $1", &[&name])
            .await?
            .as_ref()
            .map(addin_from_row)
            .transpose()
    }

    async fn list_addins(&self) -> StoreResult<Vec<AddinRecord>> {
        all(self.query("SELECT name, url FROM addins ORDER BY name", &[]).await?, addin_from_row)
    }

    async fn update_addin(&self, name: &str, a: &AddinRecord) -> StoreResult<()> {
        let sql = "UPDATE addins SET name = $2, url = $3 WHERE name = $1";
        self.change_addin(name, sql, &[&name, &a.name, &a.url]).await
    }

    async fn delete_addin(&self, name: &str) -> StoreResult<()> {
        self.change_addin(name, "DELETE FROM addins WHERE name = $1", &[&name]).await
    }

    async fn create_room(&self, r: &RoomRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // A shared lock on the category keeps it from being deleted until this room exists.
        let sql = "SELECT 1 FROM categories WHERE id = $1 FOR SHARE";
        if tx.query_opt(sql, &[&r.category_id]).await.map_err(unavailable)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let sql = format!(
            "INSERT INTO rooms ({ROOM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        let (members, managers, presenters) =
            (join_principals(&r.members), join_principals(&r.managers), join_principals(&r.presenters));
        let params: [&(dyn ToSql + Sync); 15] = [
            &r.id,
            &r.name,
            &r.description,
            &r.category_id,
            &r.privacy.as_str(),
            &r.room_type.as_str(),
            &r.invitations.as_str(),
            &r.disabled,
            &r.addin,
            &members,
            &managers,
            &presenters,
            &r.created_by,
            &r.created_at,
            &r.version,
        ];
        tx.execute(&sql, &params).await.map_err(named)?;
        directory::index(&tx, &Indexed::room(r)).await?;
        commit_captured(tx).await
    }

    async fn get_room(&self, id: &str) -> StoreResult<Option<RoomRecord>> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1");
        self.query_opt(&sql, &[&id]).await?.as_ref().map(room_from_row).transpose()
    }

    async fn get_room_by_name(&self, name: &str) -> StoreResult<Option<RoomRecord>> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1");
        self.query_opt(&sql, &[&name]).await?.as_ref().map(room_from_row).transpose()
    }

    async fn list_rooms(&self, q: &RoomQuery) -> StoreResult<Vec<RoomRecord>> {
        // Two statements, so that each walks its own index (names; a category's names).
        let sql = match q.category_id {
            None => {
                format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE $1::text IS NULL AND name > $2 ORDER BY name LIMIT $3")
            }
            Some(_) => format!(
                "SELECT {ROOM_COLUMNS} FROM rooms WHERE category_id = $1 AND name > $2 ORDER BY category_id, name LIMIT $3"
            ),
        };
        let after = q.after_name.clone().unwrap_or_default();
        all(self.query(&sql, &[&q.category_id, &after, &i64::from(q.limit)]).await?, room_from_row)
    }

    async fn rooms_of(&self, principals: &[String], ids: &[String]) -> StoreResult<Vec<RoomRecord>> {
        let sql = format!(
            "SELECT {ROOM_COLUMNS} FROM rooms WHERE id IN (SELECT room_id FROM room_principals WHERE principal = ANY($1)) \
             OR id = ANY($2) ORDER BY name"
        );
        all(self.query(&sql, &[&principals, &ids]).await?, room_from_row)
    }

    async fn update_room(&self, r: &RoomRecord) -> StoreResult<()> {
        let sql = "UPDATE rooms SET name = $2, description = $3, category_id = $4, privacy = $5, room_type = $6, \
                   invitations = $7, disabled = $8, addin = $9, members = $10, managers = $11, presenters = $12, \
                   version = version + 1 WHERE id = $1 AND version = $13";
        let (members, managers, presenters) =
            (join_principals(&r.members), join_principals(&r.managers), join_principals(&r.presenters));
        let params: [&(dyn ToSql + Sync); 13] = [
            &r.id,
            &r.name,
            &r.description,
            &r.category_id,
            &r.privacy.as_str(),
            &r.room_type.as_str(),
            &r.invitations.as_str(),
            &r.disabled,
            &r.addin,
            &members,
            &managers,
            &presenters,
            &r.version,
        ];
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if tx.execute(sql, &params).await.map_err(named)? == 0 {
            drop(tx);
            return self.versioned(Err(StoreError::NotFound), "rooms", &r.id).await;
        }
        directory::index(&tx, &Indexed::room(r)).await?;
        commit_captured(tx).await
    }

    async fn delete_room(&self, id: &str) -> StoreResult<()> {
        let captured = compliance::take_pending();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // The room's row lock keeps posts out while its postings go.
        if tx.query_opt("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", &[&id]).await.map_err(unavailable)?.is_none() {
            return Err(StoreError::NotFound);
        }
        search::unindex_room(&tx, id, None).await?;
        tx.execute("DELETE FROM presence WHERE room_id = $1", &[&id]).await.map_err(unavailable)?;
        tx.execute("DELETE FROM directory_terms WHERE key = $1", &[&id]).await.map_err(unavailable)?;
        changed_one(tx.execute("DELETE FROM rooms WHERE id = $1", &[&id]).await.map_err(unavailable)?)?;
        insert_captured(&tx, &captured).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended> {
        let (reply, answer) = oneshot::channel();
        self.appends.send(AppendJob { message, reply }).map_err(|_| unavailable("the post appender has stopped"))?;
        answer.await.map_err(|_| unavailable("the post appender has stopped"))?
    }

    async fn messages(&self, room_id: &str, range: MessageRange) -> StoreResult<Vec<MessageRecord>> {
        let base = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1");
        let (rows, descending) = match range {
            MessageRange::After { after, limit } => {
                let sql = format!("{base} AND seq > $2 ORDER BY seq LIMIT $3");
                (self.query(&sql, &[&room_id, &after, &i64::from(limit)]).await?, false)
            }
            MessageRange::Latest { limit } => {
                let sql = format!("{base} ORDER BY seq DESC LIMIT $2");
                (self.query(&sql, &[&room_id, &i64::from(limit)]).await?, true)
            }
            MessageRange::Before { before, limit } => {
                let sql = format!("{base} AND seq < $2 ORDER BY seq DESC LIMIT $3");
                (self.query(&sql, &[&room_id, &before, &i64::from(limit)]).await?, true)
            }
        };
        let mut out = all(rows, message_from_row)?;
        if descending {
            out.reverse();
        }
        Ok(out)
    }

    async fn import_messages(&self, room_id: &str, messages: &[MessageRecord], last_seq: i64) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let sql = format!("INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT * FROM unnest({MESSAGE_ARRAYS})");
        for chunk in messages.chunks(5_000) {
            let records: Vec<&MessageRecord> = chunk.iter().collect();
            let arrays = MessageArrays::of(&records, Some(room_id));
            let params = arrays.params();
            tx.execute(&sql, &params).await.map_err(named)?;
        }
        let num = search::room_num(&tx, room_id).await?.ok_or(StoreError::NotFound)?;
        let mut postings = Postings::default();
        messages.iter().for_each(|m| postings.add_message(num, m));
        postings.insert(&tx).await?;
        let last_ts = messages.iter().map(|m| m.ts).max().unwrap_or(0);
        let sql = "UPDATE rooms SET last_seq = greatest(last_seq, $2), last_ts = greatest(last_ts, $3) WHERE id = $1";
        changed_one(tx.execute(sql, &[&room_id, &last_seq, &last_ts]).await.map_err(unavailable)?)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn last_seq(&self, room_id: &str) -> StoreResult<i64> {
        let row = self.query_opt("SELECT last_seq FROM rooms WHERE id = $1", &[&room_id]).await?;
        row.map(|r| col(&r, 0)).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn find_messages(&self, room_id: &str, f: &MessageFilter) -> StoreResult<Vec<MessageRecord>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND ($2::text IS NULL OR author = $2) \
             AND ($3::bigint IS NULL OR ts >= $3) AND ($4::bigint IS NULL OR ts <= $4) ORDER BY seq"
        );
        all(self.query(&sql, &[&room_id, &f.author, &f.start_ts, &f.end_ts]).await?, message_from_row)
    }

    async fn alter_messages(&self, room_id: &str, ids: &[String], replacement: Option<&str>) -> StoreResult<u64> {
        let captured = compliance::take_pending();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let Some(num) = search::room_num(&tx, room_id).await? else { return Ok(0) };
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND id = ANY($2) FOR UPDATE");
        let before = all(tx.query(&sql, &[&room_id, &ids]).await.map_err(unavailable)?, message_from_row)?;
        let seqs: Vec<i64> = before.iter().map(|m| m.seq).collect();
        crate::indexer::settle(&tx, room_id, &seqs).await?;
        let (mut gone, mut added) = (Postings::default(), Postings::default());
        for m in &before {
            gone.add_message(num, m);
            if let Some(text) = replacement {
                added.add(num, m.ts, m.seq, text, m.story_title.as_deref());
            }
        }
        gone.delete(&tx).await?;
        added.insert(&tx).await?;
        // A removed or replaced message takes the file it announced with it.
        let sql = "DELETE FROM files WHERE room_id = $1 AND message_id = ANY($2)";
        tx.execute(sql, &[&room_id, &ids]).await.map_err(unavailable)?;
        let changed = match replacement {
            Some(text) => {
                let sql =
                    "UPDATE messages SET text = $3, replaced = true, file = NULL WHERE room_id = $1 AND id = ANY($2)";
                tx.execute(sql, &[&room_id, &ids, &text]).await
            }
            None => tx.execute("DELETE FROM messages WHERE room_id = $1 AND id = ANY($2)", &[&room_id, &ids]).await,
        }
        .map_err(unavailable)?;
        insert_captured(&tx, &captured).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }

    async fn clear_room(&self, room_id: &str, end_ts: i64) -> StoreResult<u64> {
        let captured = compliance::take_pending();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // The room's row lock keeps posts (and their postings) out until the clear commits.
        tx.query_opt("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", &[&room_id]).await.map_err(unavailable)?;
        search::unindex_room(&tx, room_id, Some(end_ts)).await?;
        let sql = "DELETE FROM files WHERE room_id = $1 AND message_id IN \
                   (SELECT id FROM messages WHERE room_id = $1 AND ts <= $2)";
        tx.execute(sql, &[&room_id, &end_ts]).await.map_err(unavailable)?;
        let sql = "DELETE FROM messages WHERE room_id = $1 AND ts <= $2";
        let removed = tx.execute(sql, &[&room_id, &end_ts]).await.map_err(unavailable)?;
        insert_captured(&tx, &captured).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(removed)
    }

    async fn register_server(&self, r: &ServerRecord) -> StoreResult<bool> {
        let sql = "INSERT INTO servers (name, url, started_at, heartbeat_at, active, connections, database) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET url = excluded.url, \
                   started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
                   connections = excluded.connections, database = excluded.database RETURNING active";
        let params: [&(dyn ToSql + Sync); 7] =
            [&r.name, &r.url, &r.started_at, &r.heartbeat_at, &r.active, &r.connections, &r.database];
        let rows = self.query(sql, &params).await?;
        rows.first().map(|row| col(row, 0)).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn heartbeat(&self, name: &str, connections: i64, database: &str, at: i64) -> StoreResult<bool> {
        let sql = "UPDATE servers SET heartbeat_at = $2, connections = $3, database = $4 WHERE name = $1 \
                   RETURNING active";
        let row = self.query_opt(sql, &[&name, &at, &connections, &database]).await?;
        row.map(|r| col(&r, 0)).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn set_presence(&self, changes: &[(PresenceRecord, bool)]) -> StoreResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Presence is soft state: a crash loses at most the last few changes, which the server's restart clears
        // anyway (and the others drop a dead server's entries). So its commits do not wait for the WAL to reach
        // the disk. With a waiting commit per join (and another per announcement), 64,000 joins in a minute left
        // the roster writing one row at a time for minutes after them (lync-server on PostgreSQL, 4,000 users).
        tx.batch_execute("SET LOCAL synchronous_commit = off").await.map_err(unavailable)?;
        // The batch as two statements: the last change of each entry wins (so no row is touched twice), the
        // entries present in one INSERT, those gone in one DELETE. A statement per change kept the roster's
        // transaction open for a round trip per row while the server was busy: the 64,000 joins of lync-server at
        // 4,000 users took 100 s to record, and posts committed meanwhile waited up to 0.7 s.
        let mut latest: std::collections::HashMap<(&str, &str, &str), (&str, bool)> =
            std::collections::HashMap::with_capacity(changes.len());
        for (p, present) in changes {
            latest.insert((&p.server, &p.room_id, &p.address), (&p.display_name, *present));
        }
        let (mut servers, mut rooms, mut addresses, mut names) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut gone_servers, mut gone_rooms, mut gone_addresses) = (Vec::new(), Vec::new(), Vec::new());
        for ((server, room, address), (name, present)) in latest {
            if present {
                servers.push(server);
                rooms.push(room);
                addresses.push(address);
                names.push(name);
            } else {
                gone_servers.push(server);
                gone_rooms.push(room);
                gone_addresses.push(address);
            }
        }
        if !servers.is_empty() {
            let sql = "INSERT INTO presence (server, room_id, address, display_name) \
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                       ON CONFLICT (server, room_id, address) DO UPDATE SET display_name = excluded.display_name";
            tx.execute(sql, &[&servers, &rooms, &addresses, &names]).await.map_err(unavailable)?;
        }
        if !gone_servers.is_empty() {
            let sql = "DELETE FROM presence p USING unnest($1::text[], $2::text[], $3::text[]) AS d(s, r, a) \
                       WHERE p.server = d.s COLLATE \"C\" AND p.room_id = d.r COLLATE \"C\" \
                       AND p.address = d.a COLLATE \"C\"";
            tx.execute(sql, &[&gone_servers, &gone_rooms, &gone_addresses]).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn clear_presence(&self, server: &str) -> StoreResult<u64> {
        self.execute("DELETE FROM presence WHERE server = $1", &[&server]).await
    }

    async fn list_presence(&self) -> StoreResult<Vec<PresenceRecord>> {
        let sql = "SELECT server, room_id, address, display_name FROM presence ORDER BY server, room_id, address";
        all(self.query(sql, &[]).await?, |r| {
            Ok(PresenceRecord {
                server: col(r, 0)?,
                room_id: col(r, 1)?,
                address: col(r, 2)?,
                display_name: col(r, 3)?,
            })
        })
    }

    async fn record_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        insert_events(&tx, events).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn outbox(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>> {
        let sql = format!("SELECT id, {EVENT_COLUMNS} FROM compliance_outbox ORDER BY id LIMIT $1");
        all(self.query(&sql, &[&i64::from(limit)]).await?, |r| {
            Ok(OutboxEvent { id: col(r, 0)?, event: event_at(r, 1)? })
        })
    }

    async fn outbox_done(&self, ids: &[i64]) -> StoreResult<()> {
        self.execute("DELETE FROM compliance_outbox WHERE id = ANY($1)", &[&ids]).await.map(drop)
    }

    async fn get_compliance_config(&self, scope: &str) -> StoreResult<Option<String>> {
        self.query_opt("SELECT json FROM compliance_config WHERE scope = $1", &[&scope])
            .await?
            .map(|r| col(&r, 0))
            .transpose()
    }

    async fn put_compliance_config(&self, scope: &str, json: &str) -> StoreResult<()> {
        let sql = "INSERT INTO compliance_config (scope, json) VALUES ($1, $2) \
                   ON CONFLICT (scope) DO UPDATE SET json = excluded.json";
        self.directory_execute(sql, &[&scope, &json]).await.map(drop)
    }

    async fn list_servers(&self) -> StoreResult<Vec<ServerRecord>> {
        let sql =
            "SELECT name, url, started_at, heartbeat_at, active, connections, database FROM servers ORDER BY name";
        all(self.query(sql, &[]).await?, |r| {
            Ok(ServerRecord {
                name: col(r, 0)?,
                url: col(r, 1)?,
                started_at: col(r, 2)?,
                heartbeat_at: col(r, 3)?,
                active: col(r, 4)?,
                connections: col(r, 5)?,
                database: col(r, 6)?,
            })
        })
    }

    async fn set_active(&self, changes: &[(String, bool)]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for (name, active) in changes {
            changed_one(
                tx.execute("UPDATE servers SET active = $2 WHERE name = $1", &[name, active])
                    .await
                    .map_err(unavailable)?,
            )?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn set_follow(&self, address: &str, room_id: &str, follow: bool) -> StoreResult<()> {
        let sql = if follow {
            "INSERT INTO follows (address, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM follows WHERE address = $1 AND room_id = $2"
        };
        self.execute(sql, &[&address, &room_id]).await.map(drop)
    }

    async fn follows(&self, address: &str) -> StoreResult<Vec<String>> {
        let rows = self.query("SELECT room_id FROM follows WHERE address = $1 ORDER BY room_id", &[&address]).await?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    async fn mark_read(&self, address: &str, room_id: &str, seq: i64) -> StoreResult<()> {
        let sql = "INSERT INTO read_marks (address, room_id, seq) VALUES ($1, $2, $3) \
                   ON CONFLICT (address, room_id) DO UPDATE SET seq = greatest(read_marks.seq, excluded.seq)";
        self.execute(sql, &[&address, &room_id, &seq]).await.map(drop)
    }

    async fn read_marks(&self, address: &str) -> StoreResult<Vec<(String, i64)>> {
        let rows =
            self.query("SELECT room_id, seq FROM read_marks WHERE address = $1 ORDER BY room_id", &[&address]).await?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
    }

    async fn add_invitations(
        &self,
        room_id: &str,
        addresses: &[String],
        created_at: i64,
    ) -> StoreResult<Vec<InvitationRecord>> {
        let sql = "INSERT INTO invitations (address, room_id, created_at) SELECT unnest($1::text[]), $2, $3 \
                   ON CONFLICT DO NOTHING RETURNING id, address, room_id, created_at";
        let mut created = all(self.query(sql, &[&addresses, &room_id, &created_at]).await?, invitation_from_row)?;
        created.sort_by_key(|i| i.id);
        Ok(created)
    }

    async fn import_invitations(&self, invitations: &[InvitationRecord]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for i in invitations {
            let sql = "INSERT INTO invitations (id, address, room_id, created_at) VALUES ($1, $2, $3, $4)";
            tx.execute(sql, &[&i.id, &i.address, &i.room_id, &i.created_at]).await.map_err(named)?;
        }
        // Later invitations must get larger ids than every imported one.
        let sql = "SELECT setval(pg_get_serial_sequence('invitations', 'id'), greatest((SELECT max(id) FROM invitations), 1))";
        tx.execute(sql, &[]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn invitations(&self, address: &str, after_id: i64, limit: u32) -> StoreResult<Vec<InvitationRecord>> {
        let sql = "SELECT id, address, room_id, created_at FROM invitations WHERE address = $1 AND id > $2 \
                   ORDER BY id LIMIT $3";
        all(self.query(sql, &[&address, &after_id, &i64::from(limit)]).await?, invitation_from_row)
    }

    async fn withdraw_invitations(&self, address: &str, room_ids: &[String]) -> StoreResult<Vec<InvitationRecord>> {
        let sql = "DELETE FROM invitations WHERE address = $1 AND room_id = ANY($2) \
                   RETURNING id, address, room_id, created_at";
        let mut withdrawn = all(self.query(sql, &[&address, &room_ids]).await?, invitation_from_row)?;
        withdrawn.sort_by_key(|i| i.id);
        Ok(withdrawn)
    }
}

#[async_trait]
impl pchat_store::Audit for PgStore {
    async fn audit_events(&self, q: &EventQuery) -> StoreResult<Vec<pchat_store::AuditRecord>> {
        let sql = format!(
            "SELECT id, {EVENT_COLUMNS} FROM audit_log WHERE id > $1 AND ($2::bigint IS NULL OR ts >= $2) \
             AND ($3::bigint IS NULL OR ts <= $3) AND ($4::text IS NULL OR room_id = $4) \
             AND ($5::text IS NULL OR actor = $5) AND ($6::text IS NULL OR kind = $6) ORDER BY id LIMIT $7"
        );
        let params: [&(dyn ToSql + Sync); 7] =
            [&q.after_id, &q.from_ts, &q.to_ts, &q.room_id, &q.actor, &q.kind, &i64::from(q.limit)];
        let rows = self.query(&sql, &params).await?;
        rows.iter().map(|r| Ok(pchat_store::AuditRecord { id: col(r, 0)?, event: event_at(r, 1)? })).collect()
    }
}
