//! Records exchanged with the store. Times are microseconds since the Unix epoch, UTC.

use pchat_core::{Invitations, Principal, Privacy, RoomType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub address: String,
    pub display_name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

/// What resolving a signed-in user needs, read together (see `Store::caller_facts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerFacts {
    pub user: UserRecord,
    /// Every group the user belongs to, directly or through nesting, by name.
    pub groups: Vec<String>,
    pub roles: Vec<AdminRole>,
    /// The policy set at each scope asked for, in the order asked.
    pub policies: Vec<Option<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminRole {
    Admin,
    UserAdmin,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::UserAdmin => "user_admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "user_admin" => Some(Self::UserAdmin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub file_upload: bool,
    pub chat_history: bool,
    pub invitations: bool,
    pub allowed_members: Vec<Principal>,
    pub denied_members: Vec<Principal>,
    pub creators: Vec<Principal>,
    /// Moves on at every change: an update names the version it was computed from (compare-and-set).
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddinRecord {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category_id: String,
    pub privacy: Privacy,
    pub room_type: RoomType,
    pub invitations: Invitations,
    pub disabled: bool,
    pub addin: Option<String>,
    pub members: Vec<Principal>,
    pub managers: Vec<Principal>,
    pub presenters: Vec<Principal>,
    pub created_by: String,
    pub created_at: i64,
    /// Moves on at every change: an update names the version it was computed from (compare-and-set).
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomQuery {
    pub category_id: Option<String>,
    pub after_name: Option<String>,
    pub limit: u32,
}

/// Which text of the directory a term was taken from (see `pchat_core::text::directory_terms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectoryField {
    /// A user's address and display name; the key is the address.
    User = 0,
    /// A room's name; the key is the room's id.
    RoomName = 1,
    /// A room's description; the key is the room's id.
    RoomDescription = 2,
}

impl DirectoryField {
    pub fn code(self) -> i16 {
        self as i16
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Globally unique id chosen by the caller.
    pub id: String,
    pub room_id: String,
    pub author: String,
    pub text: String,
    pub story_title: Option<String>,
    pub alert: bool,
    pub client_id: Option<String>,
    /// False when the room's category has chat history off: the message gets a `seq` and is delivered live,
    /// but is not kept.
    pub keep: bool,
    /// Capture a CHAT compliance event with the message, in the same transaction (compliance enabled); a
    /// FILEUPLOAD event for a message announcing a file.
    pub capture: bool,
    /// The uploaded file the message announces: its pending file record becomes ready in the same transaction
    /// (`NotFound` if that record is gone).
    pub file: Option<AttachedFile>,
}

/// A file as a message announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
}

impl FileMeta {
    /// One line per field (a file name holds no line break): how messages store it.
    pub fn encode(&self) -> String {
        format!("{}\n{}\n{}\n{}", self.id, self.name, self.size, self.content_type)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let mut lines = raw.split('\n');
        let meta = Self {
            id: lines.next()?.to_owned(),
            name: lines.next()?.to_owned(),
            size: lines.next()?.parse().ok()?,
            content_type: lines.next()?.to_owned(),
        };
        lines.next().is_none().then_some(meta)
    }
}

/// A finished upload, attached to the message that announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedFile {
    pub meta: FileMeta,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub room_id: String,
    pub seq: i64,
    pub author: String,
    pub ts: i64,
    pub text: String,
    pub story_title: Option<String>,
    pub alert: bool,
    pub client_id: Option<String>,
    pub replaced: bool,
    /// The file the message announces (its `text` is the file's name).
    pub file: Option<FileMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: MessageRecord,
    /// False when the `client_id` had been used before and `message` is the original.
    pub created: bool,
}

/// Which messages of a room to read; results are always in ascending `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRange {
    /// The newest `limit` messages.
    Latest { limit: u32 },
    /// Messages with `seq > after`, oldest first.
    After { after: i64, limit: u32 },
    /// The newest `limit` messages with `seq < before`.
    Before { before: i64, limit: u32 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub author: Option<String>,
    pub start_ts: Option<i64>,
    pub end_ts: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRecord {
    pub id: i64,
    pub address: String,
    pub room_id: String,
    pub created_at: i64,
}

/// What the store reports after commit, in commit order. In a pool this includes what other servers committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    MessagePosted(MessageRecord),
    /// Another server changed users, groups, roles, policies or configuration: cached derivations are stale.
    DirectoryChanged,
    /// A live consequence of a change, published by some server of the pool for every server to apply.
    Cluster(ClusterEvent),
}

/// Live consequences of changes that every server of a pool applies to its own connections. They name what
/// changed; receivers read the current state, so applying one twice or late does no harm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Something that decides who may see or read rooms changed (directory, policy, roles, sessions, a category's
    /// scope, a room's properties or role lists, a room's deletion). Every server re-evaluates the open
    /// connections the scope designates; `origin` names the server process that made the change (it has applied
    /// the event already, before answering the request).
    AccessChanged {
        origin: String,
        scope: AccessScope,
    },
    MessagesRemoved {
        room_id: String,
        ids: Vec<String>,
    },
    /// A user's topic feeds changed (`None`: anyone's may have, after missed notifications): servers reload them.
    FeedsChanged {
        owner: Option<String>,
    },
    MessagesReplaced {
        room_id: String,
        ids: Vec<String>,
        text: String,
    },
    RoomCleared {
        room_id: String,
        end_ts: i64,
    },
    Invitation {
        id: i64,
        address: String,
        room_id: String,
        created_at: i64,
    },
    Follow {
        address: String,
        room_id: String,
        follow: bool,
    },
    /// A user's first connection to a room on `server` joined, or the last one left.
    Presence {
        server: String,
        room_id: String,
        address: String,
        display_name: String,
        present: bool,
    },
    /// Everyone present through `server` is gone: it restarted or stopped answering.
    ServerGone {
        server: String,
    },
}

