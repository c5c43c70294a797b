//! The directory's name index (see `pchat_core::text::directory_terms`): a row per field, term and key (user
//! address or room id), written in the transaction that creates, changes or removes the user or room, and rebuilt
//! under the migration lock when a server connects if another version of the terms (or none) built it.

use pchat_core::text::{DIRECTORY_TERMS_VERSION, DirectoryTerm, directory_terms, user_directory_text};
use pchat_store::{DirectoryField, RoomRecord, StoreResult, UserRecord};
use tokio_postgres::{GenericClient, Transaction};
use tracing::info;

use crate::store::unavailable;

/// What to index: a field of a key, with its text.
pub(crate) struct Indexed {
    field: DirectoryField,
    key: String,
    text: String,
}

impl Indexed {
    pub(crate) fn user(u: &UserRecord) -> Self {
        Self {
            field: DirectoryField::User,
            key: u.address.clone(),
            text: user_directory_text(&u.address, &u.display_name),
        }
    }

    /// A room's name and description.
    pub(crate) fn room(r: &RoomRecord) -> [Self; 2] {
        [
            Self { field: DirectoryField::RoomName, key: r.id.clone(), text: r.name.clone() },
            Self { field: DirectoryField::RoomDescription, key: r.id.clone(), text: r.description.clone() },
        ]
    }
}

/// Indexes each item, replacing what was indexed for its field and key before.
pub(crate) async fn index(tx: &Transaction<'_>, items: &[Indexed]) -> StoreResult<()> {
    index_with(tx, items).await.map_err(unavailable)
}

async fn index_with(client: &impl GenericClient, items: &[Indexed]) -> Result<(), tokio_postgres::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let fields: Vec<i16> = items.iter().map(|i| i.field.code()).collect();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let sql = "DELETE FROM directory_terms WHERE (field, key) IN (SELECT * FROM unnest($1::smallint[], $2::text[]))";
    client.execute(sql, &[&fields, &keys]).await?;
    let (mut term_fields, mut terms, mut term_keys) = (vec![], vec![], vec![]);
    for item in items {
        for term in directory_terms(&item.text) {
            term_fields.push(item.field.code());
            terms.push(term);
            term_keys.push(item.key.as_str());
        }
    }
    let sql = "INSERT INTO directory_terms (field, term, key) \
               SELECT * FROM unnest($1::smallint[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING";
    client.execute(sql, &[&term_fields, &terms, &term_keys]).await.map(drop)
}

/// Up to `cap` keys with a term matching `term` under one of `fields`, `None` when there are more.
pub(crate) async fn keys(
    client: &impl GenericClient,
    fields: &[DirectoryField],
    term: &DirectoryTerm,
    cap: u32,
) -> StoreResult<Option<Vec<String>>> {
    let codes: Vec<i16> = fields.iter().map(|f| f.code()).collect();
    let end = if term.prefix { format!("{}{}", term.text, char::MAX) } else { format!("{}\u{1}", term.text) };
    let sql = "SELECT DISTINCT key FROM directory_terms WHERE field = ANY($1) AND term >= $2 AND term < $3 LIMIT $4";
    let rows = client.query(sql, &[&codes, &term.text, &end, &(i64::from(cap) + 1)]).await.map_err(unavailable)?;
    let found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok((found.len() <= cap as usize).then_some(found))
}

/// Rebuilds the index when another version of the terms (or none) built it. Runs under the migration lock.
pub(crate) async fn rebuild_if_needed(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let built: i64 = tx.query_one("SELECT version FROM directory_meta", &[]).await?.get(0);
    if built == DIRECTORY_TERMS_VERSION {
        return Ok(());
    }
    info!(from = built, to = DIRECTORY_TERMS_VERSION, "building the directory's name index");
    tx.batch_execute("DELETE FROM directory_terms").await?;
    let mut after = String::new();
    loop {
        let sql = "SELECT address, display_name FROM users WHERE address > $1 ORDER BY address LIMIT 5000";
        let rows = tx.query(sql, &[&after]).await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let items: Vec<Indexed> = rows
            .iter()
            .map(|r| {
                let (address, name): (String, String) = (r.get(0), r.get(1));
                Indexed { field: DirectoryField::User, text: user_directory_text(&address, &name), key: address }
            })
            .collect();
        index_with(tx, &items).await?;
    }
    let mut after = String::new();
    loop {
        let sql = "SELECT id, name, description FROM rooms WHERE id > $1 ORDER BY id LIMIT 5000";
        let rows = tx.query(sql, &[&after]).await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let mut items = vec![];
        for r in &rows {
            let id: String = r.get(0);
            items.push(Indexed { field: DirectoryField::RoomName, key: id.clone(), text: r.get(1) });
            items.push(Indexed { field: DirectoryField::RoomDescription, key: id, text: r.get(2) });
        }
        index_with(tx, &items).await?;
    }
    tx.execute("UPDATE directory_meta SET version = $1", &[&DIRECTORY_TERMS_VERSION]).await?;
    info!("directory's name index built");
    Ok(())
}
