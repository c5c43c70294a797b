//! Compliance capture: the events, the transactional outbox they are captured into, the archive they move to,
//! and the hash chain that makes the archive tamper-evident.
//!
//! Capture is transactional with the action it records. A caller that changes something runs the store call
//! inside [`capture`] with the events that describe the change; the backend takes them ([`take_pending`]) inside
//! the write's own transaction and inserts them into the outbox there, so the action and its events commit or
//! roll back together. A posted message's CHAT event is derived by the backend itself in the appending
//! transaction (`NewMessage::capture`). Reads (history, JOIN) are recorded with [`crate::Store::record_events`]
//! before their result is delivered.
//!
//! The compliance worker moves outbox events into the archive ([`Archive::append`]): under the pool's chain lock
//! it skips events already archived (by outbox id), appends the rest with their hashes, commits, and only then
//! deletes them from the outbox, so a crash anywhere neither loses nor duplicates an event.

use std::cell::RefCell;
use std::future::Future;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::StoreResult;

/// An event to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `JOIN`, `PART`, `CHAT`, `BACKCHAT`, `FILEUPLOAD`, `FILEDOWNLOAD` (Lync's six) or one of pchat's own kinds
    /// (`ROOM_CREATED`, `POLICY_CHANGED`, …; see the service's compliance module).
    pub kind: String,
    /// Server time, microseconds since the Unix epoch.
    pub ts: i64,
    pub room_id: Option<String>,
    /// Who acted: a user address, or empty for the system.
    pub actor: String,
    /// The message text for CHAT; a short description otherwise.
    pub content: String,
    /// Everything else, as a JSON object (message id and seq, before/after values, …).
    pub details: String,
}

/// A captured event waiting in the chat database's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: i64,
    pub event: NewEvent,
}

/// An event in the archive: its position, where it came from, and its place in the pool's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    /// Position in the archive (increasing in archiving order).
    pub id: i64,
    pub pool: String,
    /// Its id in the pool's outbox: archived at most once.
    pub outbox_id: i64,
    pub event: NewEvent,
    /// The hash of the pool's previous archived event (empty for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) over this event's content and `prev_hash`.
    pub hash: String,
}

/// Which archived events to read, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub pool: Option<String>,
    /// Only events with `id > after_id`.
    pub after_id: i64,
    /// Server time range, inclusive, in microseconds.
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
    pub room_id: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub limit: u32,
}

/// The compliance archive (`mgccomp`): where captured events are kept, chained, for as long as configured.
#[async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Appends the events to the pool's chain in the order given, skipping any whose outbox id is archived
    /// already, sealed with `key` when one is given; returns how many were appended. Concurrent callers for one
    /// pool are serialized.
    async fn append(&self, pool: &str, events: &[OutboxEvent], key: Option<&ChainKey>) -> StoreResult<u64>;
    /// Archived events matching the query, oldest first.
    async fn events(&self, query: &EventQuery) -> StoreResult<Vec<ArchivedEvent>>;
    /// Every pool with archived events.
    async fn pools(&self) -> StoreResult<Vec<String>>;
    /// The pool's newest archived event: its archive id and hash (`None` when the pool has none left).
    async fn chain_head(&self, pool: &str) -> StoreResult<Option<(i64, String)>>;

    /// Claims the next range of a pool's events for export. A range claimed earlier and not finished is handed
    /// out again, unchanged and with its options, to its owner or, once its lease ran out, to anyone: a crash
    /// between writing the files and [`Archive::finish_export`] makes the next run write the very same files. A
    /// new range is claimed only when `min_gap_ms` has passed since the last finished export and events are
    /// waiting; it holds at most `max_events` events.
    async fn claim_export(&self, request: &ExportRequest) -> StoreResult<Option<ExportClaim>>;
    /// Moves the pool's export cursor past a claimed range; false when the range was not (or no longer) claimed.
    async fn finish_export(&self, pool: &str, to_id: i64, now_ms: i64) -> StoreResult<bool>;
    /// Where a pool's export stands.
    async fn export_cursor(&self, pool: &str) -> StoreResult<ExportCursor>;
    /// The archive's stable numeric id of each address (created on first use), in the order given: Lync's
    /// `Sender id`.
    async fn principal_ids(&self, addresses: &[String]) -> StoreResult<Vec<i64>>;
    /// Retention: deletes the oldest events of a pool's chain, the prefix with `ts < before_ts` and
    /// `id <= max_id`, and keeps the hash of the last one deleted as the chain's anchor; returns how many.
    async fn purge(&self, pool: &str, before_ts: i64, max_id: i64) -> StoreResult<u64>;
    /// What retention purged of the pool's chain: the last purged archive id (0 when none) and its hash, which
    /// the first remaining event must link to (empty when none).
    async fn chain_anchor(&self, pool: &str) -> StoreResult<ChainAnchor>;
}

