//! Files posted in rooms: the records of the file store's objects. A record exists, pending, before the first
//! byte is stored, and becomes ready in the transaction that posts the message announcing it; records go with their
//! message (removed, replaced, cleared) and their room. So every stored object has a record while it is wanted, and
//! an object without one is garbage the service sweeps.

use async_trait::async_trait;

use crate::StoreResult;

/// A file of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub room_id: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    /// SHA-256 of the content, hex (empty while pending).
    pub sha256: String,
    pub uploader: String,
    pub created_at: i64,
    /// The message announcing it, once ready.
    pub message_id: Option<String>,
    pub ready: bool,
}

/// File records. Every backend's [`crate::Store`] is one.
#[async_trait]
pub trait Files: Send + Sync {
    /// Records an upload about to start (not ready); `NotFound` if the room does not exist.
    async fn create_pending_file(&self, file: &FileRecord) -> StoreResult<()>;
    async fn get_file(&self, id: &str) -> StoreResult<Option<FileRecord>>;
    /// Forgets a file record (an upload that failed or was abandoned); `NotFound` if there is none.
    async fn delete_file(&self, id: &str) -> StoreResult<()>;
    /// Which of these ids have a record (pending or ready).
    async fn existing_files(&self, ids: &[String]) -> StoreResult<Vec<String>>;
    /// Pending records created before `before` (uploads that never finished).
    async fn stale_pending_files(&self, before: i64) -> StoreResult<Vec<FileRecord>>;
    /// The ready files of a room, oldest first (for moving a deployment).
    async fn room_files(&self, room_id: &str) -> StoreResult<Vec<FileRecord>>;
    /// Writes records exactly as given (for moving a deployment).
    async fn import_files(&self, files: &[FileRecord]) -> StoreResult<()>;
}
