//! Conversions from service records to wire shapes, and the encoding of live events into stream frames.

use bytes::Bytes;
use pchat_api_types as api;
use pchat_service::LiveEvent;
use pchat_service::records::{CategoryRecord, MessageRecord, RoomRecord, UserRecord};
pub use pchat_service::time::format_micros;

fn strings<T: ToString>(list: &[T]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

pub fn user(u: &UserRecord) -> api::User {
    api::User { address: u.address.clone(), display_name: u.display_name.clone() }
}

pub fn category(c: &CategoryRecord) -> api::Category {
    api::Category {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        file_upload: c.file_upload,
        chat_history: c.chat_history,
        invitations: c.invitations,
        allowed_members: strings(&c.allowed_members),
        denied_members: strings(&c.denied_members),
        creators: strings(&c.creators),
        version: c.version,
    }
}

pub fn room(domain: &str, r: &RoomRecord) -> api::Room {
    api::Room {
        id: r.id.clone(),
        uri: format!("ma-chan://{domain}/{}", r.id),
        name: r.name.clone(),
        description: r.description.clone(),
        category: r.category_id.clone(),
        privacy: r.privacy.as_str().to_owned(),
        type_: r.room_type.as_str().to_owned(),
        invitations: r.invitations.as_str().to_owned(),
        disabled: r.disabled,
        addin: r.addin.clone(),
        members: strings(&r.members),
        managers: strings(&r.managers),
        presenters: strings(&r.presenters),
        created_by: r.created_by.clone(),
        created_at: format_micros(r.created_at),
        version: r.version,
    }
}

pub fn message(m: &MessageRecord) -> api::Message {
    api::Message {
        id: m.id.clone(),
        room: m.room_id.clone(),
        seq: m.seq,
        author: m.author.clone(),
        ts: format_micros(m.ts),
        text: m.text.clone(),
        story_title: m.story_title.clone(),
        alert: m.alert,
        client_id: m.client_id.clone(),
        replaced: m.replaced,
        file: m.file.as_ref().map(|f| api::MessageFile {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
        }),
    }
}

pub fn frame(event: &api::ServerFrame) -> Bytes {
    Bytes::from(serde_json::to_vec(event).unwrap_or_default())
}

pub fn encode_event(domain: &str, event: &LiveEvent) -> Bytes {
    let frame_value = match event {
        LiveEvent::Message(m) => api::ServerFrame::Message { message: message(m) },
        LiveEvent::RoomUpdated(r) => api::ServerFrame::RoomUpdated { room: room(domain, r) },
        LiveEvent::RoomDisabled { room } => api::ServerFrame::RoomDisabled { room: room.clone() },
        LiveEvent::RoomDeleted { room } => api::ServerFrame::RoomDeleted { room: room.clone() },
        LiveEvent::RemovedFromRoom { room } => api::ServerFrame::RemovedFromRoom { room: room.clone() },
        LiveEvent::ParticipantJoined { room, address, display_name } => api::ServerFrame::ParticipantJoined {
            room: room.clone(),
            user: api::User { address: address.clone(), display_name: display_name.clone() },
        },
        LiveEvent::ParticipantLeft { room, address, display_name } => api::ServerFrame::ParticipantLeft {
            room: room.clone(),
            user: api::User { address: address.clone(), display_name: display_name.clone() },
        },
        LiveEvent::Activity { room, last_seq } => {
            api::ServerFrame::Activity { room: room.clone(), last_seq: *last_seq }
        }
        LiveEvent::Invitation { id, room: r, created_at } => api::ServerFrame::Invitation {
            invitation: api::Invitation { id: *id, room: room(domain, r), created_at: format_micros(*created_at) },
        },
        LiveEvent::MessagesRemoved { room, ids } => {
            api::ServerFrame::MessagesRemoved { room: room.clone(), message_ids: ids.clone() }
        }
        LiveEvent::MessageReplaced { room, ids, text } => {
            api::ServerFrame::MessageReplaced { room: room.clone(), message_ids: ids.clone(), text: text.clone() }
        }
        LiveEvent::RoomCleared { room, end_ts } => {
            api::ServerFrame::RoomCleared { room: room.clone(), end_date: format_micros(*end_ts) }
        }
        LiveEvent::InvitationWithdrawn { id, room } => {
            api::ServerFrame::InvitationWithdrawn { id: *id, room: room.clone() }
        }
        LiveEvent::FeedMatch { feed, feed_name, hit } => {
            let hit = crate::search::hit(hit.clone());
            api::ServerFrame::FeedMatch {
                feed: feed.clone(),
                feed_name: feed_name.clone(),
                message: hit.message,
                room: hit.room,
                highlight: hit.highlight,
                highlight_ranges: hit.highlight_ranges,
                highlight_field: hit.highlight_field,
            }
        }
    };
    frame(&frame_value)
}

pub fn server(v: &pchat_service::pool::ServerView) -> api::Server {
    api::Server {
        name: v.server.name.clone(),
        url: v.server.url.clone(),
        state: if v.up { "up" } else { "down" }.to_owned(),
        active: v.server.active,
        connections: v.server.connections,
        database: v.server.database.clone(),
        started_at: format_micros(v.server.started_at),
        heartbeat_at: format_micros(v.server.heartbeat_at),
    }
}

pub fn compliance_event(e: &pchat_service::records::ArchivedEvent) -> api::ComplianceEvent {
    api::ComplianceEvent {
        id: e.id,
        kind: e.event.kind.clone(),
        pool: e.pool.clone(),
        room: e.event.room_id.clone(),
        user: e.event.actor.clone(),
        ts: format_micros(e.event.ts),
        content: e.event.content.clone(),
        details: serde_json::from_str(&e.event.details).unwrap_or_else(|_| e.event.details.clone().into()),
        hash: e.hash.clone(),
    }
}

pub fn audit_event(r: &pchat_service::records::AuditRecord) -> api::AuditEvent {
    api::AuditEvent {
        id: r.id,
        kind: r.event.kind.clone(),
        room: r.event.room_id.clone(),
        user: r.event.actor.clone(),
        ts: format_micros(r.event.ts),
        content: r.event.content.clone(),
        details: serde_json::from_str(&r.event.details).unwrap_or_else(|_| r.event.details.clone().into()),
    }
}
