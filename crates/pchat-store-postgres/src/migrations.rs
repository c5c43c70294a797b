//! Schema migrations in PostgreSQL's dialect, applied at start under an advisory lock so that several servers
//! starting together apply each one exactly once. Name columns use the "C" collation: byte order, the same order
//! the SQLite backend and the service's cursors use.

use tokio_postgres::Client;

/// Each entry is one migration; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    address TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    address TEXT COLLATE "C" NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_address ON tokens(address);
CREATE TABLE roles (
    address TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (address, role)
);
CREATE TABLE groups (name TEXT COLLATE "C" PRIMARY KEY);
CREATE TABLE group_members (
    group_name TEXT COLLATE "C" NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    member TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_name, member)
);
CREATE INDEX group_members_member ON group_members(member);
CREATE TABLE policies (scope TEXT PRIMARY KEY, enabled BOOLEAN NOT NULL);
CREATE TABLE configs (
    scope TEXT PRIMARY KEY,
    default_chat_history BIGINT NOT NULL,
    max_file_size_kb BIGINT NOT NULL,
    participant_update_limit BIGINT NOT NULL,
    room_management_url TEXT NOT NULL,
    max_message_bytes BIGINT NOT NULL
);
CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT NOT NULL,
    file_upload BOOLEAN NOT NULL,
    chat_history BOOLEAN NOT NULL,
    invitations BOOLEAN NOT NULL,
    allowed_members TEXT NOT NULL,
    denied_members TEXT NOT NULL,
    creators TEXT NOT NULL
);
CREATE TABLE addins (name TEXT COLLATE "C" PRIMARY KEY, url TEXT NOT NULL);
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT NOT NULL,
    category_id TEXT NOT NULL REFERENCES categories(id),
    privacy TEXT NOT NULL,
    room_type TEXT NOT NULL,
    invitations TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    addin TEXT COLLATE "C" REFERENCES addins(name) ON UPDATE CASCADE ON DELETE SET NULL,
    members TEXT NOT NULL,
    managers TEXT NOT NULL,
    presenters TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_ts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX rooms_category ON rooms(category_id, name);
