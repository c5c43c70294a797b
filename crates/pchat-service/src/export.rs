//! Compliance export adapters: archived events rendered into files. `xml` writes Lync's XmlAdapter format
//! (schemas/lync-compliance-xmladapter.xsd) with Lync's six event types, and the other types into a companion file
//! in pchat's namespace (schemas/pchat-compliance-events.xsd); `csv` and `jsonl` write one event per row or line
//! with every field. Rendering is a pure function of the events, the rooms and users they mention and the options,
//! so the same range always gives byte-identical files under the same names; files are written atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::witness::Witness;
use pchat_store::ArchivedEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::time::format_micros;

/// Lync's six event types: the only ones its XmlAdapter format has room for.
pub const LYNC_TYPES: [&str; 6] = ["JOIN", "PART", "CHAT", "BACKCHAT", "FILEUPLOAD", "FILEDOWNLOAD"];
/// The namespace of pchat's companion file.
pub const PCHAT_NAMESPACE: &str = "urn:pchat:compliance:1";

/// How an export renders (frozen with an export claim, so that a redo writes the same files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportOptions {
    /// `xml`, `csv` or `jsonl`.
    pub adapter: String,
    pub one_chat_room_per_output_file: bool,
    pub add_user_details: bool,
    pub add_chat_room_details: bool,
    pub create_file_attachments_manifest: bool,
}

impl ExportOptions {
    pub fn of(c: &pchat_api_types::ComplianceConfiguration) -> Self {
        Self {
            adapter: c.adapter.clone(),
            one_chat_room_per_output_file: c.one_chat_room_per_output_file,
            add_user_details: c.add_user_details,
            add_chat_room_details: c.add_chat_room_details,
            create_file_attachments_manifest: c.create_file_attachments_manifest,
        }
    }

    /// Plain export of every event into one file of the format (`pchat compliance export`).
    pub fn plain(adapter: &str) -> Self {
        Self {
            adapter: adapter.to_owned(),
            one_chat_room_per_output_file: false,
            add_user_details: false,
            add_chat_room_details: false,
            create_file_attachments_manifest: false,
        }
    }
}

/// A room as the export describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub id: String,
    pub uri: String,
    /// Its current settings; `None` once the room is deleted.
    pub details: Option<RoomDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDetails {
    pub name: String,
    pub description: String,
    pub category: String,
    pub privacy: String,
    pub room_type: String,
    pub disabled: bool,
}

/// A user as the export describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The archive's stable numeric id (Lync's `Sender id`).
    pub id: i64,
    /// `None` once the user is deleted.
    pub display_name: Option<String>,
}

/// The events of one export with what they mention.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub pool: String,
    /// Archive order.
    pub events: Vec<ArchivedEvent>,
    pub rooms: BTreeMap<String, RoomInfo>,
    /// By address; every actor of `events` is here.
    pub users: BTreeMap<String, UserInfo>,
}

/// A rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Renders a batch into its files (none for an empty batch).
pub fn render(batch: &Batch, options: &ExportOptions) -> Vec<OutFile> {
    let (Some(first), Some(last)) = (batch.events.first(), batch.events.last()) else { return vec![] };
    let (start, end) =
        batch.events.iter().fold((i64::MAX, i64::MIN), |(lo, hi), e| (lo.min(e.event.ts), hi.max(e.event.ts)));
    let base = format!("{}_{}_{}_{:012}-{:012}", safe(&batch.pool), stamp(start), stamp(end), first.id, last.id);
    // The events of each output file: all together, or one group per room (room-less events on their own).
    let mut groups: BTreeMap<Option<&str>, Vec<&ArchivedEvent>> = BTreeMap::new();
    for e in &batch.events {
        let key = if options.one_chat_room_per_output_file { e.event.room_id.as_deref() } else { None };
        groups.entry(key).or_default().push(e);
    }
    let mut files = vec![];
    let mut extra: Vec<&ArchivedEvent> = vec![];
    for (room, events) in &groups {
        let stem = match room {
            Some(room) => format!("{base}_room-{}", safe(room)),
            None => base.clone(),
        };
        let file = match options.adapter.as_str() {
            "csv" => Some((csv(batch, events, options), "csv")),
            "jsonl" => Some((jsonl(batch, events, options), "jsonl")),
            _ => {
                let (lync, other): (Vec<&ArchivedEvent>, Vec<&ArchivedEvent>) = events.iter().partition(|e| is_lync(e));
                extra.extend(other);
                (!lync.is_empty()).then(|| (lync_xml(batch, &lync, options), "xml"))
            }
        };
        if let Some((bytes, extension)) = file {
            files.push(OutFile { name: format!("{stem}.{extension}"), bytes });
        }
        if options.create_file_attachments_manifest
            && let Some(bytes) = manifest(events)
        {
            files.push(OutFile { name: format!("{stem}.ATTACH"), bytes });
        }
    }
    if !extra.is_empty() {
        extra.sort_by_key(|e| e.id);
        files.push(OutFile { name: format!("{base}_pchat.xml"), bytes: companion_xml(batch, &extra, options) });
    }
    files
}

