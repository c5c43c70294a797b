//! Schema migrations, applied in order at start; `PRAGMA user_version` records how many have run.

use rusqlite::Connection;

/// Each entry is one migration; never edit one that has shipped, append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    address TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
CREATE INDEX tokens_address ON tokens(address);
CREATE TABLE roles (
    address TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (address, role)
);
CREATE TABLE groups (name TEXT PRIMARY KEY);
CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    member TEXT NOT NULL,
    PRIMARY KEY (group_name, member)
);
CREATE INDEX group_members_member ON group_members(member);
CREATE TABLE policies (scope TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
CREATE TABLE configs (
    scope TEXT PRIMARY KEY,
    default_chat_history INTEGER NOT NULL,
    max_file_size_kb INTEGER NOT NULL,
    participant_update_limit INTEGER NOT NULL,
    room_management_url TEXT NOT NULL,
    max_message_bytes INTEGER NOT NULL
);
CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    file_upload INTEGER NOT NULL,
    chat_history INTEGER NOT NULL,
    invitations INTEGER NOT NULL,
    allowed_members TEXT NOT NULL,
    denied_members TEXT NOT NULL,
    creators TEXT NOT NULL
);
CREATE TABLE addins (name TEXT PRIMARY KEY, url TEXT NOT NULL);
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    category_id TEXT NOT NULL REFERENCES categories(id),
    privacy TEXT NOT NULL,
    room_type TEXT NOT NULL,
    invitations TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    addin TEXT REFERENCES addins(name) ON UPDATE CASCADE ON DELETE SET NULL,
    members TEXT NOT NULL,
    managers TEXT NOT NULL,
    presenters TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_ts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rooms_category ON rooms(category_id, name);
CREATE TABLE messages (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    author TEXT NOT NULL,
    ts INTEGER NOT NULL,
    text TEXT NOT NULL,
    story_title TEXT,
    alert INTEGER NOT NULL,
    client_id TEXT,
    replaced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_client_id ON messages(room_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX messages_ts ON messages(room_id, ts);
CREATE INDEX messages_author ON messages(room_id, author);
CREATE TABLE follows (
    address TEXT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    PRIMARY KEY (address, room_id)
);
CREATE TABLE read_marks (
    address TEXT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    PRIMARY KEY (address, room_id)
);
CREATE TABLE invitations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    UNIQUE (address, room_id)
);
"#,
    r#"
CREATE TABLE servers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    active INTEGER NOT NULL,
    connections INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE servers ADD COLUMN database TEXT NOT NULL DEFAULT '';
CREATE TABLE presence (
    server TEXT NOT NULL,
    room_id TEXT NOT NULL,
    address TEXT NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (server, room_id, address)
);
CREATE INDEX presence_room ON presence(room_id);
"#,
    r#"
CREATE TABLE compliance_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    room_id TEXT,
    actor TEXT NOT NULL,
    content TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE TABLE compliance_config (scope TEXT PRIMARY KEY, json TEXT NOT NULL);
"#,
    // Sessions replace bare tokens. Tokens issued before had no expiry: their holders sign in again.
    r#"
DROP TABLE tokens;
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX sessions_address ON sessions(address, created_at);
"#,
    // Versions for compare-and-set edits: concurrent changes re-apply on the current row instead of undoing it.
    r#"
ALTER TABLE rooms ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE categories ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
"#,
    // The audit trail of administrative actions, kept whether or not compliance capture is on.
    r#"
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    room_id TEXT,
    actor TEXT NOT NULL,
    content TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log(ts);
"#,
    // History search: rooms get a small stable number, and the inverted index lists (term, ts, room, seq) per
    // distinct term of each kept message. `search_meta` names the tokenizer that built it; 0 means not yet built
    // (the store builds it when it opens).
    r#"
ALTER TABLE rooms ADD COLUMN num INTEGER;
UPDATE rooms SET num = rowid;
CREATE UNIQUE INDEX rooms_num ON rooms(num);
CREATE TABLE search_postings (
    term TEXT NOT NULL,
    ts INTEGER NOT NULL,
    room_num INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (term, ts, room_num, seq)
) WITHOUT ROWID;
CREATE TABLE search_meta (tokenizer INTEGER NOT NULL);
INSERT INTO search_meta (tokenizer) VALUES (0);
"#,
    // Topic feeds: saved searches, at most 100 per user (enforced by the store), gone with their user.
    r#"
CREATE TABLE feeds (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    name TEXT NOT NULL,
    keywords TEXT NOT NULL,
    match_mode TEXT NOT NULL,
    case_sensitive INTEGER NOT NULL,
    authors TEXT NOT NULL,
    rooms TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner, name)
);
"#,
    // Files in rooms: a record per stored object (pending until the message announcing it is posted), and the
    // announcing message's copy of what it announces.
    r#"