/// The start of a pool's chain after retention (see [`Archive::chain_anchor`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainAnchor {
    pub purged_to: i64,
    pub hash: String,
}

/// What an exporter asks [`Archive::claim_export`] for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportRequest {
    pub pool: String,
    /// Who claims (a server name): its own unfinished claim is handed back to it at once.
    pub owner: String,
    pub now_ms: i64,
    /// How long a claim holds against other owners.
    pub lease_ms: i64,
    pub min_gap_ms: i64,
    pub max_events: u32,
    /// The export options in force (JSON), frozen with a new claim.
    pub options: String,
}

impl ExportRequest {
    /// Whether an unfinished claim held by `owner` until `lease_until` may be handed to this request: its own
    /// claim, or one whose lease ran out.
    pub fn may_retake(&self, owner: Option<&str>, lease_until: Option<i64>) -> bool {
        owner == Some(self.owner.as_str()) || lease_until.is_none_or(|until| until <= self.now_ms)
    }
}

/// A range of a pool's archived events claimed for export: ids in `(after_id, to_id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportClaim {
    pub pool: String,
    pub after_id: i64,
    pub to_id: i64,
    /// The options frozen when the range was first claimed.
    pub options: String,
    /// Whether this range was claimed before (a redo after a crash or an expired lease).
    pub again: bool,
}

/// Where a pool's export stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCursor {
    /// Every event with an id up to this one has been exported.
    pub done_id: i64,
    /// When the last export finished (ms since the epoch; 0 never).
    pub last_run_ms: i64,
    /// The end of a claimed, unfinished range.
    pub pending_to: Option<i64>,
}

/// A secret that seals the archive's chain (`compliance.chain_key_file`): with it, event hashes are HMAC-SHA256
/// tags that nobody without the key can recompute, so rebuilding the chain after editing it is detected.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey(Vec<u8>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(…)")
    }
}