fn is_lync(e: &ArchivedEvent) -> bool {
    e.event.room_id.is_some() && LYNC_TYPES.contains(&e.event.kind.as_str())
}

/// A name part safe in any file system.
fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// `20261121T100000Z`.
fn stamp(micros: i64) -> String {
    let dt = datetime(micros);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

fn datetime(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// .NET ticks (100 ns since 0001-01-01) of the Unix epoch.
const EPOCH_TICKS: i64 = 621_355_968_000_000_000;

/// Lync's time stamp attributes: milliseconds since 1970, ISO 8601 with seven fractional digits, .NET ticks.
fn time_attributes(micros: i64) -> String {
    let dt = datetime(micros);
    let string = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.nanosecond() / 100
    );
    format!("since1970=\"{}\" string=\"{string}\" long=\"{}\"", micros.div_euclid(1000), EPOCH_TICKS + micros * 10)
}

/// Text for an XML attribute or element: escaped, line breaks kept as character references, and characters XML
/// 1.0 cannot carry replaced by U+FFFD (the csv and jsonl adapters keep them).
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn lync_xml(batch: &Batch, events: &[&ArchivedEvent], options: &ExportOptions) -> Vec<u8> {
    let mut by_room: BTreeMap<&str, Vec<&ArchivedEvent>> = BTreeMap::new();
    for e in events {
        by_room.entry(e.event.room_id.as_deref().unwrap_or_default()).or_default().push(e);
    }
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str(
        "<Conversations xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n",
    );
    for (room, mut events) in by_room {
        events.sort_by_key(|e| (e.event.ts, e.id));
        let info = batch.rooms.get(room);
        let uri = info.map_or_else(|| room.to_owned(), |r| r.uri.clone());
        // Lync names the channel by its URI; with room details, by the room's name.
        let name = match info.and_then(|r| r.details.as_ref()) {
            Some(d) if options.add_chat_room_details => d.name.clone(),
            _ => uri.clone(),
        };
        let _ =
            writeln!(x, "  <Conversation>\n    <Channel uri=\"{}\" name=\"{}\" />", xml_text(&uri), xml_text(&name));
        lync_message(&mut x, "FirstMessage", events[0], batch, options, "    ");
        x.push_str("    <Messages>\n");
        for e in &events {
            lync_message(&mut x, "Message", e, batch, options, "      ");
        }
        x.push_str("    </Messages>\n");
        let (start, end) = (events[0].event.ts, events[events.len() - 1].event.ts);
        let _ = writeln!(x, "    <StartTimeUTC {} />", time_attributes(start));
        let _ = writeln!(x, "    <EndTimeUTC {} />", time_attributes(end));
        x.push_str("  </Conversation>\n");
    }
    x.push_str("</Conversations>\n");
    x.into_bytes()
}

fn lync_message(x: &mut String, element: &str, e: &ArchivedEvent, batch: &Batch, o: &ExportOptions, indent: &str) {
    let ev = &e.event;
    // Lync: content is empty for JOIN and PART; id is the content id of a CHAT (here its archive id), 0 otherwise.
    let content = if matches!(ev.kind.as_str(), "JOIN" | "PART") { "" } else { ev.content.as_str() };
    let id = if ev.kind == "CHAT" { e.id } else { 0 };
    let _ = writeln!(x, "{indent}<{element} type=\"{}\" content=\"{}\" id=\"{id}\">", ev.kind, xml_text(content));
    let user = batch.users.get(&ev.actor);
    let mut sender = String::new();
    if o.add_user_details {
        if let Some(name) = user.and_then(|u| u.display_name.as_deref()) {
            let _ = write!(sender, "UserName=\"{}\" ", xml_text(name));
        }
        let _ = write!(sender, "id=\"{}\" email=\"{}\" ", user.map_or(0, |u| u.id), xml_text(&ev.actor));
    } else {
        let _ = write!(sender, "id=\"{}\" ", user.map_or(0, |u| u.id));
    }
    let _ = writeln!(x, "{indent}  <Sender {sender}internal=\"true\" uri=\"{}\" />", xml_text(&ev.actor));
    let _ = writeln!(x, "{indent}  <DateTimeUTC {} />", time_attributes(ev.ts));
    let _ = writeln!(x, "{indent}</{element}>");
}

/// The rooms and users a set of events mentions, in a stable order.
fn mentioned<'a>(batch: &'a Batch, events: &[&ArchivedEvent]) -> (Vec<&'a RoomInfo>, Vec<(&'a String, &'a UserInfo)>) {
    let mut rooms = BTreeMap::new();
    let mut users = BTreeMap::new();
    for e in events {
        if let Some(room) = e.event.room_id.as_deref().and_then(|r| batch.rooms.get_key_value(r)) {
            rooms.insert(room.0, room.1);
        }
        if let Some(user) = batch.users.get_key_value(&e.event.actor) {
            users.insert(user.0, user.1);
        }
    }
    (rooms.into_values().collect(), users.into_iter().collect())
}

