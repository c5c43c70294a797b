//! The storage port of pchat: [`Store`], the records it reads and writes, its errors, and the conformance suite
//! ([`conformance`]) that every backend runs. Nothing here assumes SQLite or PostgreSQL: each operation is atomic
//! on its own, names conflicts with typed errors, and hands committed messages to [`Store::take_events`] in
//! commit order, which is per-room `seq` order.

pub mod audit;
pub mod codec;
pub mod compliance;
pub mod conformance;
pub mod feeds;
pub mod files;
mod records;
pub mod search;
pub mod sessions;

use async_trait::async_trait;
use pchat_core::text::DirectoryTerm;
use pchat_core::{ChatConfig, ConfigScope, PolicyScope};
use tokio::sync::mpsc;

pub use audit::{Audit, AuditRecord};
pub use compliance::{
    Archive, ArchivedEvent, Captured, EventQuery, ExportClaim, ExportCursor, ExportRequest, NewEvent, OutboxEvent,
};
pub use feeds::{FeedRecord, Feeds};
pub use files::{FileRecord, Files};
pub use records::*;
pub use search::{Found, Posting, Scan, ScanPage, Search, SearchFilter, SearchKey, TermCount, holds_in, keys_in};
pub use sessions::{SessionRecord, Sessions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name (user, group, category, room, add-in) is already taken.
    #[error("name already taken")]
    NameTaken,
    #[error("not found")]
    NotFound,
    /// The category still holds rooms.
    #[error("category not empty")]
    CategoryNotEmpty,
    /// The group change would make a group contain itself.
    #[error("group nesting would form a cycle")]
    GroupCycle,
    /// The room is disabled, so nothing may be posted to it.
    #[error("room disabled")]
    RoomDisabled,
    /// The change would leave no administrator (revoking the last admin role, or deleting its holder).
    #[error("the last administrator cannot lose the role")]
    LastAdministrator,
    /// A per-owner limit (topic feeds per user) is reached; nothing was written.
    #[error("limit reached")]
    LimitReached,
    /// The row changed since it was read (its version moved on); nothing was written.
    #[error("changed concurrently")]
    Conflict,
    /// The database cannot be reached or failed; the operation did not take effect.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage port. Every method is one atomic operation: it takes effect completely or not at all, and when it
/// returns `Ok` for a write, the write is durable (committed under the backend's durability setting).
#[async_trait]
pub trait Store: Sessions + Audit + Search + Feeds + Files + Send + Sync + 'static {
    /// The feed of committed events, in commit order. Can be taken once; later calls return `None`.
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>>;

    /// Sends live events, in order, to every server of the pool (this one included), through the event feed; on
    /// PostgreSQL in one statement (one commit) for the lot.
    async fn publish(&self, events: Vec<ClusterEvent>) -> StoreResult<()>;

    /// Which database the store works on now: `embedded` (SQLite), or `primary` or `backup` of a pool's database
    /// pair (PostgreSQL, which moves to the backup after a failover).
    fn database_in_use(&self) -> &'static str;

    /// Whether the database answers and takes writes (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Why the store can no longer work at all, so that the server should exit for its supervisor to restart it
    /// (the embedded store's writer thread is gone). `None` while it can.
    fn fatal(&self) -> Option<String> {
        None
    }

    // Users, credentials and roles.
    async fn create_user(&self, user: UserRecord) -> StoreResult<()>;
    /// Creates every user or none: `NameTaken` when an address exists already or repeats.
    async fn create_users(&self, users: Vec<UserRecord>) -> StoreResult<()>;
    async fn get_user(&self, address: &str) -> StoreResult<Option<UserRecord>>;
    /// Users whose address or display name contains `query` (case-insensitive), ordered by address, after `after`.
    async fn search_users(&self, query: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<UserRecord>>;
    /// The users of these addresses that exist, ordered by address.
    async fn users_by_address(&self, addresses: &[String]) -> StoreResult<Vec<UserRecord>>;
    /// The directory's name index: the keys (user addresses, room ids) under one of `fields` whose text has the
    /// term `term.text`, or a term starting with it when `term.prefix`; at most `cap` of them, `None` when there
    /// are more (the term does not narrow the search enough to be worth fetching). An index range, whatever the
    /// size of the directory.
    async fn directory_keys(
        &self,
        fields: &[DirectoryField],
        term: &DirectoryTerm,
        cap: u32,
    ) -> StoreResult<Option<Vec<String>>>;
    /// Removes the user with their sessions, roles, group memberships, follows and read marks.
    async fn delete_user(&self, address: &str) -> StoreResult<()>;
    async fn count_users(&self) -> StoreResult<u64>;
    /// Grants or revokes a role; `LastAdministrator` (and no change) for revoking the only admin role.
    async fn set_role(&self, address: &str, role: AdminRole, granted: bool) -> StoreResult<()>;
    async fn list_roles(&self) -> StoreResult<Vec<(String, AdminRole)>>;
    /// The user with their groups, roles and the policies set at `policy_scopes` (in order), read together: every
    /// connection and join resolves its user afresh, so this is one round trip (the embedded store: one read
    /// transaction) rather than one per fact. `None` when there is no such user.
    async fn caller_facts(&self, address: &str, policy_scopes: &[PolicyScope]) -> StoreResult<Option<CallerFacts>> {
        let Some(user) = self.get_user(address).await? else { return Ok(None) };
        let groups = self.user_groups(address).await?;
        let roles = self.list_roles().await?.into_iter().filter(|(a, _)| a == address).map(|(_, r)| r).collect();
        let mut policies = Vec::with_capacity(policy_scopes.len());
        for scope in policy_scopes {
            policies.push(self.get_policy(scope).await?);
        }
        Ok(Some(CallerFacts { user, groups, roles, policies }))
    }

    // Groups.
    async fn create_group(&self, name: &str) -> StoreResult<()>;
    /// The direct members (`user@domain` or `group:NAME`), or `None` when there is no such group.
    async fn get_group(&self, name: &str) -> StoreResult<Option<Vec<String>>>;
    async fn list_groups(&self) -> StoreResult<Vec<String>>;
    /// Adds and removes direct members atomically; `GroupCycle` if a group would contain itself.
    async fn update_group(&self, name: &str, add: &[String], remove: &[String]) -> StoreResult<Vec<String>>;
    async fn delete_group(&self, name: &str) -> StoreResult<()>;
    /// Every group the user belongs to, directly or through nesting.
    async fn user_groups(&self, address: &str) -> StoreResult<Vec<String>>;

    // Policy and configuration.
    async fn get_policy(&self, scope: &PolicyScope) -> StoreResult<Option<bool>>;
    async fn put_policy(&self, scope: &PolicyScope, enabled: bool) -> StoreResult<()>;
    async fn delete_policy(&self, scope: &PolicyScope) -> StoreResult<bool>;
    async fn get_config(&self, scope: &ConfigScope) -> StoreResult<Option<ChatConfig>>;
    /// Every policy set, by scope (as `PolicyScope` prints it).
    async fn list_policies(&self) -> StoreResult<Vec<(String, bool)>>;
    /// Every configuration set, by scope.
    async fn list_configs(&self) -> StoreResult<Vec<(String, ChatConfig)>>;
    async fn put_config(&self, scope: &ConfigScope, config: &ChatConfig) -> StoreResult<()>;
    async fn delete_config(&self, scope: &ConfigScope) -> StoreResult<bool>;

    // Categories.
    async fn create_category(&self, category: &CategoryRecord) -> StoreResult<()>;
    async fn get_category(&self, id: &str) -> StoreResult<Option<CategoryRecord>>;
    async fn get_category_by_name(&self, name: &str) -> StoreResult<Option<CategoryRecord>>;
    async fn list_categories(&self) -> StoreResult<Vec<CategoryRecord>>;
    /// Replaces the category with the same id if its version is still `category.version`, moving the version on;
    /// `Conflict` if it changed since, `NameTaken` if the new name belongs to another category.
    async fn update_category(&self, category: &CategoryRecord) -> StoreResult<()>;
    async fn delete_category(&self, id: &str) -> StoreResult<()>;

    // Add-ins.
    async fn create_addin(&self, addin: &AddinRecord) -> StoreResult<()>;
    async fn get_addin(&self, name: &str) -> StoreResult<Option<AddinRecord>>;
    async fn list_addins(&self) -> StoreResult<Vec<AddinRecord>>;
    /// Replaces the add-in called `name` (which may be renamed); rooms follow a rename.
    async fn update_addin(&self, name: &str, addin: &AddinRecord) -> StoreResult<()>;
    /// Removes the add-in and unlinks it from every room.
    async fn delete_addin(&self, name: &str) -> StoreResult<()>;

    // Rooms.
    async fn create_room(&self, room: &RoomRecord) -> StoreResult<()>;
    async fn get_room(&self, id: &str) -> StoreResult<Option<RoomRecord>>;
    async fn get_room_by_name(&self, name: &str) -> StoreResult<Option<RoomRecord>>;
    /// The room with this id (or, with `by_name`, this name) and its category, read together: every post, join
    /// and history read decides access on both. `None` when there is no such room.
    async fn room_with_category(
        &self,
        reference: &str,
        by_name: bool,
    ) -> StoreResult<Option<(RoomRecord, CategoryRecord)>> {
        let room = if by_name { self.get_room_by_name(reference).await? } else { self.get_room(reference).await? };
        let Some(room) = room else { return Ok(None) };
        Ok(self.get_category(&room.category_id).await?.map(|category| (room, category)))
    }
    /// Rooms ordered by name, starting after `query.after_name`.
    async fn list_rooms(&self, query: &RoomQuery) -> StoreResult<Vec<RoomRecord>>;
    /// Rooms on whose role lists (members, managers or presenters) one of `principals` stands (as stored: an
    /// address, `group:NAME`, `domain:DOMAIN`, `*`), and the rooms `ids`, by name: an index lookup, whatever the
    /// number of rooms.
    async fn rooms_of(&self, principals: &[String], ids: &[String]) -> StoreResult<Vec<RoomRecord>>;
    /// Replaces the room with the same id if its version is still `room.version`, moving the version on;
    /// `Conflict` if it changed since (an add-in's rename or removal counts), `NameTaken` if the new name belongs
    /// to another room.
    async fn update_room(&self, room: &RoomRecord) -> StoreResult<()>;
    /// Removes the room with its messages, follows, read marks, invitations and presence.
    async fn delete_room(&self, id: &str) -> StoreResult<()>;

    // Messages.
    /// Appends a message: assigns the next `seq` of the room and the server time, commits durably, and only then
    /// returns. A `client_id` already used in the room returns the original message with `created = false`.
    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended>;
    async fn messages(&self, room_id: &str, range: MessageRange) -> StoreResult<Vec<MessageRecord>>;
    /// Writes messages exactly as given (ids, `seq`, times, flags) and sets the room's counter to `last_seq`, for
    /// moving a deployment between backends. Nothing is announced.
    async fn import_messages(&self, room_id: &str, messages: &[MessageRecord], last_seq: i64) -> StoreResult<()>;
    /// The highest `seq` assigned in the room (0 when none).
    async fn last_seq(&self, room_id: &str) -> StoreResult<i64>;
    /// Messages of the room matched by author and time range (keywords are matched by the caller).
    async fn find_messages(&self, room_id: &str, filter: &MessageFilter) -> StoreResult<Vec<MessageRecord>>;
    /// Deletes the listed messages, or replaces their text when `replacement` is given; returns how many changed.
    async fn alter_messages(&self, room_id: &str, ids: &[String], replacement: Option<&str>) -> StoreResult<u64>;
    /// Deletes every message of the room with `ts <= end_ts`.
    async fn clear_room(&self, room_id: &str, end_ts: i64) -> StoreResult<u64>;

    // The server registry of the pool.
    /// Registers a starting server (a known name keeps its active setting); returns whether it is active.
    async fn register_server(&self, server: &ServerRecord) -> StoreResult<bool>;
    /// Records that the server is alive with `connections` live connections, working on `database`; returns
    /// whether it is active.
    async fn heartbeat(&self, name: &str, connections: i64, database: &str, at: i64) -> StoreResult<bool>;
    async fn list_servers(&self) -> StoreResult<Vec<ServerRecord>>;
    /// Sets servers active or inactive, atomically; `NotFound` if a name is not registered (nothing changes).
    async fn set_active(&self, changes: &[(String, bool)]) -> StoreResult<()>;

    // The pool-wide roster.
    /// Records, in order, that each user is (`true`) or is no longer in the room through the record's server: one
    /// transaction for the lot, so that a burst of joins costs a commit per batch, not per join.
    async fn set_presence(&self, changes: &[(PresenceRecord, bool)]) -> StoreResult<()>;
    /// Forgets everyone present through `server`; returns how many entries went.
    async fn clear_presence(&self, server: &str) -> StoreResult<u64>;
    /// Everyone present, through every server, ordered by server, room and address.
    async fn list_presence(&self) -> StoreResult<Vec<PresenceRecord>>;

    // Compliance capture (see [`compliance`]).
    /// Captures events in a transaction of their own (reads: history, joins; sign-in failures).
    async fn record_events(&self, events: &[NewEvent]) -> StoreResult<()>;
    /// The oldest captured events still in the outbox.
    async fn outbox(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>>;
    /// Removes archived events from the outbox.
    async fn outbox_done(&self, ids: &[i64]) -> StoreResult<()>;
    /// The compliance configuration stored for a scope (`global` or `pool:NAME`), as JSON.
    async fn get_compliance_config(&self, scope: &str) -> StoreResult<Option<String>>;
    async fn put_compliance_config(&self, scope: &str, json: &str) -> StoreResult<()>;

    // Following, read marks, invitations.
    async fn set_follow(&self, address: &str, room_id: &str, follow: bool) -> StoreResult<()>;
    async fn follows(&self, address: &str) -> StoreResult<Vec<String>>;
    /// Moves the read mark forward to `seq` (never backwards).
    async fn mark_read(&self, address: &str, room_id: &str, seq: i64) -> StoreResult<()>;
    /// Read marks of the user: (room id, seq).
    async fn read_marks(&self, address: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Creates an invitation for each user who has none pending for the room; returns those created.
    async fn add_invitations(
        &self,
        room_id: &str,
        addresses: &[String],
        created_at: i64,
    ) -> StoreResult<Vec<InvitationRecord>>;
    async fn invitations(&self, address: &str, after_id: i64, limit: u32) -> StoreResult<Vec<InvitationRecord>>;
    /// Deletes the user's invitations to these rooms; returns those deleted, by id.
    async fn withdraw_invitations(&self, address: &str, room_ids: &[String]) -> StoreResult<Vec<InvitationRecord>>;
    /// Writes invitations with their ids (later invitations get larger ids still), for moving a deployment.
    async fn import_invitations(&self, invitations: &[InvitationRecord]) -> StoreResult<()>;
}