impl ChainKey {
    /// At least 32 bytes of secret (a key file's contents, trailing whitespace removed).
    pub fn new(secret: &[u8]) -> Option<Self> {
        let trimmed = secret.trim_ascii_end();
        (trimmed.len() >= 32).then(|| Self(trimmed.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        }
    }

    /// A tag over a witness of the chain's head (pool, archive id, hash), so that a forged witness is told apart.
    pub fn witness_tag(&self, pool: &str, id: i64, hash: &str) -> String {
        let mut mac = self.mac();
        for field in [pool.as_bytes(), &id.to_le_bytes(), hash.as_bytes()] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The prefix of keyed hashes; plain SHA-256 hashes are bare hex.
pub const KEYED: &str = "k1:";

/// Whether a stored hash is a keyed (HMAC) one.
pub fn is_keyed(hash: &str) -> bool {
    hash.starts_with(KEYED)
}

/// The hash of an archived event over its fields, each length-prefixed, and the previous hash: SHA-256 without a
/// key, HMAC-SHA256 (prefixed [`KEYED`]) with one.
pub fn event_hash(pool: &str, outbox_id: i64, event: &NewEvent, prev_hash: &str, key: Option<&ChainKey>) -> String {
    let fields: [&[u8]; 9] = [
        pool.as_bytes(),
        &outbox_id.to_le_bytes(),
        event.kind.as_bytes(),
        &event.ts.to_le_bytes(),
        event.room_id.as_deref().unwrap_or("\u{0}").as_bytes(),
        event.actor.as_bytes(),
        event.content.as_bytes(),
        event.details.as_bytes(),
        prev_hash.as_bytes(),
    ];
    match key {
        None => {
            let mut h = Sha256::new();
            for field in fields {
                Digest::update(&mut h, (field.len() as u64).to_le_bytes());
                Digest::update(&mut h, field);
            }
            hex::encode(h.finalize())
        }
        Some(key) => {
            let mut mac = key.mac();
            for field in fields {
                mac.update(&(field.len() as u64).to_le_bytes());
                mac.update(field);
            }
            format!("{KEYED}{}", hex::encode(mac.finalize().into_bytes()))
        }
    }
}

/// Walks a pool's chain: feed events in archive order; the first that does not chain is reported. Keyed events
/// are checked with the key; once the chain is keyed, a plain event after it is a break (someone without the key
/// wrote it), and so is a keyed event when no key is at hand to check it.
#[derive(Debug, Default)]
pub struct ChainCheck {
    last_hash: Option<String>,
    key: Option<ChainKey>,
    pub checked: u64,
    pub first_broken: Option<i64>,
    /// Why the chain broke there.
    pub problem: Option<String>,
}

impl ChainCheck {
    /// A check of a chain whose first events were purged (their last hash is `anchor`; empty when none were),
    /// with the chain key if one is configured.
    pub fn new(anchor: String, key: Option<ChainKey>) -> Self {
        Self { last_hash: (!anchor.is_empty()).then_some(anchor), key, ..Self::default() }
    }

    /// The hash of the last event checked (or the anchor).
    pub fn head(&self) -> Option<&str> {
        self.last_hash.as_deref()
    }

    /// Checks the next event; returns false once the chain is broken (later events are not checked).
    pub fn feed(&mut self, e: &ArchivedEvent) -> bool {
        if self.first_broken.is_some() {
            return false;
        }
        self.checked += 1;
        let expected_prev = self.last_hash.clone().unwrap_or_default();
        let problem = if e.prev_hash != expected_prev {
            Some("it does not link to the event before it (an event was removed, inserted or reordered)")
        } else if is_keyed(&e.hash) {
            match &self.key {
                None => Some("it is sealed with a chain key, and none is configured here to check it"),
                Some(key) if e.hash != event_hash(&e.pool, e.outbox_id, &e.event, &e.prev_hash, Some(key)) => {
                    Some("its seal does not match its content (edited, or sealed with another key)")
                }
                Some(_) => None,
            }
        } else if is_keyed(&expected_prev) {
            Some("it is not sealed although the chain before it is (written without the key)")
        } else if e.hash != event_hash(&e.pool, e.outbox_id, &e.event, &e.prev_hash, None) {
            Some("its hash does not match its content (edited)")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.first_broken = Some(e.id);
            self.problem = Some(problem.to_owned());
            return false;
        }
        self.last_hash = Some(e.hash.clone());
        true
    }
}

/// What a write carries into its own transaction: compliance events (captured while compliance is on) and audit
/// records of administrative actions (always). The backend takes both with [`take_pending`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub compliance: Vec<NewEvent>,
    pub audit: Vec<NewEvent>,
}

impl Captured {
    /// Compliance events alone.
    pub fn compliance(events: Vec<NewEvent>) -> Self {
        Self { compliance: events, audit: vec![] }
    }

    pub fn is_empty(&self) -> bool {
        self.compliance.is_empty() && self.audit.is_empty()
    }
}

tokio::task_local! {
    static PENDING: RefCell<Captured>;
}

/// Runs `write` with `captured` pending: the backend inserts it in the write's own transaction. Returns the
/// write's result and whatever it did not take (always empty when the backend captured it; the write failed or
/// was not a write otherwise).
pub async fn capture<F: Future>(captured: Captured, write: F) -> (F::Output, Captured) {
    PENDING
        .scope(RefCell::new(captured), async move {
            let output = write.await;
            (output, take_pending())
        })
        .await
}

/// What is pending for the current write (see [`capture`]); empty outside a capture.
pub fn take_pending() -> Captured {
    PENDING.try_with(|p| std::mem::take(&mut *p.borrow_mut())).unwrap_or_default()
}

/// The CHAT event of a newly appended message (`kept`: whether the room keeps history).
/// The event a posted message is captured as: CHAT, or FILEUPLOAD for a message announcing an upload.
pub fn posted_event(m: &crate::MessageRecord, file: Option<&crate::AttachedFile>, kept: bool) -> NewEvent {
    match file {
        Some(f) => file_event("FILEUPLOAD", &m.room_id, &m.author, m.ts, &f.meta, Some(&f.sha256), Some(&m.id)),
        None => chat_event(m, kept),
    }
}

pub fn chat_event(m: &crate::MessageRecord, kept: bool) -> NewEvent {
    let title = m.story_title.as_deref().map(json_string).unwrap_or_else(|| "null".into());
    NewEvent {
        kind: "CHAT".into(),
        ts: m.ts,
        room_id: Some(m.room_id.clone()),
        actor: m.author.clone(),
        content: m.text.clone(),
        details: format!(
            "{{\"message_id\":{},\"seq\":{},\"story_title\":{title},\"alert\":{},\"kept\":{kept}}}",
            json_string(&m.id),
            m.seq,
            m.alert
        ),
    }
}

/// A FILEUPLOAD or FILEDOWNLOAD event: the content is the stored file name (the file's id with the extension of
/// its name), as Lync's compliance output names files; the details carry what the `.ATTACH` manifest lists.
pub fn file_event(
    kind: &str,
    room_id: &str,
    actor: &str,
    ts: i64,
    file: &crate::FileMeta,
    sha256: Option<&str>,
    message_id: Option<&str>,
) -> NewEvent {
    let extension = std::path::Path::new(&file.name).extension().and_then(|e| e.to_str()).unwrap_or("");
    let stored = if extension.is_empty() { file.id.clone() } else { format!("{}.{extension}", file.id) };
    let opt = |v: Option<&str>| v.map(json_string).unwrap_or_else(|| "null".into());
    NewEvent {
        kind: kind.to_owned(),
        ts,
        room_id: Some(room_id.to_owned()),
        actor: actor.to_owned(),
        content: stored,
        details: format!(
            "{{\"file_id\":{},\"name\":{},\"size\":{},\"content_type\":{},\"sha256\":{},\"message_id\":{}}}",
            json_string(&file.id),
            json_string(&file.name),
            file.size,
            json_string(&file.content_type),
            opt(sha256),
            opt(message_id)
        ),
    }
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archived(id: i64, prev: &str, content: &str) -> ArchivedEvent {
        let event = NewEvent {
            kind: "CHAT".into(),
            ts: id,
            room_id: Some("r".into()),
            actor: "a@example.com".into(),
            content: content.into(),
            details: "{}".into(),
        };
        let hash = event_hash("p", id, &event, prev, None);
        ArchivedEvent { id, pool: "p".into(), outbox_id: id, event, prev_hash: prev.into(), hash }
    }

    #[test]
    fn a_chain_verifies_and_an_edit_breaks_it_at_that_event() {
        let a = archived(1, "", "one");
        let b = archived(2, &a.hash, "two");
        let c = archived(3, &b.hash, "three");
        let mut check = ChainCheck::default();
        assert!([&a, &b, &c].iter().all(|e| check.feed(e)));
        assert_eq!((check.checked, check.first_broken), (3, None));

        let mut edited = b.clone();
        edited.event.content = "2".into();
        let mut check = ChainCheck::default();
        for e in [&a, &edited, &c] {
            check.feed(e);
        }
        assert_eq!(check.first_broken, Some(2));
        // Recomputing the edited event's hash does not help: the next one no longer chains.
        edited.hash = event_hash("p", 2, &edited.event, &edited.prev_hash, None);
        let mut check = ChainCheck::default();
        for e in [&a, &edited, &c] {
            check.feed(e);
        }
        assert_eq!(check.first_broken, Some(3));
    }

    #[test]
    fn keys_are_long_secrets_and_seal_differently() {
        assert!(ChainKey::new(b"short").is_none());
        assert!(ChainKey::new(&[b'x'; 31]).is_none());
        let key = ChainKey::new(format!("{}\n", "k".repeat(32)).as_bytes()).unwrap();
        assert_eq!(key, ChainKey::new("k".repeat(32).as_bytes()).unwrap(), "a trailing newline is not part of it");
        assert_eq!(format!("{key:?}"), "ChainKey(…)", "the secret is never printed");
        let e = archived(1, "", "one").event;
        let sealed = event_hash("p", 1, &e, "", Some(&key));
        assert!(is_keyed(&sealed) && sealed.len() == KEYED.len() + 64);
        assert_ne!(sealed, event_hash("p", 1, &e, "", Some(&ChainKey::new(&[1u8; 32]).unwrap())));
        assert_ne!(key.witness_tag("p", 1, &sealed), key.witness_tag("p", 2, &sealed));
    }

    #[test]
    fn json_strings_escape() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[tokio::test]
    async fn pending_events_are_taken_once_inside_a_capture() {
        let event = archived(1, "", "x").event;
        let both = Captured { compliance: vec![event.clone()], audit: vec![event.clone()] };
        let ((), left) = capture(both.clone(), async {
            assert_eq!(take_pending(), both);
            assert!(take_pending().is_empty());
        })
        .await;
        assert!(left.is_empty());
        let ((), left) = capture(Captured::compliance(vec![event.clone()]), async {}).await;
        assert_eq!(left.compliance, [event]);
        assert!(take_pending().is_empty(), "nothing pending outside a capture");
    }
}