fn companion_xml(batch: &Batch, events: &[&ArchivedEvent], options: &ExportOptions) -> Vec<u8> {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    let (first, last) = (events.first().map_or(0, |e| e.id), events.last().map_or(0, |e| e.id));
    let _ = writeln!(
        x,
        "<Events xmlns=\"{PCHAT_NAMESPACE}\" pool=\"{}\" firstId=\"{first}\" lastId=\"{last}\">",
        xml_text(&batch.pool)
    );
    // Details cover every event of the run, the Lync-format file's included.
    let all: Vec<&ArchivedEvent> = batch.events.iter().collect();
    let (rooms, users) = mentioned(batch, &all);
    if options.add_chat_room_details {
        for r in rooms {
            let _ = write!(x, "  <Room id=\"{}\" uri=\"{}\"", xml_text(&r.id), xml_text(&r.uri));
            if let Some(d) = &r.details {
                let _ = write!(
                    x,
                    " name=\"{}\" description=\"{}\" category=\"{}\" privacy=\"{}\" type=\"{}\" disabled=\"{}\"",
                    xml_text(&d.name),
                    xml_text(&d.description),
                    xml_text(&d.category),
                    xml_text(&d.privacy),
                    xml_text(&d.room_type),
                    d.disabled
                );
            }
            x.push_str(" />\n");
        }
    }
    if options.add_user_details {
        for (address, u) in users {
            let _ = write!(x, "  <User address=\"{}\" id=\"{}\"", xml_text(address), u.id);
            if let Some(name) = &u.display_name {
                let _ = write!(x, " displayName=\"{}\"", xml_text(name));
            }
            x.push_str(" />\n");
        }
    }
    for e in events {
        let ev = &e.event;
        let _ = write!(x, "  <Event id=\"{}\" outboxId=\"{}\" type=\"{}\"", e.id, e.outbox_id, xml_text(&ev.kind));
        if let Some(room) = &ev.room_id {
            let _ = write!(x, " room=\"{}\"", xml_text(room));
        }
        let _ = writeln!(
            x,
            " user=\"{}\" prevHash=\"{}\" hash=\"{}\">",
            xml_text(&ev.actor),
            xml_text(&e.prev_hash),
            xml_text(&e.hash)
        );
        let _ = writeln!(x, "    <DateTimeUTC {} />", time_attributes(ev.ts));
        let _ = writeln!(x, "    <Content>{}</Content>", xml_text(&ev.content));
        let _ = writeln!(x, "    <Details>{}</Details>", xml_text(&ev.details));
        x.push_str("  </Event>\n");
    }
    x.push_str("</Events>\n");
    x.into_bytes()
}

/// One event as a JSON object with every field (and the details asked for): the jsonl line and the API's shape.
pub fn event_json(batch: &Batch, e: &ArchivedEvent, options: &ExportOptions) -> Value {
    let ev = &e.event;
    let mut v = json!({
        "id": e.id, "pool": e.pool, "outbox_id": e.outbox_id, "type": ev.kind, "ts": format_micros(ev.ts),
        "room": ev.room_id, "user": ev.actor, "content": ev.content,
        "details": serde_json::from_str::<Value>(&ev.details).unwrap_or_else(|_| Value::from(ev.details.clone())),
        "prev_hash": e.prev_hash, "hash": e.hash,
    });
    if options.add_chat_room_details {
        let room = ev.room_id.as_deref().and_then(|r| batch.rooms.get(r));
        v["room_details"] = room.map_or(Value::Null, |r| {
            let mut d = json!({ "uri": r.uri });
            if let Some(s) = &r.details {
                d["name"] = s.name.clone().into();
                d["description"] = s.description.clone().into();
                d["category"] = s.category.clone().into();
                d["privacy"] = s.privacy.clone().into();
                d["type"] = s.room_type.clone().into();
                d["disabled"] = s.disabled.into();
            }
            d
        });
    }
    if options.add_user_details {
        v["user_details"] =
            batch.users.get(&ev.actor).map_or(Value::Null, |u| json!({ "id": u.id, "display_name": u.display_name }));
    }
    v
}

