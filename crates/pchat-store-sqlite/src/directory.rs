//! The directory's name index (see `pchat_core::text::directory_terms`): a row per field, term and key (user
//! address or room id), written in the transaction that creates, changes or removes the user or room, and rebuilt
//! when the database opens if another version of the terms (or none) built it.

use pchat_core::text::{DIRECTORY_TERMS_VERSION, DirectoryTerm, directory_terms, user_directory_text};
use pchat_store::{DirectoryField, StoreResult};
use rusqlite::{Connection, params};
use tracing::info;

use crate::store::db;

/// Indexes `text` as the `field` of `key`, replacing what was indexed for it before.
pub(crate) fn index(c: &Connection, field: DirectoryField, key: &str, text: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM directory_terms WHERE key = ?1 AND field = ?2")
        .and_then(|mut s| s.execute(params![key, field.code()]))
        .map_err(db)?;
    let mut insert =
        c.prepare_cached("INSERT OR IGNORE INTO directory_terms (field, term, key) VALUES (?1, ?2, ?3)").map_err(db)?;
    for term in directory_terms(text) {
        insert.execute(params![field.code(), term, key]).map_err(db)?;
    }
    Ok(())
}

/// Indexes a room's name and description.
pub(crate) fn index_room(c: &Connection, id: &str, name: &str, description: &str) -> StoreResult<()> {
    index(c, DirectoryField::RoomName, id, name)?;
    index(c, DirectoryField::RoomDescription, id, description)
}

/// Forgets everything indexed for `key`.
pub(crate) fn unindex(c: &Connection, key: &str) -> StoreResult<()> {
    c.execute("DELETE FROM directory_terms WHERE key = ?1", [key]).map_err(db).map(drop)
}

/// The upper bound of the terms starting with `prefix` (no character sorts after `char::MAX`).
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

pub(crate) fn keys(
    c: &Connection,
    fields: &[DirectoryField],
    term: &DirectoryTerm,
    cap: u32,
) -> StoreResult<Option<Vec<String>>> {
    let codes: Vec<String> = fields.iter().map(|f| f.code().to_string()).collect();
    let end = if term.prefix { prefix_end(&term.text) } else { format!("{}\0", term.text) };
    let sql = format!(
        "SELECT DISTINCT key FROM directory_terms WHERE field IN ({}) AND term >= ?1 AND term < ?2 LIMIT ?3",
        codes.join(",")
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    let found: Vec<String> = stmt
        .query_map(params![term.text, end, i64::from(cap) + 1], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(db)?;
    Ok((found.len() <= cap as usize).then_some(found))
}

/// Rebuilds the index when another version of the terms (or none) built it, in one transaction.
pub(crate) fn rebuild_if_needed(conn: &Connection) -> rusqlite::Result<()> {
    let built: i64 = conn.query_row("SELECT version FROM directory_meta", [], |r| r.get(0))?;
    if built == DIRECTORY_TERMS_VERSION {
        return Ok(());
    }
    info!(from = built, to = DIRECTORY_TERMS_VERSION, "building the directory's name index");
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM directory_terms;")?;
    let built = (|| {
        let mut insert =
            conn.prepare("INSERT OR IGNORE INTO directory_terms (field, term, key) VALUES (?1, ?2, ?3)")?;
        let mut add = |field: DirectoryField, key: &str, text: &str| -> rusqlite::Result<()> {
            for term in directory_terms(text) {
                insert.execute(params![field.code(), term, key])?;
            }
            Ok(())
        };
        let mut users = conn.prepare("SELECT address, display_name FROM users")?;
        let mut rows = users.query([])?;
        while let Some(row) = rows.next()? {
            let (address, name): (String, String) = (row.get(0)?, row.get(1)?);
            add(DirectoryField::User, &address, &user_directory_text(&address, &name))?;
        }
        let mut rooms = conn.prepare("SELECT id, name, description FROM rooms")?;
        let mut rows = rooms.query([])?;
        while let Some(row) = rows.next()? {
            let (id, name, description): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            add(DirectoryField::RoomName, &id, &name)?;
            add(DirectoryField::RoomDescription, &id, &description)?;
        }
        conn.execute("UPDATE directory_meta SET version = ?1", [DIRECTORY_TERMS_VERSION])?;
        Ok(())
    })();
    match built {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }?;
    info!("directory's name index built");
    Ok(())
}
