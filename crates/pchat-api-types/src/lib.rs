//! JSON wire types of the pchat API (API.md): requests, responses, stream frames and error codes.
//! Requests reject unknown fields. Builds without tokio, sqlx or axum so any client can use it.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Stable error codes (`code` of a problem document).
pub mod codes {
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const CHAT_DISABLED_BY_POLICY: &str = "chat_disabled_by_policy";
    pub const VALIDATION_FAILED: &str = "validation_failed";
    pub const NAME_TAKEN: &str = "name_taken";
    pub const PRINCIPAL_OUT_OF_SCOPE: &str = "principal_out_of_scope";
    pub const CATEGORY_NOT_EMPTY: &str = "category_not_empty";
    pub const ROOM_DISABLED: &str = "room_disabled";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const CONFLICT: &str = "conflict";
    pub const UNAVAILABLE: &str = "unavailable";
    /// The change would leave no administrator (revoking the last admin role, or deleting its holder).
    pub const LAST_ADMINISTRATOR: &str = "last_administrator";
    /// A per-user limit is reached (at most 100 topic feeds).
    pub const LIMIT_REACHED: &str = "limit_reached";
}

/// WebSocket close codes the server uses besides the standard ones (1001 going away, 1009 too big). The close
/// frame's reason is a stable snake_case code: `user_deleted`, `session_ended` (signed out, ended by an
/// administrator, expired, or ended by a password change), `chat_disabled_by_policy`, `unavailable`.
pub mod close_codes {
    /// The connection's session or user is gone: sign in again.
    pub const SESSION_ENDED: u16 = 4401;
    /// The user's chat was disabled by policy.
    pub const CHAT_DISABLED: u16 = 4403;
    /// The server could not re-evaluate the connection's access (the database did not answer): reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Deserializes a nested object strictly: serde would also accept it as an array of its fields in order.
pub fn object<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(de)?;
    if !value.is_object() {
        return Err(serde::de::Error::custom("must be a JSON object"));
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

/// As [`object`], for an optional one (`null` is none).
pub fn optional_object<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(de)?;
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(_) => serde_json::from_value(value).map(Some).map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("must be a JSON object or null")),
    }
}

/// As [`object`], for a list of them.
pub fn objects<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let items = Vec::<serde_json::Value>::deserialize(de)?;
    if items.iter().any(|i| !i.is_object()) {
        return Err(serde::de::Error::custom("every item must be a JSON object"));
    }
    items.into_iter().map(|i| serde_json::from_value(i).map_err(serde::de::Error::custom)).collect()
}

/// Deserializes a field that distinguishes "absent" (`None`) from "null" (`Some(None)`).
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Lync's list-modifier idiom: `{"add": [...], "remove": [...]}` or `{"replace": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListChange {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct User {
    pub address: String,
    pub display_name: String,
}

/// A signed-in session (one bearer token) as its user sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SessionInfo {
    /// Names the session for `DELETE /api/v1/me/sessions/{id}`; it cannot be used to authenticate.
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    /// When the session ends whatever its use (`null`: only when revoked, the server's local session).
    pub expires_at: Option<String>,
    /// The network address and user agent that signed in.
    pub client: String,
    /// Whether this is the session of the request that listed it.
    pub current: bool,
}

/// `PUT /api/v1/me/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    #[schema(min_length = 8, max_length = 1024)]
    pub new_password: String,
}

/// `PUT /api/v1/users/{address}/password` (user_admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSet {
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    pub token: String,
    pub user: User,
    /// The session the token belongs to (when it ends, how to end it).
    pub session: SessionInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Me {
    pub user: User,
    pub chat_enabled: bool,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub address: String,
    pub display_name: String,
    pub password: String,
}

/// Users created in one go with password hashes from another system (`POST /api/v1/users/import`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserImport {
    /// 1 to 1,000 users, created all or none.
    #[schema(min_items = 1, max_items = 1000)]
    pub users: Vec<ImportedUser>,
}

/// One imported user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedUser {
    pub address: String,
    pub display_name: String,
    /// An Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) costing at least m=19456, t=2.
    pub password_hash: String,
}

/// What an import created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsersImported {
    pub created: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    #[serde(default, deserialize_with = "object")]
    pub members: GroupMemberChange,
}