/// Which open connections a change of access concerns. Receivers match it against what they hold in memory (the
/// users and groups each connection's caller was resolved with, the rooms it joined or follows), so that applying
/// it reads nothing: a change to one member of a group of 10,000 names that one member, not the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessScope {
    /// Every connection (a policy at global, site or pool scope; a lost notification connection).
    pub everyone: bool,
    /// Connections of these users (their policy, roles, sessions or direct group membership changed, or they
    /// were removed from a room's role lists).
    pub users: Vec<String>,
    /// Connections whose caller belongs to one of these groups (the group was deleted, or these groups were
    /// added to or removed from another group).
    pub groups: Vec<String>,
    /// Connections joined to or following these rooms (properties, role lists, category, deletion).
    pub rooms: Vec<String>,
    /// Connections joined to or following a room of these categories (scope, switches).
    pub categories: Vec<String>,
}

impl AccessScope {
    pub fn everyone() -> Self {
        Self { everyone: true, ..Self::default() }
    }

    pub fn users(users: impl IntoIterator<Item = String>) -> Self {
        Self { users: users.into_iter().collect(), ..Self::default() }
    }

    pub fn rooms(rooms: impl IntoIterator<Item = String>) -> Self {
        Self { rooms: rooms.into_iter().collect(), ..Self::default() }
    }

    pub fn categories(categories: impl IntoIterator<Item = String>) -> Self {
        Self { categories: categories.into_iter().collect(), ..Self::default() }
    }

    pub fn is_empty(&self) -> bool {
        !self.everyone
            && self.users.is_empty()
            && self.groups.is_empty()
            && self.rooms.is_empty()
            && self.categories.is_empty()
    }
}

/// A user present in a room through one server of the pool (the pool-wide roster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub server: String,
    pub room_id: String,
    pub address: String,
    pub display_name: String,
}

/// A server of the pool as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    /// Unique in the pool (by default `hostname:port`).
    pub name: String,
    /// Where clients reach it.
    pub url: String,
    pub started_at: i64,
    /// When it last said it was alive.
    pub heartbeat_at: i64,
    /// Whether it accepts new connections (Lync's active servers).
    pub active: bool,
    /// Live connections at the last heartbeat.
    pub connections: i64,
    /// The database the server works on at its last heartbeat ([`crate::Store::database_in_use`]).
    pub database: String,
}
