//! What servers of a pool tell each other through PostgreSQL's NOTIFY, and its encoding.
//!
//! A committed message travels whole when it fits in a notification (payloads are limited to 8000 bytes); larger
//! ones travel as a reference (room and `seq`) that listeners read back from the table. Fields are separated by
//! U+001F; posting rejects control characters other than line breaks and tabs in every text field, so the
//! separator cannot occur inside one.

use pchat_store::{AccessScope, ClusterEvent, MessageRecord};

/// Committed messages.
pub(crate) const MESSAGES: &str = "pchat_messages";
/// Users, groups, roles, policies or configuration changed.
pub(crate) const DIRECTORY: &str = "pchat_directory";
/// Live consequences of changes (`ClusterEvent`).
pub(crate) const CLUSTER: &str = "pchat_cluster";

const SEP: char = '\u{1f}';
/// Stands for "none" in an optional field.
const NONE: &str = "\u{1e}";
/// Largest payload sent whole; PostgreSQL refuses more than 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Message(Box<MessageRecord>),
    /// A message too large to travel whole: read it from the table.
    Reference {
        room_id: String,
        seq: i64,
    },
}

pub(crate) fn encode(m: &MessageRecord) -> String {
    let file = m.file.as_ref().map(pchat_store::FileMeta::encode);
    let whole = [
        "m",
        &m.room_id,
        &m.seq.to_string(),
        &m.id,
        &m.author,
        &m.ts.to_string(),
        if m.alert { "1" } else { "0" },
        if m.replaced { "1" } else { "0" },
        m.client_id.as_deref().unwrap_or(NONE),
        m.story_title.as_deref().unwrap_or(NONE),
        file.as_deref().unwrap_or(NONE),
        &m.text,
    ]
    .join(&SEP.to_string());
    if whole.len() <= MAX_PAYLOAD { whole } else { format!("r{SEP}{}{SEP}{}", m.room_id, m.seq) }
}

pub(crate) fn decode(payload: &str) -> Option<Notice> {
    let mut fields = payload.splitn(12, SEP);
    match fields.next()? {
        "r" => Some(Notice::Reference { room_id: fields.next()?.to_owned(), seq: fields.next()?.parse().ok()? }),
        "m" => {
            let room_id = fields.next()?.to_owned();
            let seq = fields.next()?.parse().ok()?;
            let id = fields.next()?.to_owned();
            let author = fields.next()?.to_owned();
            let ts = fields.next()?.parse().ok()?;
            let alert = fields.next()? == "1";
            let replaced = fields.next()? == "1";
            let optional = |f: &str| (f != NONE).then(|| f.to_owned());
            let client_id = optional(fields.next()?);
            let story_title = optional(fields.next()?);
            let file = match fields.next()? {
                NONE => None,
                raw => Some(pchat_store::FileMeta::decode(raw)?),
            };
            let text = fields.next()?.to_owned();
            Some(Notice::Message(Box::new(MessageRecord {
                id,
                room_id,
                seq,
                author,
                ts,
                text,
                story_title,
                alert,
                client_id,
                replaced,
                file,
            })))
        }
        _ => None,
    }
}

/// Separates the ids of a list.
const LIST: char = '\u{1d}';