fn jsonl(batch: &Batch, events: &[&ArchivedEvent], options: &ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let _ = serde_json::to_writer(&mut out, &event_json(batch, e, options));
        out.push(b'\n');
    }
    out
}

const CSV_COLUMNS: [&str; 11] =
    ["id", "pool", "outbox_id", "type", "ts", "room", "user", "content", "details", "prev_hash", "hash"];

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

fn csv(batch: &Batch, events: &[&ArchivedEvent], options: &ExportOptions) -> Vec<u8> {
    let mut header: Vec<&str> = CSV_COLUMNS.to_vec();
    if options.add_chat_room_details {
        header.extend(["room_uri", "room_name", "room_category"]);
    }
    if options.add_user_details {
        header.extend(["user_id", "user_display_name"]);
    }
    let mut out = header.join(",") + "\r\n";
    for e in events {
        let ev = &e.event;
        let mut row: Vec<String> = vec![
            e.id.to_string(),
            e.pool.clone(),
            e.outbox_id.to_string(),
            ev.kind.clone(),
            format_micros(ev.ts),
            ev.room_id.clone().unwrap_or_default(),
            ev.actor.clone(),
            ev.content.clone(),
            ev.details.clone(),
            e.prev_hash.clone(),
            e.hash.clone(),
        ];
        if options.add_chat_room_details {
            let room = ev.room_id.as_deref().and_then(|r| batch.rooms.get(r));
            let details = room.and_then(|r| r.details.as_ref());
            row.push(room.map(|r| r.uri.clone()).unwrap_or_default());
            row.push(details.map(|d| d.name.clone()).unwrap_or_default());
            row.push(details.map(|d| d.category.clone()).unwrap_or_default());
        }
        if options.add_user_details {
            let user = batch.users.get(&ev.actor);
            row.push(user.map(|u| u.id.to_string()).unwrap_or_default());
            row.push(user.and_then(|u| u.display_name.clone()).unwrap_or_default());
        }
        out.push_str(&row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The `.ATTACH` manifest of a file's file transfers (none without any): CSV, one row per FILEUPLOAD or
/// FILEDOWNLOAD with the file's id, name, size and SHA-256 from the event's details.
fn manifest(events: &[&ArchivedEvent]) -> Option<Vec<u8>> {
    let transfers: Vec<&&ArchivedEvent> =
        events.iter().filter(|e| matches!(e.event.kind.as_str(), "FILEUPLOAD" | "FILEDOWNLOAD")).collect();
    if transfers.is_empty() {
        return None;
    }
    let mut out = String::from("event_id,type,ts,room,user,file_id,file_name,size,sha256\r\n");
    for e in transfers {
        let d: Value = serde_json::from_str(&e.event.details).unwrap_or(Value::Null);
        let text = |key: &str| match &d[key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let row = [
            e.id.to_string(),
            e.event.kind.clone(),
            format_micros(e.event.ts),
            e.event.room_id.clone().unwrap_or_default(),
            e.event.actor.clone(),
            text("file_id"),
            text("name"),
            text("size"),
            text("sha256"),
        ];
        out.push_str(&row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    Some(out.into_bytes())
}

/// Writes a file atomically and durably: a temporary name in the same directory, fsync, rename, fsync of the
/// directory. A reader never sees a partial file; writing the same name again replaces it whole.
pub fn write_atomically(dir: &Path, file: &OutFile) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{}.{}.tmp", file.name, uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&file.bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(&file.name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

// ---- Running exports -------------------------------------------------------------------------------------

/// How long an export claim holds against other servers of the pool (a server that dies mid-export is relieved
/// after this).
pub const EXPORT_LEASE_MS: i64 = 120_000;
/// Most events in one run's set of files; a longer backlog is exported in several sets at once.
pub const EXPORT_BATCH: u32 = 10_000;
/// Set to this, `PCHAT_FAILPOINT` makes the process abort after an export's files are written and before its
/// cursor moves: the crash the tests inflict to prove that the redo writes the same files.
pub const FAILPOINT_BEFORE_CURSOR: &str = "compliance-export-before-cursor";

/// What a periodic export run froze with its claim: where it writes and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Frozen {
    output_dir: String,
    #[serde(flatten)]
    options: ExportOptions,
}

impl crate::Service {
    /// Who claims exports: this server's name in its pool, or this process.
    fn export_owner(&self) -> String {
        self.server_name.get().cloned().unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }

    /// Every archived event a query matches, up to `to_id`, oldest first.
    async fn archived_events(
        &self,
        archive: &dyn pchat_store::Archive,
        mut query: pchat_store::EventQuery,
        to_id: i64,
    ) -> crate::ServiceResult<Vec<ArchivedEvent>> {
        let mut out = Vec::new();
        query.limit = crate::compliance::MAX_EVENTS_PAGE;
        loop {
            let page = archive.events(&query).await?;
            let full = page.len() as u32 == query.limit;
            for e in page {
                if e.id > to_id {
                    return Ok(out);
                }
                query.after_id = e.id;
                out.push(e);
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// The events with the rooms and users they mention (rooms as they are now, users with their archive ids).
    async fn batch(
        &self,
        archive: &dyn pchat_store::Archive,
        pool: &str,
        events: Vec<ArchivedEvent>,
    ) -> crate::ServiceResult<Batch> {
        let mut batch = Batch { pool: pool.to_owned(), ..Batch::default() };
        let categories: BTreeMap<String, String> =
            self.store.list_categories().await?.into_iter().map(|c| (c.id, c.name)).collect();
        let mut addresses: Vec<String> = Vec::new();
        for e in &events {
            if let Some(room) = &e.event.room_id
                && !batch.rooms.contains_key(room)
            {
                let details = self.store.get_room(room).await?.map(|r| RoomDetails {
                    category: categories.get(&r.category_id).cloned().unwrap_or(r.category_id),
                    name: r.name,
                    description: r.description,
                    privacy: r.privacy.as_str().to_owned(),
                    room_type: r.room_type.as_str().to_owned(),
                    disabled: r.disabled,
                });
                batch.rooms.insert(room.clone(), RoomInfo { id: room.clone(), uri: self.room_uri(room), details });
            }
            if !e.event.actor.is_empty() && !addresses.contains(&e.event.actor) {
                addresses.push(e.event.actor.clone());
            }
        }
        let ids = archive.principal_ids(&addresses).await?;
        for (address, id) in addresses.into_iter().zip(ids) {
            let display_name = self.store.get_user(&address).await?.map(|u| u.display_name);
            batch.users.insert(address, UserInfo { id, display_name });
        }
        batch.events = events;
        Ok(batch)
    }

    /// Renders events into a directory; returns the names written.
    async fn write_export(
        &self,
        archive: &dyn pchat_store::Archive,
        pool: &str,
        events: Vec<ArchivedEvent>,
        dir: &Path,
        options: &ExportOptions,
    ) -> crate::ServiceResult<Vec<String>> {
        // A witness of the range's last event travels with the files (see `crate::witness`).
        let witness = match (events.first(), events.last()) {
            (Some(first), Some(last)) => {
                Some(Witness::new(pool, last.id, &last.hash, self.chain_key_for_export()).export_file(first.id))
            }
            _ => None,
        };
        let batch = self.batch(archive, pool, events).await?;
        let mut files = render(&batch, options);
        files.extend(witness);
        let dir = dir.to_owned();
        let names = files.iter().map(|f| f.name.clone()).collect();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            files.iter().try_for_each(|f| write_atomically(&dir, f))
        })
        .await
        .map_err(|e| crate::ServiceError::Unavailable(e.to_string()))?
        .map_err(|e| crate::ServiceError::Unavailable(format!("cannot write the compliance export: {e}")))?;
        Ok(names)
    }

    /// The periodic export (Lync's adapter run every RunInterval): when the pool's last export finished at least
    /// `run_interval` ago (or `force`) and events are waiting, claims the next range, writes its files into
    /// `output_dir` and moves the pool's cursor. A range left unfinished by a crash is written again, identically
    /// (same names, same content, same options and directory), before anything new. Nothing happens without an
    /// output directory.
    pub async fn run_export(&self, force: bool) -> crate::ServiceResult<pchat_api_types::ExportReport> {
        let config = self.compliance_in_force().await?;
        let mut report = pchat_api_types::ExportReport::default();
        if config.output_dir.is_empty() {
            return Ok(report);
        }
        let archive = self.archive()?;
        let pool = self.settings.pool.as_str().to_owned();
        let _one_at_a_time = self.export_lock.lock().await;
        let frozen = Frozen { output_dir: config.output_dir.clone(), options: ExportOptions::of(&config) };
        let mut min_gap_ms = if force { 0 } else { config.run_interval_secs as i64 * 1000 };
        // A read first: the worker asks every second, and a claim is a write transaction.
        let cursor = archive.export_cursor(&pool).await?;
        let now_ms = crate::time::now_micros() / 1000;
        if cursor.pending_to.is_none() && now_ms < cursor.last_run_ms + min_gap_ms {
            return Ok(report);
        }
        loop {
            let request = pchat_store::ExportRequest {
                pool: pool.clone(),
                owner: self.export_owner(),
                now_ms: crate::time::now_micros() / 1000,
                lease_ms: EXPORT_LEASE_MS,
                min_gap_ms,
                max_events: EXPORT_BATCH,
                options: serde_json::to_string(&frozen).map_err(|e| crate::ServiceError::Unavailable(e.to_string()))?,
            };
            let Some(claim) = archive.claim_export(&request).await? else { return Ok(report) };
            let claimed: Frozen = serde_json::from_str(&claim.options)
                .map_err(|e| crate::ServiceError::Unavailable(format!("unreadable export claim: {e}")))?;
            let query =
                pchat_store::EventQuery { pool: Some(pool.clone()), after_id: claim.after_id, ..Default::default() };
            let events = self.archived_events(archive.as_ref(), query, claim.to_id).await?;
            let count = events.len() as u64;
            let dir = Path::new(&claimed.output_dir);
            let files = self.write_export(archive.as_ref(), &pool, events, dir, &claimed.options).await?;
            if std::env::var("PCHAT_FAILPOINT").is_ok_and(|f| f == FAILPOINT_BEFORE_CURSOR) {
                tracing::error!(files = ?files, "failpoint {FAILPOINT_BEFORE_CURSOR}: aborting");
                std::process::abort();
            }
            if archive.finish_export(&pool, claim.to_id, crate::time::now_micros() / 1000).await? {
                self.metrics.compliance_exported.inc_by(count);
                tracing::info!(events = count, files = files.len(), again = claim.again, "compliance export written");
            }
            report.events += count;
            report.files.extend(files);
            // A full range means a backlog: carry on at once.
            if count < u64::from(EXPORT_BATCH) && !claim.again {
                return Ok(report);
            }
            min_gap_ms = 0;
        }
    }

    /// Runs the periodic export now (administrators), whatever the interval.
    pub async fn export_now(&self, caller: &crate::Caller) -> crate::ServiceResult<pchat_api_types::ExportReport> {
        crate::directory::require_admin(caller)?;
        if self.compliance_in_force().await?.output_dir.is_empty() {
            return Err(crate::ServiceError::validation("output_dir", "no compliance output directory is configured"));
        }
        let result = self.run_export(true).await;
        self.export_outcome(&result);
        result
    }

    /// An export on demand (`pchat compliance export`): the archived events a query matches, rendered into
    /// `dir`; the periodic export's cursor is not touched.
    pub async fn export_to(
        &self,
        dir: &Path,
        options: &ExportOptions,
        query: pchat_store::EventQuery,
    ) -> crate::ServiceResult<pchat_api_types::ExportReport> {
        let archive = self.archive()?;
        let pool = query.pool.clone().unwrap_or_else(|| self.settings.pool.as_str().to_owned());
        let query = pchat_store::EventQuery { pool: Some(pool.clone()), ..query };
        let events = self.archived_events(archive.as_ref(), query, i64::MAX).await?;
        let count = events.len() as u64;
        let files = self.write_export(archive.as_ref(), &pool, events, dir, options).await?;
        Ok(pchat_api_types::ExportReport { events: count, files })
    }

    /// Records how an export went: a failure is kept for /readyz and counted until an export succeeds.
    pub(crate) fn export_outcome<T>(&self, result: &crate::ServiceResult<T>) {
        let problem = result.as_ref().err().map(ToString::to_string);
        if problem.is_some() {
            self.metrics.compliance_export_failures.inc();
        }
        self.metrics.compliance_export_failing.set(i64::from(problem.is_some()));
        if let Ok(mut slot) = self.export_problem.write() {
            *slot = problem;
        }
    }

    /// What is wrong but does not stop this server from serving (shown by /readyz).
    pub fn warnings(&self) -> Vec<String> {
        let problem = self.export_problem.read().ok().and_then(|p| p.clone());
        let witness = self.witness_problem.read().ok().and_then(|p| p.clone());
        problem
            .map(|p| format!("compliance export failing, retrying: {p}"))
            .into_iter()
            .chain(witness.map(|p| format!("compliance witness file not written: {p}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pchat_store::NewEvent;

    fn event(id: i64, kind: &str, room: Option<&str>, actor: &str, ts: i64, content: &str) -> ArchivedEvent {
        ArchivedEvent {
            id,
            pool: "emea".into(),
            outbox_id: id + 100,
            event: NewEvent {
                kind: kind.into(),
                ts,
                room_id: room.map(Into::into),
                actor: actor.into(),
                content: content.into(),
                details: "{\"k\":\"v\"}".into(),
            },
            prev_hash: String::new(),
            hash: "ab".repeat(32),
        }
    }

    fn batch() -> Batch {
        let ts = 1_212_610_540_953_548; // 2008-06-04T20:15:40.953548Z, Microsoft's sample instant.
        let mut b = Batch { pool: "emea".into(), ..Batch::default() };
        b.events = vec![
            event(7, "JOIN", Some("r1"), "kazuto@litwareinc.com", ts, "ignored"),
            event(8, "CHAT", Some("r1"), "kazuto@litwareinc.com", ts + 1_000_000, "a <b> & \"c\"\nd"),
            event(9, "ROOM_CHANGED", Some("r1"), "admin@litwareinc.com", ts + 2_000_000, "changed"),
            event(10, "SIGN_IN", None, "kazuto@litwareinc.com", ts + 3_000_000, ""),
            event(11, "FILEUPLOAD", Some("r2"), "kazuto@litwareinc.com", ts + 4_000_000, "f.txt"),
        ];
        b.rooms.insert(
            "r1".into(),
            RoomInfo {
                id: "r1".into(),
                uri: "ma-chan://litwareinc.com/r1".into(),
                details: Some(RoomDetails {
                    name: "Rates".into(),
                    description: "".into(),
                    category: "Desk".into(),
                    privacy: "open".into(),
                    room_type: "normal".into(),
                    disabled: false,
                }),
            },
        );
        b.rooms.insert(
            "r2".into(),
            RoomInfo { id: "r2".into(), uri: "ma-chan://litwareinc.com/r2".into(), details: None },
        );
        b.users
            .insert("kazuto@litwareinc.com".into(), UserInfo { id: 10, display_name: Some("TestUser kazuto".into()) });
        b.users.insert("admin@litwareinc.com".into(), UserInfo { id: 11, display_name: None });
        b
    }

    #[test]
    fn time_stamps_match_microsofts_sample() {
        // The sample: since1970="1212610540953" string="2008-06-04T20:15:40.9535482Z" long="633482073409535482";
        // pchat keeps microseconds, so the seventh digit is 0.
        assert_eq!(
            time_attributes(1_212_610_540_953_548),
            "since1970=\"1212610540953\" string=\"2008-06-04T20:15:40.9535480Z\" long=\"633482073409535480\""
        );
    }

    #[test]
    fn xml_splits_lync_types_from_the_rest() {
        let files = render(&batch(), &ExportOptions::plain("xml"));
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "emea_20080604T201540Z_20080604T201544Z_000000000007-000000000011.xml",
                "emea_20080604T201540Z_20080604T201544Z_000000000007-000000000011_pchat.xml"
            ]
        );
        let lync = String::from_utf8(files[0].bytes.clone()).unwrap();
        assert_eq!(lync.matches("<Conversation>").count(), 2, "one conversation per room");
        assert!(lync.contains("<Channel uri=\"ma-chan://litwareinc.com/r1\" name=\"ma-chan://litwareinc.com/r1\" />"));
        assert!(lync.contains("<FirstMessage type=\"JOIN\" content=\"\" id=\"0\">"));
        assert!(lync.contains("<Message type=\"CHAT\" content=\"a &lt;b&gt; &amp; &quot;c&quot;&#10;d\" id=\"8\">"));
        assert!(lync.contains("<Sender id=\"10\" internal=\"true\" uri=\"kazuto@litwareinc.com\" />"));
        assert!(!lync.contains("ROOM_CHANGED") && !lync.contains("SIGN_IN"));
        let pchat = String::from_utf8(files[1].bytes.clone()).unwrap();
        assert!(pchat.contains("<Events xmlns=\"urn:pchat:compliance:1\" pool=\"emea\" firstId=\"9\" lastId=\"10\">"));
        assert_eq!(pchat.matches("<Event ").count(), 2);
        assert!(!pchat.contains("<Room ") && !pchat.contains("<User "));
    }

    #[test]
    fn details_and_one_room_per_file() {
        let options = ExportOptions {
            adapter: "xml".into(),
            one_chat_room_per_output_file: true,
            add_user_details: true,
            add_chat_room_details: true,
            create_file_attachments_manifest: true,
        };
        let files = render(&batch(), &options);
        let names: Vec<&str> = files.iter().map(|f| f.name.rsplit('_').next().unwrap()).collect();
        assert_eq!(names, ["room-r1.xml", "room-r2.xml", "room-r2.ATTACH", "pchat.xml"]);
        let r1 = String::from_utf8(files[0].bytes.clone()).unwrap();
        assert!(r1.contains("name=\"Rates\""));
        assert!(r1.contains(
            "<Sender UserName=\"TestUser kazuto\" id=\"10\" email=\"kazuto@litwareinc.com\" internal=\"true\""
        ));
        let manifest = String::from_utf8(files[2].bytes.clone()).unwrap();
        assert_eq!(manifest.lines().count(), 2);
        assert!(manifest.lines().nth(1).unwrap().starts_with("11,FILEUPLOAD,"));
        let pchat = String::from_utf8(files[3].bytes.clone()).unwrap();
        assert!(pchat.contains("<Room id=\"r1\" uri=\"ma-chan://litwareinc.com/r1\" name=\"Rates\""));
        assert!(pchat.contains("<Room id=\"r2\" uri=\"ma-chan://litwareinc.com/r2\" />"), "a deleted room");
        assert!(pchat.contains("<User address=\"admin@litwareinc.com\" id=\"11\" />"));
    }

    #[test]
    fn csv_and_jsonl_hold_every_event_and_field() {
        let b = batch();
        let csv = String::from_utf8(render(&b, &ExportOptions::plain("csv"))[0].bytes.clone()).unwrap();
        assert!(csv.starts_with("id,pool,outbox_id,type,ts,room,user,content,details,prev_hash,hash\r\n"));
        assert!(csv.contains("8,emea,108,CHAT,2008-06-04T20:15:41.953548Z,r1,kazuto@litwareinc.com,\"a <b> & \"\"c\"\"\nd\",\"{\"\"k\"\":\"\"v\"\"}\""));
        assert!(csv.contains("10,emea,110,SIGN_IN,"));
        let jsonl = String::from_utf8(render(&b, &ExportOptions::plain("jsonl"))[0].bytes.clone()).unwrap();
        let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1]["content"], "a <b> & \"c\"\nd");
        assert_eq!(lines[1]["details"]["k"], "v");
        assert_eq!(lines[3]["room"], Value::Null);
        assert_eq!(lines[1]["outbox_id"], 108);
    }

    /// Every file of every option combination validates against its schema in schemas/ (xmllint, installed by
    /// scripts/test).
    #[test]
    fn xml_files_validate_against_the_schemas() {
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let dir = tempfile::tempdir().unwrap();
        let mut checked = 0;
        for bits in 0..16u8 {
            let options = ExportOptions {
                adapter: "xml".into(),
                one_chat_room_per_output_file: bits & 1 != 0,
                add_user_details: bits & 2 != 0,
                add_chat_room_details: bits & 4 != 0,
                create_file_attachments_manifest: bits & 8 != 0,
            };
            for file in render(&batch(), &options).iter().filter(|f| f.name.ends_with(".xml")) {
                write_atomically(dir.path(), file).unwrap();
                let schema = if file.name.ends_with("_pchat.xml") {
                    "pchat-compliance-events.xsd"
                } else {
                    "lync-compliance-xmladapter.xsd"
                };
                let out = std::process::Command::new("xmllint")
                    .arg("--noout")
                    .arg("--schema")
                    .arg(schemas.join(schema))
                    .arg(dir.path().join(&file.name))
                    .output()
                    .expect("xmllint (libxml2-utils) is installed");
                assert!(out.status.success(), "{} ({options:?}): {}", file.name, String::from_utf8_lossy(&out.stderr));
                checked += 1;
            }
        }
        assert_eq!(checked, 16 * 2 + 8);
    }

    #[test]
    fn rendering_is_deterministic() {
        let options = ExportOptions { add_user_details: true, ..ExportOptions::plain("xml") };
        assert_eq!(render(&batch(), &options), render(&batch(), &options));
        assert!(render(&Batch::default(), &options).is_empty());
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = OutFile { name: "a.xml".into(), bytes: b"one".to_vec() };
        write_atomically(dir.path(), &file).unwrap();
        write_atomically(dir.path(), &OutFile { bytes: b"two".to_vec(), ..file }).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.xml")).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