CREATE TABLE messages (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    author TEXT NOT NULL,
    ts BIGINT NOT NULL,
    text TEXT NOT NULL,
    story_title TEXT,
    alert BOOLEAN NOT NULL,
    client_id TEXT,
    replaced BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages(room_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX messages_ts ON messages(room_id, ts);
CREATE INDEX messages_author ON messages(room_id, author);
CREATE TABLE follows (
    address TEXT COLLATE "C" NOT NULL,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    PRIMARY KEY (address, room_id)
);
CREATE TABLE read_marks (
    address TEXT COLLATE "C" NOT NULL,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    PRIMARY KEY (address, room_id)
);
CREATE TABLE invitations (
    id BIGSERIAL PRIMARY KEY,
    address TEXT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    UNIQUE (address, room_id)
);
"#,
    r#"
CREATE TABLE servers (
    name TEXT COLLATE "C" PRIMARY KEY,
    url TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    active BOOLEAN NOT NULL,
    connections BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE servers ADD COLUMN database TEXT NOT NULL DEFAULT '';
CREATE TABLE presence (
    server TEXT COLLATE "C" NOT NULL,
    room_id TEXT COLLATE "C" NOT NULL,
    address TEXT COLLATE "C" NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (server, room_id, address)
);
CREATE INDEX presence_room ON presence(room_id);
CREATE TABLE pool_state (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE compliance_outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ts BIGINT NOT NULL,
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
    address TEXT COLLATE "C" NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX sessions_address ON sessions(address, created_at);
"#,
    // Versions for compare-and-set edits: concurrent changes re-apply on the current row instead of undoing it.
    r#"
ALTER TABLE rooms ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE categories ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
"#,
    // The audit trail of administrative actions, kept whether or not compliance capture is on.
    r#"
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ts BIGINT NOT NULL,
    room_id TEXT,
    actor TEXT NOT NULL,
    content TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log(ts);
"#,
    // History search: rooms get a small stable number, and the inverted index lists (term, ts, room, seq) per
    // distinct term of each kept message. `search_meta` names the tokenizer that built it; 0 means not yet built
    // (built under the migration lock, after the migrations).
    r#"
ALTER TABLE rooms ADD COLUMN num BIGINT GENERATED BY DEFAULT AS IDENTITY;
ALTER TABLE rooms ADD CONSTRAINT rooms_num UNIQUE (num);
CREATE TABLE search_postings (
    term TEXT COLLATE "C" NOT NULL,
    ts BIGINT NOT NULL,
    room_num BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (term, ts, room_num, seq)
);
CREATE TABLE search_meta (tokenizer BIGINT NOT NULL);
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
    case_sensitive BOOLEAN NOT NULL,
    authors TEXT NOT NULL,
    rooms TEXT NOT NULL,
    created_at BIGINT NOT NULL,
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
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    message_id TEXT,
    ready BOOLEAN NOT NULL
);
CREATE INDEX files_room ON files(room_id, created_at);
CREATE INDEX files_message ON files(message_id);
CREATE INDEX files_pending ON files(ready, created_at);
"#,
    // The search index's queue (`indexer.rs`): appended messages waiting for their postings. Rows come and go
    // all the time, so it is vacuumed after every few thousand rather than after a fifth of the table.
    r#"
CREATE TABLE search_pending (
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    room_num BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
"#,
    // Who stands on which room's role lists (members, managers, presenters), kept by a trigger from the rooms'
    // newline-joined lists: "the rooms of user X" is an index lookup instead of a scan of every room.
    r#"
CREATE TABLE room_principals (
    principal TEXT COLLATE "C" NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (principal, room_id)
);
CREATE INDEX room_principals_room ON room_principals(room_id);
CREATE FUNCTION pchat_index_room_principals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM room_principals WHERE room_id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO room_principals (principal, room_id)
        SELECT DISTINCT p, NEW.id
        FROM unnest(string_to_array(NEW.members || E'\n' || NEW.managers || E'\n' || NEW.presenters, E'\n')) AS p
        WHERE p <> '';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rooms_principals AFTER INSERT OR DELETE OR UPDATE OF members, managers, presenters ON rooms
    FOR EACH ROW EXECUTE FUNCTION pchat_index_room_principals();
INSERT INTO room_principals (principal, room_id)
SELECT DISTINCT p, id FROM rooms, unnest(string_to_array(members || E'\n' || managers || E'\n' || presenters, E'\n')) AS p
WHERE p <> '';
"#,
    // The directory's name index: people and rooms are found by the words of their names through an index range,
    // not a scan of every row (see `directory.rs`). Version 0: built under the migration lock when a server
    // connects.
    r#"
CREATE TABLE directory_terms (
    field SMALLINT NOT NULL,
    term TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (field, term, key)
);
CREATE INDEX directory_terms_key ON directory_terms(key, field);
CREATE TABLE directory_meta (version BIGINT NOT NULL);
INSERT INTO directory_meta (version) VALUES (0);
"#,
];

/// The compliance archive's schema: in the chat database or in a database of its own (`compliance.database_url`),
/// tracked separately so that either works.
const ARCHIVE_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE compliance_archive (
    id BIGSERIAL PRIMARY KEY,
    pool TEXT COLLATE "C" NOT NULL,
    outbox_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    ts BIGINT NOT NULL,
    room_id TEXT,
    actor TEXT NOT NULL,
    content TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (pool, outbox_id)
);
CREATE INDEX compliance_archive_ts ON compliance_archive(ts);
CREATE INDEX compliance_archive_room ON compliance_archive(room_id, id);
CREATE TABLE compliance_chain_head (pool TEXT COLLATE "C" PRIMARY KEY, last_hash TEXT NOT NULL);
"#,
    r#"
CREATE TABLE compliance_export_cursor (
    pool TEXT COLLATE "C" PRIMARY KEY,
    done_id BIGINT NOT NULL DEFAULT 0,
    last_run_ms BIGINT NOT NULL DEFAULT 0,
    pending_to BIGINT,
    pending_options TEXT,
    owner TEXT,
    lease_until BIGINT
);
CREATE TABLE compliance_principals (id SERIAL PRIMARY KEY, address TEXT COLLATE "C" NOT NULL UNIQUE);
CREATE TABLE compliance_chain_anchor (pool TEXT COLLATE "C" PRIMARY KEY, purged_to BIGINT NOT NULL, hash TEXT NOT NULL);
"#,
];

/// An arbitrary constant naming pchat's migration lock among advisory locks.
const MIGRATION_LOCK: i64 = 0x7063_6861_7401;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database schema version {found} is newer than this pchat understands ({known}); upgrade pchat")]
    Newer { found: i64, known: i64 },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// The chat database's migrations, and the archive's (the chat database can hold the archive).
pub(crate) async fn apply(client: &mut Client) -> Result<(), MigrationError> {
    apply_list(client, "pchat_schema", MIGRATIONS).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    crate::search::rebuild_if_needed(&tx).await?;
    crate::directory::rebuild_if_needed(&tx).await?;
    tx.commit().await?;
    apply_archive(client).await
}

/// The archive's migrations alone (a compliance database of its own).
pub(crate) async fn apply_archive(client: &mut Client) -> Result<(), MigrationError> {
    apply_list(client, "pchat_archive_schema", ARCHIVE_MIGRATIONS).await
}

async fn apply_list(client: &mut Client, table: &str, migrations: &[&str]) -> Result<(), MigrationError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table} (version BIGINT NOT NULL)")).await?;
    let found: i64 = tx.query_one(&format!("SELECT coalesce(max(version), 0) FROM {table}"), &[]).await?.get(0);
    let known = migrations.len() as i64;
    if found > known {
        return Err(MigrationError::Newer { found, known });
    }
    for (index, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(&format!("INSERT INTO {table} (version) VALUES ($1)"), &[&(index as i64 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(())
}