/// Encodes a cluster event as one or more payloads (long id lists are split so that each fits a notification).
pub(crate) fn encode_cluster(event: &ClusterEvent) -> Vec<String> {
    let fields = |parts: &[&str]| parts.join(&SEP.to_string());
    match event {
        ClusterEvent::AccessChanged { origin, scope } => encode_access(origin, scope),
        ClusterEvent::RoomCleared { room_id, end_ts } => vec![fields(&["cleared", room_id, &end_ts.to_string()])],
        ClusterEvent::Invitation { id, address, room_id, created_at } => {
            vec![fields(&["invitation", &id.to_string(), address, room_id, &created_at.to_string()])]
        }
        ClusterEvent::Follow { address, room_id, follow } => {
            vec![fields(&["follow", address, room_id, if *follow { "1" } else { "0" }])]
        }
        ClusterEvent::Presence { server, room_id, address, display_name, present } => {
            // The display name goes last: it is free text.
            vec![fields(&["presence", server, room_id, address, if *present { "1" } else { "0" }, display_name])]
        }
        ClusterEvent::ServerGone { server } => vec![fields(&["server_gone", server])],
        ClusterEvent::FeedsChanged { owner } => vec![fields(&["feeds", owner.as_deref().unwrap_or("")])],
        ClusterEvent::MessagesRemoved { room_id, ids } => {
            let head = fields(&["removed", room_id]);
            chunks(ids, MAX_PAYLOAD - head.len() - 1).into_iter().map(|list| format!("{head}{SEP}{list}")).collect()
        }
        ClusterEvent::MessagesReplaced { room_id, ids, text } => {
            let head = fields(&["replaced", room_id]);
            let room = MAX_PAYLOAD.saturating_sub(head.len() + text.len() + 2).max(64);
            chunks(ids, room).into_iter().map(|list| format!("{head}{SEP}{list}{SEP}{text}")).collect()
        }
    }
}

/// An access scope as one payload per part of its lists that fits: receivers take the union, so a scope may be
/// split anywhere between names.
fn encode_access(origin: &str, scope: &AccessScope) -> Vec<String> {
    let head = ["access", origin, if scope.everyone { "1" } else { "0" }].join(&SEP.to_string());
    let lists = [&scope.users, &scope.groups, &scope.rooms, &scope.categories];
    // Room for the four lists after the head and their four separators.
    let budget = MAX_PAYLOAD - head.len() - 4;
    let mut payloads = vec![];
    let mut current: [Vec<&str>; 4] = Default::default();
    let mut used = 0;
    for (which, list) in lists.iter().enumerate() {
        for name in list.iter() {
            if used > 0 && used + name.len() + 1 > budget {
                payloads.push(std::mem::take(&mut current));
                used = 0;
            }
            current[which].push(name);
            used += name.len() + 1;
        }
    }
    payloads.push(current);
    payloads
        .into_iter()
        .map(|parts| {
            let joined: Vec<String> = parts.iter().map(|p| p.join(&LIST.to_string())).collect();
            format!("{head}{SEP}{}", joined.join(&SEP.to_string()))
        })
        .collect()
}

/// Joins ids into lists of at most `limit` bytes each (at least one list, possibly empty).
fn chunks(ids: &[String], limit: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for id in ids {
        let current = out.last_mut().map_or(0, |l| l.len());
        if current > 0 && current + 1 + id.len() > limit {
            out.push(String::new());
        }
        if let Some(list) = out.last_mut() {
            if !list.is_empty() {
                list.push(LIST);
            }
            list.push_str(id);
        }
    }
    out
}

