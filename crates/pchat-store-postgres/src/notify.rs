//! What servers of a pool tell each other through PostgreSQL's NOTIFY, and its encoding.
//!
//! A committed message travels whole when it fits in a notification (payloads are limited to 8000 bytes); larger
//! ones travel as a reference (room and `seq`) that listeners read back from the table. Fields are separated by
//! U+001F; posting rejects control characters other than line breaks and tabs in every text field, so the
//! separator cannot occur inside one.

use pchat_store::MessageRecord;

/// Committed messages.
pub(crate) const MESSAGES: &str = "pchat_messages";
/// Users, groups, roles, policies or configuration changed.
pub(crate) const DIRECTORY: &str = "pchat_directory";

const SEP: char = '\u{1f}';
/// Stands for "none" in an optional field.
const NONE: &str = "\u{1e}";
/// Largest payload sent whole; PostgreSQL refuses more than 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Message(MessageRecord),
    /// A message too large to travel whole: read it from the table.
    Reference {
        room_id: String,
        seq: i64,
    },
}

pub(crate) fn encode(m: &MessageRecord) -> String {
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
        &m.text,
    ]
    .join(&SEP.to_string());
    if whole.len() <= MAX_PAYLOAD { whole } else { format!("r{SEP}{}{SEP}{}", m.room_id, m.seq) }
}

pub(crate) fn decode(payload: &str) -> Option<Notice> {
    let mut fields = payload.splitn(11, SEP);
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
            let text = fields.next()?.to_owned();
            Some(Notice::Message(MessageRecord {
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
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            message("hello\nworld\twith tabs", Some("c-1"), Some("Title")),
            message("", None, None),
            message("ünïcødé 中文", None, Some("t")),
        ] {
            assert_eq!(decode(&encode(&m)), Some(Notice::Message(m)));
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