ALTER TABLE messages ADD COLUMN file TEXT;
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    message_id TEXT,
    ready INTEGER NOT NULL
);
CREATE INDEX files_room ON files(room_id, created_at);
CREATE INDEX files_message ON files(message_id);
CREATE INDEX files_pending ON files(ready, created_at);
"#,
    // The search index's backlog: messages appended whose postings are still held in memory by the writer, to be
    // merged into `search_postings` in term order (see `backlog.rs`); indexed again when the database opens
    // after a crash. Ids never go back (AUTOINCREMENT), so a merge deleting the rows up to its last id cannot
    // take rows of later appends even after the table was emptied.
    // And the index in parts by time (`search_parts`: part N holds the postings of times from its `from_ts` to the
    // next part's), so that new postings go into a small newest part rather than all over the history's index.
    // The index is rebuilt in its new layout when the database opens (tokenizer 0).
    r#"
CREATE TABLE search_pending (id INTEGER PRIMARY KEY AUTOINCREMENT, room_num INTEGER NOT NULL, seq INTEGER NOT NULL);
DROP TABLE search_postings;
CREATE TABLE search_parts (
    part INTEGER PRIMARY KEY,
    from_ts INTEGER NOT NULL UNIQUE,
    postings INTEGER NOT NULL DEFAULT 0,
    max_ts INTEGER
);
INSERT INTO search_parts (part, from_ts) VALUES (1, -9223372036854775807 - 1);
CREATE TABLE search_postings (
    part INTEGER NOT NULL,
    term TEXT NOT NULL,
    ts INTEGER NOT NULL,
    room_num INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (part, term, ts, room_num, seq)
) WITHOUT ROWID;
UPDATE search_meta SET tokenizer = 0;
"#,
    // Who stands on which room's role lists (members, managers, presenters), kept by triggers from the rooms'
    // newline-joined lists: "the rooms of user X" is an index lookup instead of a scan of every room.
    r#"