pub(crate) fn decode_cluster(payload: &str) -> Option<ClusterEvent> {
    let mut f = payload.split(SEP);
    let list = |raw: &str| raw.split(LIST).filter(|i| !i.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let event = match f.next()? {
        "access" => {
            let origin = f.next()?.to_owned();
            let everyone = f.next()? == "1";
            let scope = AccessScope {
                everyone,
                users: list(f.next()?),
                groups: list(f.next()?),
                rooms: list(f.next()?),
                categories: list(f.next()?),
            };
            ClusterEvent::AccessChanged { origin, scope }
        }
        "cleared" => ClusterEvent::RoomCleared { room_id: f.next()?.to_owned(), end_ts: f.next()?.parse().ok()? },
        "invitation" => ClusterEvent::Invitation {
            id: f.next()?.parse().ok()?,
            address: f.next()?.to_owned(),
            room_id: f.next()?.to_owned(),
            created_at: f.next()?.parse().ok()?,
        },
        "follow" => ClusterEvent::Follow {
            address: f.next()?.to_owned(),
            room_id: f.next()?.to_owned(),
            follow: f.next()? == "1",
        },
        "presence" => ClusterEvent::Presence {
            server: f.next()?.to_owned(),
            room_id: f.next()?.to_owned(),
            address: f.next()?.to_owned(),
            present: f.next()? == "1",
            display_name: f.collect::<Vec<_>>().join(&SEP.to_string()),
        },
        "server_gone" => ClusterEvent::ServerGone { server: f.next()?.to_owned() },
        "feeds" => ClusterEvent::FeedsChanged { owner: Some(f.next()?.to_owned()).filter(|o| !o.is_empty()) },
        "removed" => ClusterEvent::MessagesRemoved { room_id: f.next()?.to_owned(), ids: list(f.next()?) },
        "replaced" => {
            let room_id = f.next()?.to_owned();
            let ids = list(f.next()?);
            // The text is last and may not contain the separator, so the rest of the payload is the text.
            ClusterEvent::MessagesReplaced { room_id, ids, text: f.collect::<Vec<_>>().join(&SEP.to_string()) }
        }
        _ => return None,
    };
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_events_round_trip_and_split() {
        let events = [
            ClusterEvent::AccessChanged {
                origin: "o".into(),
                scope: AccessScope {
                    everyone: false,
                    users: vec!["a@example.com".into()],
                    groups: vec!["g one".into()],
                    rooms: vec!["r".into()],
                    categories: vec!["c".into()],
                },
            },
            ClusterEvent::AccessChanged { origin: "o".into(), scope: AccessScope::everyone() },
            ClusterEvent::RoomCleared { room_id: "r".into(), end_ts: -5 },
            ClusterEvent::Invitation { id: 3, address: "a@example.com".into(), room_id: "r".into(), created_at: 9 },
            ClusterEvent::Follow { address: "a@example.com".into(), room_id: "r".into(), follow: true },
            ClusterEvent::MessagesRemoved { room_id: "r".into(), ids: vec![] },
            ClusterEvent::MessagesReplaced { room_id: "r".into(), ids: vec!["x".into()], text: "new\ntext".into() },
        ];
        for e in events {
            let payloads = encode_cluster(&e);
            assert_eq!(payloads.len(), 1);
            assert_eq!(decode_cluster(&payloads[0]), Some(e));
        }
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:036}")).collect();
        let payloads = encode_cluster(&ClusterEvent::MessagesRemoved { room_id: "r".into(), ids: ids.clone() });
        assert!(payloads.len() > 1 && payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let mut back = vec![];
        for p in payloads {
            let Some(ClusterEvent::MessagesRemoved { ids, .. }) = decode_cluster(&p) else { panic!("{p}") };
            back.extend(ids);
        }
        assert_eq!(back, ids);
    }

    fn message(text: &str, client_id: Option<&str>, title: Option<&str>) -> MessageRecord {
        MessageRecord {
            id: "m1".into(),
            room_id: "r1".into(),
            seq: 42,
            author: "a@example.com".into(),
            ts: 1_700_000_000_000_000,
            text: text.into(),
            story_title: title.map(str::to_owned),
            alert: true,
            client_id: client_id.map(str::to_owned),
            replaced: false,
            file: None,
        }
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            message("hello\nworld\twith tabs", Some("c-1"), Some("Title")),
            message("", None, None),
            message("ünïcødé 中文", None, Some("t")),
            MessageRecord {
                file: Some(pchat_store::FileMeta {
                    id: "f1".into(),
                    name: "report 2026.pdf".into(),
                    size: 12_345,
                    content_type: "application/pdf".into(),
                }),
                ..message("report 2026.pdf", None, None)
            },
        ] {
            assert_eq!(decode(&encode(&m)), Some(Notice::Message(Box::new(m))));
        }
    }

    #[test]
    fn large_messages_travel_as_references() {
        let m = message(&"x".repeat(10_000), None, None);
        let encoded = encode(&m);
        assert!(encoded.len() < 100);
        assert_eq!(decode(&encoded), Some(Notice::Reference { room_id: "r1".into(), seq: 42 }));
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode("m\u{1f}r1\u{1f}notanumber"), None);
    }
}
