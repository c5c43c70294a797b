//! [`SqliteStore`]: the `Store` port on SQLite. Writes are closures sent to the writer thread; reads are closures
//! run on the reader pool. Principal lists are stored one per line (a principal cannot contain a line break).

use std::fmt::Display;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use pchat_core::text::{DirectoryTerm, user_directory_text};
use pchat_core::{ChatConfig, ConfigScope, Invitations, PolicyScope, Principal, Privacy, RoomType};
use pchat_store::codec::{self, like_pattern, now_micros};
use pchat_store::compliance;
use pchat_store::{
    AddinRecord, AdminRole, Appended, Audit, AuditRecord, CallerFacts, Captured, CategoryRecord, ClusterEvent,
    DirectoryField, EventQuery, FileMeta, InvitationRecord, MessageFilter, MessageRange, MessageRecord, NewEvent,
    NewMessage, OutboxEvent, PresenceRecord, RoomQuery, RoomRecord, ServerRecord, Store, StoreError, StoreEvent,
    StoreResult, UserRecord,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;

use crate::directory;
use crate::reader::Readers;
use crate::search::{Posting, index, json_strings, room_num, unindex, unindex_room};
use crate::writer::Writer;
use crate::{Durability, migrations, open_connection};

pub struct SqliteStore {
    writer: Writer,
    /// The event feed, for published events: one server, so they loop straight back.
    feed: mpsc::UnboundedSender<StoreEvent>,
    readers: Readers,
    events: Mutex<Option<mpsc::UnboundedReceiver<StoreEvent>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("cannot migrate {path}: {source}")]
    Migrate { path: String, source: migrations::MigrationError },
    #[error("cannot start the database writer: {0}")]
    Thread(#[from] std::io::Error),
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, OpenError> {
        let shown = path.display().to_string();
        let mut conn =
            open_connection(path, durability).map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        // The writer inserts search postings at places spread over the index: a larger page cache keeps the index's
        // upper levels and hot pages in memory (64 MiB; readers keep SQLite's default).
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        // Every statement the writer runs stays prepared (rusqlite keeps 16 by default; the writer has more, and
        // preparing again showed as 5 % of its time under load).
        conn.set_prepared_statement_cache_capacity(256);
        // Checkpoints run on a thread of their own (below), beside the writer; the writer checkpoints itself only
        // if that thread falls far behind (a WAL of 100,000 pages, 400 MB).
        conn.pragma_update(None, "wal_autocheckpoint", 100_000)
            .map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        migrations::apply(&mut conn).map_err(|source| OpenError::Migrate { path: shown.clone(), source })?;
        crate::backlog::recover(&conn).map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        crate::search::rebuild_if_needed(&conn).map_err(|source| OpenError::Open { path: shown.clone(), source })?;
        crate::directory::rebuild_if_needed(&conn).map_err(|source| OpenError::Open { path: shown, source })?;
        let (feed, events) = mpsc::unbounded_channel();
        let writer = Writer::start(conn, feed.clone())?;
        writer.start_checkpoints(path, durability)?;
        Ok(Self {
            writer,
            feed,
            readers: Readers::new(path.to_path_buf(), durability),
            events: Mutex::new(Some(events)),
        })
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(move |conn, _| f(conn)).await
    }

    /// A write that reads, writes or deletes search postings: it runs with the whole backlog in the index.
    pub(crate) async fn write_indexed<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write_indexed(move |conn, _| f(conn)).await
    }

    /// The row `sql` (with one `?1` parameter) selects for `key`, mapped by `map`, if there is one.
    async fn one<T: Send + 'static>(
        &self,
        sql: String,
        key: &str,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        let key = key.to_owned();
        self.read(move |c| c.prepare_cached(&sql).and_then(|mut s| s.query_row([key], map).optional()).map_err(db))
            .await
    }

    /// The search postings committed and not yet merged into the index.
    pub(crate) fn backlog(&self) -> &crate::backlog::Published {
        self.writer.backlog()
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.read(f).await
    }
}

/// The columns of a compliance event, in the outbox and in the archive.
pub(crate) const EVENT_COLUMNS: &str = "kind, ts, room_id, actor, content, details";

/// The event whose [`EVENT_COLUMNS`] start at column `first`.
pub(crate) fn event_at(r: &Row<'_>, first: usize) -> rusqlite::Result<NewEvent> {
    Ok(NewEvent {
        kind: r.get(first)?,
        ts: r.get(first + 1)?,
        room_id: r.get(first + 2)?,
        actor: r.get(first + 3)?,
        content: r.get(first + 4)?,
        details: r.get(first + 5)?,
    })
}