/// A change of a group's members (users and `group:NAME`), in the list-modifier idiom.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberChange {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
}

/// An administrative role held by a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    pub user: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Policy {
    pub scope: String,
    pub enable_persistent_chat: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPut {
    pub enable_persistent_chat: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EffectivePolicy {
    pub enable_persistent_chat: bool,
    pub from_scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Configuration {
    pub scope: String,
    pub default_chat_history: u32,
    pub max_file_size_kb: u32,
    pub participant_update_limit: u32,
    pub room_management_url: String,
    pub max_message_bytes: u32,
}

/// A configuration to store at a scope; fields left out take the defaults of PRODUCT.md §2.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationPut {
    pub default_chat_history: Option<i64>,
    pub max_file_size_kb: Option<i64>,
    pub participant_update_limit: Option<i64>,
    pub room_management_url: Option<String>,
    pub max_message_bytes: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Category {
    pub id: String,
    pub name: String,
    pub description: String,
    pub file_upload: bool,
    pub chat_history: bool,
    pub invitations: bool,
    pub allowed_members: Vec<String>,
    pub denied_members: Vec<String>,
    pub creators: Vec<String>,
    /// Moves on at every change; also the `ETag` (`"N"`), for `If-Match` on PATCH.
    pub version: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    pub name: String,
    pub description: Option<String>,
    pub file_upload: Option<bool>,
    pub chat_history: Option<bool>,
    pub invitations: Option<bool>,
    pub allowed_members: Option<Vec<String>>,
    pub denied_members: Option<Vec<String>>,
    pub creators: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub file_upload: Option<bool>,
    pub chat_history: Option<bool>,
    pub invitations: Option<bool>,
    #[serde(default, deserialize_with = "optional_object")]
    pub allowed_members: Option<ListChange>,
    #[serde(default, deserialize_with = "optional_object")]
    pub denied_members: Option<ListChange>,
    #[serde(default, deserialize_with = "optional_object")]
    pub creators: Option<ListChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Room {
    pub id: String,
    pub uri: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub privacy: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub invitations: String,
    pub disabled: bool,
    pub addin: Option<String>,
    pub members: Vec<String>,
    pub managers: Vec<String>,
    pub presenters: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    /// Moves on at every change; also the `ETag` (`"N"`), for `If-Match` on PATCH.
    pub version: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    pub name: String,
    pub category: String,
    pub description: Option<String>,
    pub privacy: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub invitations: Option<String>,
    pub addin: Option<String>,
    pub disabled: Option<bool>,
    pub members: Option<Vec<String>>,
    pub managers: Option<Vec<String>>,
    pub presenters: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub privacy: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub invitations: Option<String>,
    pub disabled: Option<bool>,
    /// `null` unlinks the add-in.
    #[serde(default, deserialize_with = "double_option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub addin: Option<Option<String>>,
    #[serde(default, deserialize_with = "optional_object")]
    pub members: Option<ListChange>,
    #[serde(default, deserialize_with = "optional_object")]
    pub managers: Option<ListChange>,
    #[serde(default, deserialize_with = "optional_object")]
    pub presenters: Option<ListChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Participants {
    pub participants: Vec<User>,
    pub suppressed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Addin {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddinPatch {
    pub name: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Message {
    pub id: String,
    pub room: String,
    pub seq: i64,
    pub author: String,
    pub ts: String,
    pub text: String,
    pub story_title: Option<String>,
    pub alert: bool,
    pub client_id: Option<String>,
    pub replaced: bool,
    /// The file this message announces (present only on such messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<MessageFile>,
}

/// A file as the message announcing it describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct MessageFile {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
}

/// A short-lived download link for a file (`POST /api/v1/files/{id}/link`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FileLink {
    /// Path and query to `GET` without an `Authorization` header (a browser navigates to it).
    pub url: String,
    /// When the link stops working (RFC 3339); it also stops when the session that made it ends.
    pub expires_at: String,
}

/// A stored file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// An upload's answer: the file and the message announcing it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FileUploaded {
    pub file: FileInfo,
    pub message: Message,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub text: String,
    pub story_title: Option<String>,
    pub alert: Option<bool>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRoom {
    pub end_date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Cleared {
    pub removed: u64,
}

/// A room as search results name it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RoomRef {
    pub id: String,
    pub name: String,
}

/// Where a query matched in a highlight: Unicode character (scalar value) offsets, `start` inclusive, `end`
/// exclusive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct TextRange {
    pub start: u32,
    pub end: u32,
}

/// One message found by a search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SearchHit {
    pub message: Message,
    pub room: RoomRef,
    /// A piece of the message around the match (at most about 200 characters, on one line, with "…" where it was
    /// cut).
    pub highlight: String,
    /// Where the query matched in `highlight`.
    pub highlight_ranges: Vec<TextRange>,
    /// What the highlight was taken from: `text`, or `story_title` when only the title matched.
    pub highlight_field: String,
}

/// A topic feed: a saved search that notifies its owner live (`feed_match`) when a new message matches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Feed {
    pub id: String,
    pub name: String,
    pub keywords: String,
    /// `all`, `any` or `exact`, as for search.
    #[serde(rename = "match")]
    pub match_: String,
    pub case_sensitive: bool,
    /// Only messages by these users; empty: anyone.
    pub authors: Vec<String>,
    /// Only messages in these rooms (ids); empty: every room the owner may read.
    pub rooms: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFeed {
    pub name: String,
    pub keywords: String,
    #[serde(rename = "match")]
    pub match_: Option<String>,
    pub case_sensitive: Option<bool>,
    pub authors: Option<Vec<String>>,
    /// Room ids or `name:NAME`; stored as ids.
    pub rooms: Option<Vec<String>>,
}

/// A change to a topic feed: the fields given replace the feed's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedPatch {
    pub name: Option<String>,
    pub keywords: Option<String>,
    #[serde(rename = "match")]
    pub match_: Option<String>,
    pub case_sensitive: Option<bool>,
    pub authors: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

/// A page of search results, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
    /// Where the next page starts; `null` when there is nothing more. A page can hold fewer than `limit` results
    /// and still have a next page: a search stops after a bounded amount of work and says where to go on.
    pub next_cursor: Option<String>,
    /// About how many messages match in all (exact when all of them are in a first page without a next one).
    pub total_estimate: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveMessages {
    pub author: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub keywords: Option<String>,
    #[serde(rename = "match")]
    pub match_: Option<String>,
    pub case_sensitive: Option<bool>,
    pub replace_with: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Affected {
    pub affected: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct MyRoom {
    pub room: Room,
    pub following: bool,
    pub unread: i64,
    pub last_seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    pub room: String,
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Invitation {
    pub id: i64,
    pub room: Room,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Invitations {
    pub items: Vec<Invitation>,
}

/// A client → server stream frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<i64>,
    },
    Part {
        room: String,
    },
    Post {
        room: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        story_title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alert: Option<bool>,
        client_id: String,
    },
    Ping,
}

/// A server → client stream frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Joined {
        room: String,
        last_seq: i64,
    },
    Parted {
        room: String,
    },
    Ack {
        client_id: String,
        message: Message,
    },
    Pong,
    Message {
        message: Message,
    },
    MessageReplaced {
        room: String,
        message_ids: Vec<String>,
        text: String,
    },
    MessagesRemoved {
        room: String,
        message_ids: Vec<String>,
    },
    RoomCleared {
        room: String,
        end_date: String,
    },
    ParticipantJoined {
        room: String,
        user: User,
    },
    ParticipantLeft {
        room: String,
        user: User,
    },
    RoomUpdated {
        room: Room,
    },
    RoomDisabled {
        room: String,
    },
    RoomDeleted {
        room: String,
    },
    RemovedFromRoom {
        room: String,
    },
    Activity {
        room: String,
        last_seq: i64,
    },
    Invitation {
        invitation: Invitation,
    },
    /// An invitation to a room the user may no longer read was withdrawn.
    InvitationWithdrawn {
        id: i64,
        room: String,
    },
    /// A new message matched one of the user's topic feeds (in a room they may read).
    FeedMatch {
        feed: String,
        feed_name: String,
        message: Message,
        room: RoomRef,
        highlight: String,
        highlight_ranges: Vec<TextRange>,
        highlight_field: String,
    },
    Error {
        code: String,
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op: Option<String>,
    },
    Resync {
        room: String,
        reason: String,
    },
}

/// A server of the pool (`pchat pool status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Server {
    pub name: String,
    pub url: String,
    /// `up` when it has been heard from recently, else `down`.
    pub state: String,
    /// Whether it accepts new connections.
    pub active: bool,
    pub connections: i64,
    /// The database it works on: `embedded` (SQLite), or `primary` / `backup` of a pool's database pair.
    pub database: String,
    pub started_at: String,
    pub heartbeat_at: String,
}

/// Which servers accept new connections (Lync `Set-CsPersistentChatActiveServer`): add/remove names, replace the
/// active set (`[]`: none), or `swap` every server's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveServers {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    pub replace: Option<Vec<String>>,
    #[serde(default)]
    pub swap: bool,
}

/// Compliance configuration of a scope (`global` or `pool:NAME`; Lync `*-CsPersistentChatComplianceConfiguration`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfiguration {
    /// Capture every event into the compliance archive.
    pub enabled: bool,
    /// Output format of the periodic export: `xml` (Lync's XmlAdapter), `csv` or `jsonl`.
    pub adapter: String,
    /// Where the periodic export writes its files; empty: no periodic export (the archive is still kept).
    pub output_dir: String,
    /// Seconds between exports: 60 (1 minute) to 2,592,000 (30 days); Lync's default 15 minutes.
    pub run_interval_secs: u64,
    pub one_chat_room_per_output_file: bool,
    pub add_user_details: bool,
    pub add_chat_room_details: bool,
    pub create_file_attachments_manifest: bool,
    /// Days archived events are kept; 0 (the default) keeps them forever. Only events the periodic export has
    /// written are purged when an output directory is configured.
    #[serde(default)]
    pub retention_days: u32,
}