CREATE TABLE room_principals (
    principal TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (principal, room_id)
) WITHOUT ROWID;
CREATE INDEX room_principals_room ON room_principals(room_id);
CREATE TRIGGER rooms_principals_insert AFTER INSERT ON rooms BEGIN
    INSERT OR IGNORE INTO room_principals (principal, room_id)
    SELECT value, NEW.id FROM json_each('["' || replace(replace(replace(
        NEW.members || char(10) || NEW.managers || char(10) || NEW.presenters,
        '\', '\\'), '"', '\"'), char(10), '","') || '"]')
    WHERE value <> '';
END;
CREATE TRIGGER rooms_principals_update AFTER UPDATE OF members, managers, presenters ON rooms BEGIN
    DELETE FROM room_principals WHERE room_id = NEW.id;
    INSERT OR IGNORE INTO room_principals (principal, room_id)
    SELECT value, NEW.id FROM json_each('["' || replace(replace(replace(
        NEW.members || char(10) || NEW.managers || char(10) || NEW.presenters,
        '\', '\\'), '"', '\"'), char(10), '","') || '"]')
    WHERE value <> '';
END;
CREATE TRIGGER rooms_principals_delete AFTER DELETE ON rooms BEGIN
    DELETE FROM room_principals WHERE room_id = OLD.id;
END;
INSERT OR IGNORE INTO room_principals (principal, room_id)
SELECT j.value, r.id FROM rooms r, json_each('["' || replace(replace(replace(
    r.members || char(10) || r.managers || char(10) || r.presenters,
    '\', '\\'), '"', '\"'), char(10), '","') || '"]') j
WHERE j.value <> '';
"#,
    // The directory's name index: people and rooms are found by the words of their names through an index range,
    // not a scan of every row (see `directory.rs`). Version 0: built when the database opens.
    r#"
CREATE TABLE directory_terms (
    field INTEGER NOT NULL,
    term TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (field, term, key)
) WITHOUT ROWID;
CREATE INDEX directory_terms_key ON directory_terms(key, field);
CREATE TABLE directory_meta (version INTEGER NOT NULL);
INSERT INTO directory_meta (version) VALUES (0);
"#,
    // Two indexes every durable post paid a page for (a post in one of many rooms dirties a page of each, written
    // to the WAL and again by the checkpoint) and no query of this store uses: messages by author and by time are
    // read through the room's primary key (`find_messages`, whose optional filters the planner cannot match to an
    // index anyway), and clearing a room up to a time already walks the room to remove its search postings.
    r#"
DROP INDEX IF EXISTS messages_ts;
DROP INDEX IF EXISTS messages_author;
"#,
    // A room's message counter leaves the room's row for a compact table of its own: every post updates it, and a
    // room's row (with its member lists) fills a good part of a page, so posts into many rooms dirtied a page each
    // in `rooms`; a hundred counters share one page of `room_counters`.
    r#"
CREATE TABLE room_counters (
    room_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_ts INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO room_counters (room_id, last_seq, last_ts) SELECT id, last_seq, last_ts FROM rooms;
CREATE TRIGGER rooms_counter_insert AFTER INSERT ON rooms BEGIN
    INSERT INTO room_counters (room_id) VALUES (NEW.id);
END;
CREATE TRIGGER rooms_counter_delete AFTER DELETE ON rooms BEGIN
    DELETE FROM room_counters WHERE room_id = OLD.id;
END;
ALTER TABLE rooms DROP COLUMN last_seq;
ALTER TABLE rooms DROP COLUMN last_ts;
"#,
];

/// The compliance archive's schema (`mgccomp.db`), migrated the same way.
pub(crate) const ARCHIVE_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE archive (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    room_id TEXT,
    actor TEXT NOT NULL,
    content TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (pool, outbox_id)
);
CREATE INDEX archive_ts ON archive(ts);
CREATE INDEX archive_room ON archive(room_id, id);
CREATE TABLE chain_head (pool TEXT PRIMARY KEY, last_hash TEXT NOT NULL);
"#,
    r#"
CREATE TABLE export_cursor (
    pool TEXT PRIMARY KEY,
    done_id INTEGER NOT NULL DEFAULT 0,
    last_run_ms INTEGER NOT NULL DEFAULT 0,
    pending_to INTEGER,
    pending_options TEXT,
    owner TEXT,
    lease_until INTEGER
);
CREATE TABLE principals (id INTEGER PRIMARY KEY AUTOINCREMENT, address TEXT NOT NULL UNIQUE);
CREATE TABLE chain_anchor (pool TEXT PRIMARY KEY, purged_to INTEGER NOT NULL, hash TEXT NOT NULL);
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database schema version {found} is newer than this pchat understands ({known}); upgrade pchat")]
    Newer { found: i64, known: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub(crate) fn apply(conn: &mut Connection) -> Result<(), MigrationError> {
    apply_list(conn, MIGRATIONS)
}

pub(crate) fn apply_list(conn: &mut Connection, migrations: &[&str]) -> Result<(), MigrationError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations.len() as i64;
    if found > known {
        return Err(MigrationError::Newer { found, known });
    }
    for (index, sql) in migrations.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