/// Inserts what a write captured: compliance events into the outbox, audit records into the audit trail (inside
/// the caller's transaction).
pub(crate) fn insert_captured(conn: &Connection, captured: &Captured) -> StoreResult<()> {
    insert_events(conn, &captured.compliance)?;
    if captured.audit.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(&format!("INSERT INTO audit_log ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
        .map_err(db)?;
    for e in &captured.audit {
        insert.execute(params![e.kind, e.ts, e.room_id, e.actor, e.content, e.details]).map_err(db)?;
    }
    Ok(())
}

/// Inserts captured compliance events into the outbox (inside the caller's transaction).
pub(crate) fn insert_events(conn: &Connection, events: &[NewEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(&format!("INSERT INTO compliance_outbox ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
        .map_err(db)?;
    for e in events {
        insert.execute(params![e.kind, e.ts, e.room_id, e.actor, e.content, e.details]).map_err(db)?;
    }
    Ok(())
}

pub(crate) fn unavailable(e: impl Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    unavailable(e)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
        && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

/// Maps a unique-constraint failure to `NameTaken`, anything else to `Unavailable`.
pub(crate) fn named(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) { StoreError::NameTaken } else { db(e) }
}

/// Refuses to take the admin role from `address` (by revoking it or deleting the user) when nobody else has it.
/// Run inside the write, so two administrators revoking each other cannot both succeed.
fn keeps_an_administrator(c: &Connection, address: &str) -> StoreResult<()> {
    let (is_admin, others): (i64, i64) = c
        .query_row(
            "SELECT count(*) FILTER (WHERE address = ?1), count(*) FILTER (WHERE address <> ?1) FROM roles WHERE role = 'admin'",
            [address],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db)?;
    if is_admin > 0 && others == 0 { Err(StoreError::LastAdministrator) } else { Ok(()) }
}

/// The outcome of a versioned update that changed `n` rows: `Conflict` when the row exists with another version.
fn versioned(c: &Connection, table: &str, id: &str, n: usize) -> StoreResult<()> {
    if n > 0 {
        return Ok(());
    }
    let exists = c
        .query_row(&format!("SELECT 1 FROM {table} WHERE id = ?1"), [id], |_| Ok(()))
        .optional()
        .map_err(db)?
        .is_some();
    Err(if exists { StoreError::Conflict } else { StoreError::NotFound })
}

pub(crate) fn changed_one(n: usize) -> StoreResult<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// A JSON array of strings for `json_each` (principals and ids hold no control characters).
/// Every group `address` belongs to, directly or through nesting, by name.
fn groups_of(c: &Connection, address: &str) -> StoreResult<Vec<String>> {
    c.prepare_cached(
        "WITH RECURSIVE g(name) AS ( \
             SELECT group_name FROM group_members WHERE member = ?1 \
             UNION \
             SELECT gm.group_name FROM group_members gm JOIN g ON gm.member = 'group:' || g.name) \
         SELECT name FROM g ORDER BY name",
    )
    .and_then(|mut s| s.query_map([address], |r| r.get(0))?.collect())
    .map_err(db)
}

/// The policy set at a scope (as `PolicyScope` prints it), if one is.
fn policy_at(c: &Connection, scope: &str) -> StoreResult<Option<bool>> {
    c.prepare_cached("SELECT enabled FROM policies WHERE scope = ?1")
        .and_then(|mut s| s.query_row([scope], |r| r.get(0)).optional())
        .map_err(db)
}

fn join(list: &[Principal]) -> String {
    codec::join_principals(list)
}

fn split(raw: &str) -> rusqlite::Result<Vec<Principal>> {
    codec::split_principals(raw)
        .map_err(|e| rusqlite::Error::InvalidColumnType(0, e.to_string(), rusqlite::types::Type::Text))
}

const CATEGORY_COLUMNS: &str =
    "id, name, description, file_upload, chat_history, invitations, allowed_members, denied_members, creators, version";

fn category_from_row(row: &Row<'_>) -> rusqlite::Result<CategoryRecord> {
    Ok(CategoryRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        file_upload: row.get(3)?,
        chat_history: row.get(4)?,
        invitations: row.get(5)?,
        allowed_members: split(&row.get::<_, String>(6)?)?,
        denied_members: split(&row.get::<_, String>(7)?)?,
        creators: split(&row.get::<_, String>(8)?)?,
        version: row.get(9)?,
    })
}

const ROOM_COLUMNS: &str = "id, name, description, category_id, privacy, room_type, invitations, disabled, addin, \
                            members, managers, presenters, created_by, created_at, version";

fn word<T>(raw: String, parse: fn(&str, &str) -> Result<T, pchat_core::ValidationError>) -> rusqlite::Result<T> {
    parse("column", &raw).map_err(|e| rusqlite::Error::InvalidColumnType(0, e.to_string(), rusqlite::types::Type::Text))
}

fn room_from_row(row: &Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        category_id: row.get(3)?,
        privacy: word(row.get(4)?, Privacy::parse)?,
        room_type: word(row.get(5)?, RoomType::parse)?,
        invitations: word(row.get(6)?, Invitations::parse)?,
        disabled: row.get(7)?,
        addin: row.get(8)?,
        members: split(&row.get::<_, String>(9)?)?,
        managers: split(&row.get::<_, String>(10)?)?,
        presenters: split(&row.get::<_, String>(11)?)?,
        created_by: row.get(12)?,
        created_at: row.get(13)?,
        version: row.get(14)?,
    })
}

pub(crate) const MESSAGE_COLUMNS: &str =
    "id, room_id, seq, author, ts, text, story_title, alert, client_id, replaced, file";

pub(crate) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: row.get(0)?,
        room_id: row.get(1)?,
        seq: row.get(2)?,
        author: row.get(3)?,
        ts: row.get(4)?,
        text: row.get(5)?,
        story_title: row.get(6)?,
        alert: row.get(7)?,
        client_id: row.get(8)?,
        replaced: row.get(9)?,
        file: row.get::<_, Option<String>>(10)?.as_deref().and_then(FileMeta::decode),
    })
}

fn addin_from_row(row: &Row<'_>) -> rusqlite::Result<AddinRecord> {
    Ok(AddinRecord { name: row.get(0)?, url: row.get(1)? })
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        address: row.get(0)?,
        display_name: row.get(1)?,
        password_hash: row.get(2)?,
        created_at: row.get(3)?,
    })
}

pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(params, map).map_err(db)?;
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(db)
}

fn group_members(conn: &Connection, name: &str) -> StoreResult<Vec<String>> {
    query_all(conn, "SELECT member FROM group_members WHERE group_name = ?1 ORDER BY member", [name], |r| r.get(0))
}

fn get_message_by_client_id(conn: &Connection, room_id: &str, client_id: &str) -> StoreResult<Option<MessageRecord>> {
    conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND client_id = ?2"))
        .and_then(|mut s| s.query_row([room_id, client_id], message_from_row).optional())
        .map_err(db)
}

fn config_scope_key(scope: &ConfigScope) -> String {
    scope.to_string()
}

#[async_trait]
impl Store for SqliteStore {
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    async fn publish(&self, events: Vec<ClusterEvent>) -> StoreResult<()> {
        for event in events {
            // Nobody listening (CLI tools) is fine.
            let _ = self.feed.send(StoreEvent::Cluster(event));
        }
        Ok(())
    }