impl Default for ComplianceConfiguration {
    fn default() -> Self {
        Self {
            enabled: false,
            adapter: "xml".into(),
            output_dir: String::new(),
            run_interval_secs: 900,
            one_chat_room_per_output_file: false,
            add_user_details: false,
            add_chat_room_details: false,
            create_file_attachments_manifest: false,
            retention_days: 0,
        }
    }
}

/// An archived compliance event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ComplianceEvent {
    /// Position in the archive.
    pub id: i64,
    /// `JOIN`, `PART`, `CHAT`, `BACKCHAT`, … (docs/compliance.md lists every kind).
    #[serde(rename = "type")]
    pub kind: String,
    pub pool: String,
    pub room: Option<String>,
    pub user: String,
    /// Server time (RFC 3339, microseconds).
    pub ts: String,
    pub content: String,
    /// Further facts of the event (message id and seq, before/after values, …).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub hash: String,
}

/// An administrative action in the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AuditEvent {
    /// Position in the trail.
    pub id: i64,
    /// `ROOM_CHANGED`, `ROLE_GRANTED`, `PASSWORD_CHANGED`, … (docs/compliance.md lists every kind).
    #[serde(rename = "type")]
    pub kind: String,
    pub room: Option<String>,
    /// Who acted (an address, or `host:NAME` for the recovery on the server's host).
    pub user: String,
    /// Server time (RFC 3339, microseconds).
    pub ts: String,
    /// What was acted on.
    pub content: String,
    /// Before and after values, and other facts of the action.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// What a compliance export wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExportReport {
    /// Events written.
    pub events: u64,
    /// The files written into the output directory.
    pub files: Vec<String>,
}

/// The result of recomputing the archive's hash chains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    /// The first event whose hash or link does not match, if any.
    pub first_broken: Option<i64>,
    /// Whether a chain key was used (`compliance.chain_key_file`): sealed events were checked with it.
    #[serde(default)]
    pub sealed: bool,
    /// Witnesses kept outside the archive that were checked against it.
    #[serde(default)]
    pub witnesses_checked: u64,
    /// What does not hold, for people: broken links, unsealed events after sealed ones, witnessed events that are
    /// missing or rewritten. Empty when `ok`.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `POST /api/v1/compliance/verify` (optional body): further witnesses to check, e.g. the `*.chain.json` files of
/// an export copy kept elsewhere.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    #[serde(default, deserialize_with = "objects")]
    pub witnesses: Vec<ChainWitness>,
}

/// A witnessed event of a pool's compliance chain (an export's `*.chain.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainWitness {
    pub pool: String,
    pub id: i64,
    pub hash: String,
    #[serde(default)]
    pub tag: Option<String>,
}
