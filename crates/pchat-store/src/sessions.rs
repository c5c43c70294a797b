//! Credentials and sign-in sessions: password hashes change here, and the bearer tokens users hold are kept only
//! as hashes, with when they were made, last used and must end, so that they expire and their users (and user
//! administrators) can list and end them.

use async_trait::async_trait;

use crate::StoreResult;

/// A signed-in session (one bearer token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Public id: names the session when listing or ending it; it cannot be used to authenticate.
    pub id: String,
    /// SHA-256 of the bearer token, hex.
    pub token_hash: String,
    pub address: String,
    pub created_at: i64,
    /// Last authenticated use (µs); moved forward at most about once a minute.
    pub last_used_at: i64,
    /// When it ends whatever its use (µs). [`NEVER`] marks the server's own local administration session, which
    /// ends when the server stops.
    pub expires_at: i64,
    /// What signed in: the client's network address and user agent, bounded and free of control characters.
    pub client: String,
}

/// `expires_at` of a session that ends only when revoked.
pub const NEVER: i64 = i64::MAX;

/// Sessions and passwords. Every backend's [`crate::Store`] is one.
#[async_trait]
pub trait Sessions: Send + Sync {
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// The session of a token hash, whatever its age (the caller decides whether it is still valid).
    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;
    /// The session with public id `id`, whatever its age.
    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// Records a use at `at` (never moves `last_used_at` backwards).
    async fn touch_session(&self, token_hash: &str, at: i64) -> StoreResult<()>;
    /// The user's sessions, newest first.
    async fn sessions_of(&self, address: &str) -> StoreResult<Vec<SessionRecord>>;
    /// Ends the session of a token hash; returns it if there was one.
    async fn end_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;
    /// Ends the user's session with public id `id`; `NotFound` (and nothing captured) when the user has none.
    async fn end_session_by_id(&self, address: &str, id: &str) -> StoreResult<()>;
    /// Ends every session of the user except the one of `keep` (a token hash); returns how many ended.
    async fn end_sessions(&self, address: &str, keep: Option<&str>) -> StoreResult<u64>;
    /// Replaces the user's password hash and, in the same transaction, ends every session but `keep`; `NotFound`
    /// when there is no such user (and nothing changes).
    async fn set_password(&self, address: &str, password_hash: &str, keep: Option<&str>) -> StoreResult<u64>;
    /// Deletes sessions that ended before `now` or were last used before `idle_before` (sessions that never end
    /// are kept); returns how many.
    async fn purge_sessions(&self, now: i64, idle_before: i64) -> StoreResult<u64>;
}