    fn database_in_use(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.writer.health().check()?;
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db)).await
    }

    fn fatal(&self) -> Option<String> {
        self.writer.health().fatal()
    }

    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO users (address, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user.address, user.display_name, user.password_hash, user.created_at],
            )
            .map_err(named)?;
            directory::index(
                c,
                DirectoryField::User,
                &user.address,
                &user_directory_text(&user.address, &user.display_name),
            )
        })
        .await
    }

    async fn create_users(&self, users: Vec<UserRecord>) -> StoreResult<()> {
        // One savepoint: a taken address rolls every insert of the batch back.
        self.write(move |c| {
            let mut insert = c
                .prepare_cached(
                    "INSERT INTO users (address, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?;
            for u in &users {
                insert.execute(params![u.address, u.display_name, u.password_hash, u.created_at]).map_err(named)?;
                directory::index(
                    c,
                    DirectoryField::User,
                    &u.address,
                    &user_directory_text(&u.address, &u.display_name),
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn get_user(&self, address: &str) -> StoreResult<Option<UserRecord>> {
        let sql = "SELECT address, display_name, password_hash, created_at FROM users WHERE address = ?1";
        self.one(sql.to_owned(), address, user_from_row).await
    }

    async fn users_by_address(&self, addresses: &[String]) -> StoreResult<Vec<UserRecord>> {
        let addresses = json_strings(addresses);
        self.read(move |c| {
            query_all(
                c,
                "SELECT address, display_name, password_hash, created_at FROM users \
                 WHERE address IN (SELECT value FROM json_each(?1)) ORDER BY address",
                params![addresses],
                user_from_row,
            )
        })
        .await
    }

    async fn directory_keys(
        &self,
        fields: &[DirectoryField],
        term: &DirectoryTerm,
        cap: u32,
    ) -> StoreResult<Option<Vec<String>>> {
        let (fields, term) = (fields.to_vec(), term.clone());
        self.read(move |c| directory::keys(c, &fields, &term, cap)).await
    }

    async fn search_users(&self, query: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<UserRecord>> {
        let (pattern, after) = (like_pattern(query), after.unwrap_or("").to_owned());
        self.read(move |c| {
            query_all(
                c,
                "SELECT address, display_name, password_hash, created_at FROM users \
                 WHERE (lower(address) LIKE ?1 ESCAPE '\\' OR lower(display_name) LIKE ?1 ESCAPE '\\') AND address > ?2 \
                 ORDER BY address LIMIT ?3",
                params![pattern, after, limit],
                user_from_row,
            )
        })
        .await
    }

    async fn delete_user(&self, address: &str) -> StoreResult<()> {
        let address = address.to_owned();
        self.write(move |c| {
            keeps_an_administrator(c, &address)?;
            let n = c.execute("DELETE FROM users WHERE address = ?1", [&address]).map_err(db)?;
            changed_one(n)?;
            let member = address.clone();
            for sql in [
                "DELETE FROM roles WHERE address = ?1",
                "DELETE FROM group_members WHERE member = ?1",
                "DELETE FROM follows WHERE address = ?1",
                "DELETE FROM read_marks WHERE address = ?1",
                "DELETE FROM invitations WHERE address = ?1",
                "DELETE FROM directory_terms WHERE key = ?1",
                "DELETE FROM policies WHERE scope = 'user:' || ?1",
            ] {
                c.execute(sql, [&member]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(db)
        })
        .await
    }

    async fn set_role(&self, address: &str, role: AdminRole, granted: bool) -> StoreResult<()> {
        let address = address.to_owned();
        self.write(move |c| {
            if !granted && role == AdminRole::Admin {
                keeps_an_administrator(c, &address)?;
            }
            let sql = if granted {
                "INSERT OR IGNORE INTO roles (address, role) VALUES (?1, ?2)"
            } else {
                "DELETE FROM roles WHERE address = ?1 AND role = ?2"
            };
            c.execute(sql, params![address, role.as_str()]).map_err(db).map(drop)
        })
        .await
    }

    async fn caller_facts(&self, address: &str, policy_scopes: &[PolicyScope]) -> StoreResult<Option<CallerFacts>> {
        let (address, scopes) = (address.to_owned(), policy_scopes.iter().map(ToString::to_string).collect::<Vec<_>>());
        self.read(move |c| {
            let user = c
                .prepare_cached("SELECT address, display_name, password_hash, created_at FROM users WHERE address = ?1")
                .and_then(|mut s| s.query_row([&address], user_from_row).optional())
                .map_err(db)?;
            let Some(user) = user else { return Ok(None) };
            let roles: Vec<String> = c
                .prepare_cached("SELECT role FROM roles WHERE address = ?1 ORDER BY role")
                .and_then(|mut s| s.query_map([&address], |r| r.get(0))?.collect())
                .map_err(db)?;
            let policies = scopes.iter().map(|scope| policy_at(c, scope)).collect::<StoreResult<Vec<_>>>()?;
            Ok(Some(CallerFacts {
                groups: groups_of(c, &address)?,
                roles: roles.iter().filter_map(|r| AdminRole::parse(r)).collect(),
                policies,
                user,
            }))
        })
        .await
    }

    async fn list_roles(&self) -> StoreResult<Vec<(String, AdminRole)>> {
        self.read(|c| {
            let rows: Vec<(String, String)> =
                query_all(c, "SELECT address, role FROM roles ORDER BY address, role", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok(rows.into_iter().filter_map(|(a, r)| AdminRole::parse(&r).map(|r| (a, r))).collect())
        })
        .await
    }

    async fn create_group(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| {
            // Test failpoints: a write that panics, and a writer thread that dies after a write.
            if name == "failpoint" && crate::failpoint("sqlite-write-panics") {
                panic!("failpoint sqlite-write-panics");
            }
            if name == "failpoint" && crate::failpoint("sqlite-writer-dies") {
                crate::writer::DIE.with(|die| die.set(true));
            }
            c.execute("INSERT INTO groups (name) VALUES (?1)", [name]).map_err(named).map(drop)
        })
        .await
    }

    async fn get_group(&self, name: &str) -> StoreResult<Option<Vec<String>>> {
        let name = name.to_owned();
        self.read(move |c| {
            let exists =
                c.query_row("SELECT 1 FROM groups WHERE name = ?1", [&name], |_| Ok(())).optional().map_err(db)?;
            match exists {
                Some(()) => group_members(c, &name).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_groups(&self) -> StoreResult<Vec<String>> {
        self.read(|c| query_all(c, "SELECT name FROM groups ORDER BY name", [], |r| r.get(0))).await
    }

    async fn update_group(&self, name: &str, add: &[String], remove: &[String]) -> StoreResult<Vec<String>> {
        let (name, add, remove) = (name.to_owned(), add.to_vec(), remove.to_vec());
        self.write(move |c| {
            let exists =
                c.query_row("SELECT 1 FROM groups WHERE name = ?1", [&name], |_| Ok(())).optional().map_err(db)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            for member in &remove {
                c.execute("DELETE FROM group_members WHERE group_name = ?1 AND member = ?2", [&name, member])
                    .map_err(db)?;
            }
            for member in &add {
                c.execute("INSERT OR IGNORE INTO group_members (group_name, member) VALUES (?1, ?2)", [&name, member])
                    .map_err(db)?;
            }
            // Any new cycle passes through this group, so looking for a path back to it suffices.
            let cycle = c
                .query_row(
                    "WITH RECURSIVE reach(g) AS ( \
                         SELECT substr(member, 7) FROM group_members WHERE group_name = ?1 AND member LIKE 'group:%' \
                         UNION \
                         SELECT substr(m.member, 7) FROM group_members m JOIN reach ON m.group_name = reach.g \
                         WHERE m.member LIKE 'group:%') \
                     SELECT 1 FROM reach WHERE g = ?1 LIMIT 1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?;
            if cycle.is_some() {
                return Err(StoreError::GroupCycle);
            }
            group_members(c, &name)
        })
        .await
    }

    async fn delete_group(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| {
            changed_one(c.execute("DELETE FROM groups WHERE name = ?1", [&name]).map_err(db)?)?;
            c.execute("DELETE FROM group_members WHERE member = 'group:' || ?1", [&name]).map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn user_groups(&self, address: &str) -> StoreResult<Vec<String>> {
        let address = address.to_owned();
        self.read(move |c| groups_of(c, &address)).await
    }

    async fn get_policy(&self, scope: &PolicyScope) -> StoreResult<Option<bool>> {
        let key = scope.to_string();
        self.read(move |c| policy_at(c, &key)).await
    }

    async fn put_policy(&self, scope: &PolicyScope, enabled: bool) -> StoreResult<()> {
        let key = scope.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO policies (scope, enabled) VALUES (?1, ?2) ON CONFLICT (scope) DO UPDATE SET enabled = excluded.enabled",
                params![key, enabled],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    async fn delete_policy(&self, scope: &PolicyScope) -> StoreResult<bool> {
        let key = scope.to_string();
        self.write(move |c| c.execute("DELETE FROM policies WHERE scope = ?1", [key]).map(|n| n > 0).map_err(db)).await
    }

    async fn get_config(&self, scope: &ConfigScope) -> StoreResult<Option<ChatConfig>> {
        let key = config_scope_key(scope);
        self.read(move |c| {
            c.query_row(
                "SELECT default_chat_history, max_file_size_kb, participant_update_limit, room_management_url, max_message_bytes \
                 FROM configs WHERE scope = ?1",
                [key],
                |r| {
                    Ok(ChatConfig {
                        default_chat_history: r.get(0)?,
                        max_file_size_kb: r.get(1)?,
                        participant_update_limit: r.get(2)?,
                        room_management_url: r.get(3)?,
                        max_message_bytes: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn list_policies(&self) -> StoreResult<Vec<(String, bool)>> {
        self.read(|c| {
            query_all(c, "SELECT scope, enabled FROM policies ORDER BY scope", [], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .await
    }

    async fn list_configs(&self) -> StoreResult<Vec<(String, ChatConfig)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT scope, default_chat_history, max_file_size_kb, participant_update_limit, room_management_url, \
                 max_message_bytes FROM configs ORDER BY scope",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        ChatConfig {
                            default_chat_history: r.get(1)?,
                            max_file_size_kb: r.get(2)?,
                            participant_update_limit: r.get(3)?,
                            room_management_url: r.get(4)?,
                            max_message_bytes: r.get(5)?,
                        },
                    ))
                },
            )
        })
        .await
    }

    async fn put_config(&self, scope: &ConfigScope, config: &ChatConfig) -> StoreResult<()> {
        let (key, cfg) = (config_scope_key(scope), config.clone());
        self.write(move |c| {
            c.execute(
                "INSERT INTO configs (scope, default_chat_history, max_file_size_kb, participant_update_limit, \
                 room_management_url, max_message_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (scope) DO UPDATE SET default_chat_history = excluded.default_chat_history, \
                 max_file_size_kb = excluded.max_file_size_kb, participant_update_limit = excluded.participant_update_limit, \
                 room_management_url = excluded.room_management_url, max_message_bytes = excluded.max_message_bytes",
                params![
                    key,
                    cfg.default_chat_history,
                    cfg.max_file_size_kb,
                    cfg.participant_update_limit,
                    cfg.room_management_url,
                    cfg.max_message_bytes
                ],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    async fn delete_config(&self, scope: &ConfigScope) -> StoreResult<bool> {
        let key = config_scope_key(scope);
        self.write(move |c| c.execute("DELETE FROM configs WHERE scope = ?1", [key]).map(|n| n > 0).map_err(db)).await
    }

    async fn create_category(&self, category: &CategoryRecord) -> StoreResult<()> {
        let k = category.clone();
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO categories ({CATEGORY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    k.id,
                    k.name,
                    k.description,
                    k.file_upload,
                    k.chat_history,
                    k.invitations,
                    join(&k.allowed_members),
                    join(&k.denied_members),
                    join(&k.creators),
                    k.version
                ],
            )
            .map_err(named)
            .map(drop)
        })
        .await
    }

    async fn get_category(&self, id: &str) -> StoreResult<Option<CategoryRecord>> {
        self.one(format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = ?1"), id, category_from_row).await
    }

    async fn room_with_category(
        &self,
        reference: &str,
        by_name: bool,
    ) -> StoreResult<Option<(RoomRecord, CategoryRecord)>> {
        let reference = reference.to_owned();
        let column = if by_name { "name" } else { "id" };
        let room_sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE {column} = ?1");
        self.read(move |c| {
            let room = c
                .prepare_cached(&room_sql)
                .and_then(|mut s| s.query_row([&reference], room_from_row).optional())
                .map_err(db)?;
            let Some(room) = room else { return Ok(None) };
            let category = c
                .prepare_cached(&format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = ?1"))
                .and_then(|mut s| s.query_row([&room.category_id], category_from_row).optional())
                .map_err(db)?;
            Ok(category.map(|category| (room, category)))
        })
        .await
    }

    async fn get_category_by_name(&self, name: &str) -> StoreResult<Option<CategoryRecord>> {
        self.one(format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE name = ?1"), name, category_from_row).await
    }

    async fn list_categories(&self) -> StoreResult<Vec<CategoryRecord>> {
        self.read(|c| {
            query_all(c, &format!("SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY name"), [], category_from_row)
        })
        .await
    }

    async fn update_category(&self, category: &CategoryRecord) -> StoreResult<()> {
        let k = category.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE categories SET name = ?2, description = ?3, file_upload = ?4, chat_history = ?5, invitations = ?6, \
                     allowed_members = ?7, denied_members = ?8, creators = ?9, version = version + 1 \
                     WHERE id = ?1 AND version = ?10",
                    params![
                        k.id,
                        k.name,
                        k.description,
                        k.file_upload,
                        k.chat_history,
                        k.invitations,
                        join(&k.allowed_members),
                        join(&k.denied_members),
                        join(&k.creators),
                        k.version
                    ],
                )
                .map_err(named)?;
            versioned(c, "categories", &k.id, n)
        })
        .await
    }

    async fn delete_category(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            let rooms: i64 =
                c.query_row("SELECT count(*) FROM rooms WHERE category_id = ?1", [&id], |r| r.get(0)).map_err(db)?;
            if rooms > 0 {
                // Distinguish "not empty" from "not found" only for a category that exists.
                let exists =
                    c.query_row("SELECT 1 FROM categories WHERE id = ?1", [&id], |_| Ok(())).optional().map_err(db)?;
                return Err(if exists.is_some() { StoreError::CategoryNotEmpty } else { StoreError::NotFound });
            }
            changed_one(c.execute("DELETE FROM categories WHERE id = ?1", [&id]).map_err(db)?)
        })
        .await
    }

    async fn create_addin(&self, addin: &AddinRecord) -> StoreResult<()> {
        let a = addin.clone();
        self.write(move |c| {
            c.execute("INSERT INTO addins (name, url) VALUES (?1, ?2)", [a.name, a.url]).map_err(named).map(drop)
        })
        .await
    }

    async fn get_addin(&self, name: &str) -> StoreResult<Option<AddinRecord>> {
        self.one("SELECT name, url FROM addins WHERE name = ?1".to_owned(), name, addin_from_row).await
    }

    async fn list_addins(&self) -> StoreResult<Vec<AddinRecord>> {
        self.read(|c| query_all(c, "SELECT name, url FROM addins ORDER BY name", [], addin_from_row)).await
    }

    async fn update_addin(&self, name: &str, addin: &AddinRecord) -> StoreResult<()> {
        let (name, a) = (name.to_owned(), addin.clone());
        self.write(move |c| {
            c.execute("UPDATE rooms SET version = version + 1 WHERE addin = ?1", [&name]).map_err(db)?;
            // Rooms follow the rename through the foreign key; their versions moved on above.
            let n = c
                .execute("UPDATE addins SET name = ?2, url = ?3 WHERE name = ?1", [name, a.name, a.url])
                .map_err(named)?;
            changed_one(n)
        })
        .await
    }

    async fn delete_addin(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| {
            // Rooms lose the add-in through the foreign key; their versions move on, so that an edit made on the
            // old view is re-applied.
            c.execute("UPDATE rooms SET version = version + 1 WHERE addin = ?1", [&name]).map_err(db)?;
            changed_one(c.execute("DELETE FROM addins WHERE name = ?1", [name]).map_err(db)?)
        })
        .await
    }

    async fn create_room(&self, room: &RoomRecord) -> StoreResult<()> {
        let r = room.clone();
        self.write(move |c| {
            let category = c.query_row("SELECT 1 FROM categories WHERE id = ?1", [&r.category_id], |_| Ok(())).optional().map_err(db)?;
            if category.is_none() {
                return Err(StoreError::NotFound);
            }
            c.execute(
                &format!(
                    "INSERT INTO rooms ({ROOM_COLUMNS}, num) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                     ?13, ?14, ?15, (SELECT coalesce(max(num), 0) + 1 FROM rooms))"
                ),
                params![
                    r.id,
                    r.name,
                    r.description,
                    r.category_id,
                    r.privacy.as_str(),
                    r.room_type.as_str(),
                    r.invitations.as_str(),
                    r.disabled,
                    r.addin,
                    join(&r.members),
                    join(&r.managers),
                    join(&r.presenters),
                    r.created_by,
                    r.created_at,
                    r.version
                ],
            )
            .map_err(named)?;
            directory::index_room(c, &r.id, &r.name, &r.description)
        })
        .await
    }

    async fn get_room(&self, id: &str) -> StoreResult<Option<RoomRecord>> {
        self.one(format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?1"), id, room_from_row).await
    }

    async fn get_room_by_name(&self, name: &str) -> StoreResult<Option<RoomRecord>> {
        self.one(format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = ?1"), name, room_from_row).await
    }

    async fn list_rooms(&self, query: &RoomQuery) -> StoreResult<Vec<RoomRecord>> {
        let q = query.clone();
        // Two statements, so that each walks its own index (names; a category's names).
        let sql = match q.category_id {
            None => format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE ?1 IS NULL AND name > ?2 ORDER BY name LIMIT ?3"),
            Some(_) => format!(
                "SELECT {ROOM_COLUMNS} FROM rooms WHERE category_id = ?1 AND name > ?2 ORDER BY category_id, name LIMIT ?3"
            ),
        };
        self.read(move |c| {
            query_all(c, &sql, params![q.category_id, q.after_name.unwrap_or_default(), q.limit], room_from_row)
        })
        .await
    }

    async fn rooms_of(&self, principals: &[String], ids: &[String]) -> StoreResult<Vec<RoomRecord>> {
        let (principals, ids) = (json_strings(principals), json_strings(ids));
        self.read(move |c| {
            query_all(
                c,
                &format!(
                    "SELECT {ROOM_COLUMNS} FROM rooms WHERE id IN (SELECT room_id FROM room_principals WHERE principal IN \
                     (SELECT value FROM json_each(?1))) OR id IN (SELECT value FROM json_each(?2)) ORDER BY name"
                ),
                params![principals, ids],
                room_from_row,
            )
        })
        .await
    }

    async fn update_room(&self, room: &RoomRecord) -> StoreResult<()> {
        let r = room.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE rooms SET name = ?2, description = ?3, category_id = ?4, privacy = ?5, room_type = ?6, \
                     invitations = ?7, disabled = ?8, addin = ?9, members = ?10, managers = ?11, presenters = ?12, \
                     version = version + 1 WHERE id = ?1 AND version = ?13",
                    params![
                        r.id,
                        r.name,
                        r.description,
                        r.category_id,
                        r.privacy.as_str(),
                        r.room_type.as_str(),
                        r.invitations.as_str(),
                        r.disabled,
                        r.addin,
                        join(&r.members),
                        join(&r.managers),
                        join(&r.presenters),
                        r.version
                    ],
                )
                .map_err(named)?;
            versioned(c, "rooms", &r.id, n)?;
            directory::index_room(c, &r.id, &r.name, &r.description)
        })
        .await
    }

    async fn delete_room(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write_indexed(move |c| {
            c.execute("DELETE FROM presence WHERE room_id = ?1", [&id]).map_err(db)?;
            unindex_room(c, &id, None)?;
            directory::unindex(c, &id)?;
            changed_one(c.execute("DELETE FROM rooms WHERE id = ?1", [&id]).map_err(db)?)
        })
        .await
    }

    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended> {
        // Tokenized here, off the writer thread.
        let terms = if message.keep {
            pchat_core::text::index_terms(&message.text, message.story_title.as_deref())
        } else {
            vec![]
        };
        self.writer
            .append(move |c, events| {
                if let Some(client_id) = &message.client_id
                    && let Some(original) = get_message_by_client_id(c, &message.room_id, client_id)?
                {
                    return Ok(Appended { message: original, created: false });
                }
                let room = c
                    .prepare_cached("SELECT r.disabled, c.last_seq, c.last_ts, r.num FROM rooms r JOIN room_counters c ON c.room_id = r.id \
                         WHERE r.id = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([&message.room_id], |r| {
                            Ok((r.get::<_, bool>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
                        })
                        .optional()
                    })
                    .map_err(db)?;
                let Some((disabled, last_seq, last_ts, num)) = room else { return Err(StoreError::NotFound) };
                if disabled {
                    return Err(StoreError::RoomDisabled);
                }
                let (seq, ts) = (last_seq + 1, now_micros().max(last_ts));
                c.prepare_cached("UPDATE room_counters SET last_seq = ?2, last_ts = ?3 WHERE room_id = ?1")
                    .and_then(|mut s| s.execute(params![message.room_id, seq, ts]))
                    .map_err(db)?;
                let record = MessageRecord {
                    id: message.id,
                    room_id: message.room_id,
                    seq,
                    author: message.author,
                    ts,
                    text: message.text,
                    story_title: message.story_title,
                    alert: message.alert,
                    client_id: message.client_id,
                    replaced: false,
                    file: message.file.as_ref().map(|f| f.meta.clone()),
                };
                if let Some(f) = &message.file {
                    let ready = c
                        .prepare_cached(
                            "UPDATE files SET ready = 1, message_id = ?3, size = ?4, sha256 = ?5 \
                             WHERE id = ?1 AND room_id = ?2 AND ready = 0",
                        )
                        .and_then(|mut s| {
                            s.execute(params![f.meta.id, record.room_id, record.id, f.meta.size, f.sha256])
                        })
                        .map_err(db)?;
                    changed_one(ready)?;
                }
                if message.keep {
                    c.prepare_cached(&format!(
                        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)"
                    ))
                    .and_then(|mut s| {
                        s.execute(params![
                            record.id,
                            record.room_id,
                            record.seq,
                            record.author,
                            record.ts,
                            record.text,
                            record.story_title,
                            record.alert,
                            record.client_id,
                            record.file.as_ref().map(FileMeta::encode)
                        ])
                    })
                    .map_err(db)?;
                    crate::backlog::defer(c, num, record.ts, record.seq, terms).map_err(db)?;
                }
                if message.capture {
                    insert_events(c, &[compliance::posted_event(&record, message.file.as_ref(), message.keep)])?;
                }
                events.push(StoreEvent::MessagePosted(record.clone()));
                Ok(Appended { message: record, created: true })
            })
            .await
    }

    async fn messages(&self, room_id: &str, range: MessageRange) -> StoreResult<Vec<MessageRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let base = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1");
            match range {
                MessageRange::After { after, limit } => query_all(
                    c,
                    &format!("{base} AND seq > ?2 ORDER BY seq LIMIT ?3"),
                    params![room_id, after, limit],
                    message_from_row,
                ),
                MessageRange::Latest { limit } => {
                    let mut rows = query_all(
                        c,
                        &format!("{base} ORDER BY seq DESC LIMIT ?2"),
                        params![room_id, limit],
                        message_from_row,
                    )?;
                    rows.reverse();
                    Ok(rows)
                }
                MessageRange::Before { before, limit } => {
                    let mut rows = query_all(
                        c,
                        &format!("{base} AND seq < ?2 ORDER BY seq DESC LIMIT ?3"),
                        params![room_id, before, limit],
                        message_from_row,
                    )?;
                    rows.reverse();
                    Ok(rows)
                }
            }
        })
        .await
    }

    async fn import_messages(&self, room_id: &str, messages: &[MessageRecord], last_seq: i64) -> StoreResult<()> {
        let (room_id, messages) = (room_id.to_owned(), messages.to_vec());
        // Tokenized here, off the writer thread. The postings go through the backlog as appends' do (merged into
        // the index in term order, many messages per index page): inserted message by message, a history of
        // 1,000,000 messages imported at 2,100 messages/s, the writer rewriting index pages into the WAL.
        let terms: Vec<Vec<String>> =
            messages.iter().map(|m| pchat_core::text::index_terms(&m.text, m.story_title.as_deref())).collect();
        self.writer
            .append(move |c, _| {
                let mut insert = c
                    .prepare_cached(&format!(
                        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ))
                    .map_err(db)?;
                let num = room_num(c, &room_id)?.ok_or(StoreError::NotFound)?;
                let mut last_ts = 0;
                for (m, terms) in messages.iter().zip(terms) {
                    last_ts = last_ts.max(m.ts);
                    crate::backlog::defer(c, num, m.ts, m.seq, terms).map_err(db)?;
                    insert
                        .execute(params![
                            m.id,
                            room_id,
                            m.seq,
                            m.author,
                            m.ts,
                            m.text,
                            m.story_title,
                            m.alert,
                            m.client_id,
                            m.replaced,
                            m.file.as_ref().map(FileMeta::encode)
                        ])
                        .map_err(named)?;
                }
                let n = c
                    .execute(
                        "UPDATE room_counters SET last_seq = max(last_seq, ?2), last_ts = max(last_ts, ?3) WHERE room_id = ?1",
                        params![room_id, last_seq, last_ts],
                    )
                    .map_err(db)?;
                changed_one(n)
            })
            .await
    }

    async fn last_seq(&self, room_id: &str) -> StoreResult<i64> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            c.query_row("SELECT last_seq FROM room_counters WHERE room_id = ?1", [room_id], |r| r.get(0))
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn find_messages(&self, room_id: &str, filter: &MessageFilter) -> StoreResult<Vec<MessageRecord>> {
        let (room_id, f) = (room_id.to_owned(), filter.clone());
        self.read(move |c| {
            query_all(
                c,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND (?2 IS NULL OR author = ?2) \
                     AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts <= ?4) ORDER BY seq"
                ),
                params![room_id, f.author, f.start_ts, f.end_ts],
                message_from_row,
            )
        })
        .await
    }

    async fn alter_messages(&self, room_id: &str, ids: &[String], replacement: Option<&str>) -> StoreResult<u64> {
        let (room_id, ids, replacement) = (room_id.to_owned(), ids.to_vec(), replacement.map(str::to_owned));
        self.write_indexed(move |c| {
            let Some(num) = room_num(c, &room_id)? else { return Ok(0) };
            let mut changed = 0;
            for id in &ids {
                let found = c
                    .prepare_cached("SELECT seq, ts, text, story_title FROM messages WHERE room_id = ?1 AND id = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![room_id, id], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, Option<String>>(3)?,
                            ))
                        })
                        .optional()
                    })
                    .map_err(db)?;
                let Some((seq, ts, old, title)) = found else { continue };
                unindex(c, &Posting { room_num: num, ts, seq, text: &old, title: title.as_deref() })?;
                // A removed or replaced message takes the file it announced with it.
                c.execute("DELETE FROM files WHERE message_id = ?1 AND room_id = ?2", params![id, room_id])
                    .map_err(db)?;
                changed += match &replacement {
                    Some(text) => {
                        index(c, &Posting { room_num: num, ts, seq, text, title: title.as_deref() })?;
                        c.execute(
                            "UPDATE messages SET text = ?3, replaced = 1, file = NULL WHERE room_id = ?1 AND id = ?2",
                            params![room_id, id, text],
                        )
                    }
                    None => c.execute("DELETE FROM messages WHERE room_id = ?1 AND id = ?2", params![room_id, id]),
                }
                .map_err(db)? as u64;
            }
            Ok(changed)
        })
        .await
    }

    async fn clear_room(&self, room_id: &str, end_ts: i64) -> StoreResult<u64> {
        let room_id = room_id.to_owned();
        self.write_indexed(move |c| {
            unindex_room(c, &room_id, Some(end_ts))?;
            c.execute(
                "DELETE FROM files WHERE room_id = ?1 AND message_id IN \
                 (SELECT id FROM messages WHERE room_id = ?1 AND ts <= ?2)",
                params![room_id, end_ts],
            )
            .map_err(db)?;
            c.execute("DELETE FROM messages WHERE room_id = ?1 AND ts <= ?2", params![room_id, end_ts])
                .map(|n| n as u64)
                .map_err(db)
        })
        .await
    }

    async fn register_server(&self, server: &ServerRecord) -> StoreResult<bool> {
        let r = server.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO servers (name, url, started_at, heartbeat_at, active, connections, database) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, started_at = excluded.started_at, \
                 heartbeat_at = excluded.heartbeat_at, connections = excluded.connections, database = excluded.database",
                params![r.name, r.url, r.started_at, r.heartbeat_at, r.active, r.connections, r.database],
            )
            .map_err(db)?;
            c.query_row("SELECT active FROM servers WHERE name = ?1", [&r.name], |row| row.get(0)).map_err(db)
        })
        .await
    }

    async fn heartbeat(&self, name: &str, connections: i64, database: &str, at: i64) -> StoreResult<bool> {
        let (name, database) = (name.to_owned(), database.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE servers SET heartbeat_at = ?2, connections = ?3, database = ?4 WHERE name = ?1",
                    params![name, at, connections, database],
                )
                .map_err(db)?;
            changed_one(n)?;
            c.query_row("SELECT active FROM servers WHERE name = ?1", [&name], |row| row.get(0)).map_err(db)
        })
        .await
    }

    async fn set_presence(&self, changes: &[(PresenceRecord, bool)]) -> StoreResult<()> {
        let changes = changes.to_vec();
        self.write(move |c| {
            for (p, present) in &changes {
                if *present {
                    c.prepare_cached(
                        "INSERT INTO presence (server, room_id, address, display_name) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT DO UPDATE SET display_name = excluded.display_name",
                    )
                    .and_then(|mut s| s.execute(params![p.server, p.room_id, p.address, p.display_name]))
                } else {
                    c.prepare_cached("DELETE FROM presence WHERE server = ?1 AND room_id = ?2 AND address = ?3")
                        .and_then(|mut s| s.execute(params![p.server, p.room_id, p.address]))
                }
                .map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn clear_presence(&self, server: &str) -> StoreResult<u64> {
        let server = server.to_owned();
        self.write(move |c| Ok(c.execute("DELETE FROM presence WHERE server = ?1", [server]).map_err(db)? as u64)).await
    }

    async fn list_presence(&self) -> StoreResult<Vec<PresenceRecord>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT server, room_id, address, display_name FROM presence ORDER BY server, room_id, address",
                [],
                |r| {
                    Ok(PresenceRecord {
                        server: r.get(0)?,
                        room_id: r.get(1)?,
                        address: r.get(2)?,
                        display_name: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    async fn record_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        let events = events.to_vec();
        self.write(move |c| insert_events(c, &events)).await
    }

    async fn outbox(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>> {
        self.read(move |c| {
            query_all(
                c,
                &format!("SELECT id, {EVENT_COLUMNS} FROM compliance_outbox ORDER BY id LIMIT ?1"),
                [limit],
                |r| Ok(OutboxEvent { id: r.get(0)?, event: event_at(r, 1)? }),
            )
        })
        .await
    }

    async fn outbox_done(&self, ids: &[i64]) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.write(move |c| {
            let mut delete = c.prepare_cached("DELETE FROM compliance_outbox WHERE id = ?1").map_err(db)?;
            for id in &ids {
                delete.execute([id]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_compliance_config(&self, scope: &str) -> StoreResult<Option<String>> {
        self.one("SELECT json FROM compliance_config WHERE scope = ?1".into(), scope, |r| r.get(0)).await
    }

    async fn put_compliance_config(&self, scope: &str, json: &str) -> StoreResult<()> {
        let (scope, json) = (scope.to_owned(), json.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO compliance_config (scope, json) VALUES (?1, ?2) \
                 ON CONFLICT (scope) DO UPDATE SET json = excluded.json",
                params![scope, json],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    async fn list_servers(&self) -> StoreResult<Vec<ServerRecord>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT name, url, started_at, heartbeat_at, active, connections, database FROM servers ORDER BY name",
                [],
                |r| {
                    Ok(ServerRecord {
                        name: r.get(0)?,
                        url: r.get(1)?,
                        started_at: r.get(2)?,
                        heartbeat_at: r.get(3)?,
                        active: r.get(4)?,
                        connections: r.get(5)?,
                        database: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    async fn set_active(&self, changes: &[(String, bool)]) -> StoreResult<()> {
        let changes = changes.to_vec();
        self.write(move |c| {
            for (name, active) in &changes {
                changed_one(
                    c.execute("UPDATE servers SET active = ?2 WHERE name = ?1", params![name, active]).map_err(db)?,
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn set_follow(&self, address: &str, room_id: &str, follow: bool) -> StoreResult<()> {
        let (address, room_id) = (address.to_owned(), room_id.to_owned());
        self.write(move |c| {
            let sql = if follow {
                "INSERT OR IGNORE INTO follows (address, room_id) VALUES (?1, ?2)"
            } else {
                "DELETE FROM follows WHERE address = ?1 AND room_id = ?2"
            };
            c.execute(sql, [address, room_id]).map_err(db).map(drop)
        })
        .await
    }

    async fn follows(&self, address: &str) -> StoreResult<Vec<String>> {
        let address = address.to_owned();
        self.read(move |c| {
            query_all(c, "SELECT room_id FROM follows WHERE address = ?1 ORDER BY room_id", [address], |r| r.get(0))
        })
        .await
    }

    async fn mark_read(&self, address: &str, room_id: &str, seq: i64) -> StoreResult<()> {
        let (address, room_id) = (address.to_owned(), room_id.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO read_marks (address, room_id, seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (address, room_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                params![address, room_id, seq],
            )
            .map_err(db)
            .map(drop)
        })
        .await
    }

    async fn read_marks(&self, address: &str) -> StoreResult<Vec<(String, i64)>> {
        let address = address.to_owned();
        self.read(move |c| {
            query_all(c, "SELECT room_id, seq FROM read_marks WHERE address = ?1 ORDER BY room_id", [address], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .await
    }

    async fn add_invitations(
        &self,
        room_id: &str,
        addresses: &[String],
        created_at: i64,
    ) -> StoreResult<Vec<InvitationRecord>> {
        let (room_id, addresses) = (room_id.to_owned(), addresses.to_vec());
        self.write(move |c| {
            let mut created = vec![];
            for address in addresses {
                let n = c
                    .execute(
                        "INSERT OR IGNORE INTO invitations (address, room_id, created_at) VALUES (?1, ?2, ?3)",
                        params![address, room_id, created_at],
                    )
                    .map_err(db)?;
                if n > 0 {
                    created.push(InvitationRecord {
                        id: c.last_insert_rowid(),
                        address,
                        room_id: room_id.clone(),
                        created_at,
                    });
                }
            }
            Ok(created)
        })
        .await
    }

    async fn import_invitations(&self, invitations: &[InvitationRecord]) -> StoreResult<()> {
        let invitations = invitations.to_vec();
        self.write(move |c| {
            for i in &invitations {
                c.execute(
                    "INSERT INTO invitations (id, address, room_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![i.id, i.address, i.room_id, i.created_at],
                )
                .map_err(named)?;
            }
            Ok(())
        })
        .await
    }

    async fn invitations(&self, address: &str, after_id: i64, limit: u32) -> StoreResult<Vec<InvitationRecord>> {
        let address = address.to_owned();
        self.read(move |c| {
            query_all(
                c,
                "SELECT id, address, room_id, created_at FROM invitations WHERE address = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                params![address, after_id, limit],
                |r| Ok(InvitationRecord { id: r.get(0)?, address: r.get(1)?, room_id: r.get(2)?, created_at: r.get(3)? }),
            )
        })
        .await
    }

    async fn withdraw_invitations(&self, address: &str, room_ids: &[String]) -> StoreResult<Vec<InvitationRecord>> {
        let (address, room_ids) = (address.to_owned(), room_ids.to_vec());
        self.write(move |c| {
            let mut withdrawn = vec![];
            for room_id in &room_ids {
                withdrawn.extend(query_all(
                    c,
                    "DELETE FROM invitations WHERE address = ?1 AND room_id = ?2 RETURNING id, address, room_id, created_at",
                    params![address, room_id],
                    |r| Ok(InvitationRecord { id: r.get(0)?, address: r.get(1)?, room_id: r.get(2)?, created_at: r.get(3)? }),
                )?);
            }
            withdrawn.sort_by_key(|i| i.id);
            Ok(withdrawn)
        })
        .await
    }
}

#[async_trait]
impl Audit for SqliteStore {
    async fn audit_events(&self, query: &EventQuery) -> StoreResult<Vec<AuditRecord>> {
        let q = query.clone();
        self.read(move |c| {
            let sql = format!(
                "SELECT id, {EVENT_COLUMNS} FROM audit_log WHERE id > ?1 AND (?2 IS NULL OR ts >= ?2) \
                 AND (?3 IS NULL OR ts <= ?3) AND (?4 IS NULL OR room_id = ?4) AND (?5 IS NULL OR actor = ?5) \
                 AND (?6 IS NULL OR kind = ?6) ORDER BY id LIMIT ?7"
            );
            query_all(c, &sql, params![q.after_id, q.from_ts, q.to_ts, q.room_id, q.actor, q.kind, q.limit], |r| {
                Ok(AuditRecord { id: r.get(0)?, event: event_at(r, 1)? })
            })
        })
        .await
    }
}
