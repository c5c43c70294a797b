//! Topic feeds: saved searches of a user, matched against new messages by the service and searched for past
//! matches. The store keeps them and enforces the per-user limit atomically.

use async_trait::async_trait;

use crate::StoreResult;

/// A saved search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRecord {
    pub id: String,
    /// Whose feed it is.
    pub owner: String,
    /// Unique among the owner's feeds.
    pub name: String,
    pub keywords: String,
    /// `all`, `any` or `exact`.
    pub match_mode: String,
    pub case_sensitive: bool,
    /// Only messages by these users (empty: anyone).
    pub authors: Vec<String>,
    /// Only messages in these rooms, by id (empty: every room the owner may read).
    pub rooms: Vec<String>,
    pub created_at: i64,
}

/// Topic feeds. Every backend's [`crate::Store`] is one.
#[async_trait]
pub trait Feeds: Send + Sync {
    /// Adds a feed unless its owner already has `max` feeds (`LimitReached`) or one with its name (`NameTaken`).
    async fn create_feed(&self, feed: &FeedRecord, max: u32) -> StoreResult<()>;
    async fn get_feed(&self, id: &str) -> StoreResult<Option<FeedRecord>>;
    /// The owner's feeds, oldest first.
    async fn list_feeds(&self, owner: &str) -> StoreResult<Vec<FeedRecord>>;
    /// Every feed of every user (for the live matcher), in no particular order.
    async fn all_feeds(&self) -> StoreResult<Vec<FeedRecord>>;
    /// Replaces the feed with the same id (its owner and creation time stay); `NotFound`, `NameTaken`.
    async fn update_feed(&self, feed: &FeedRecord) -> StoreResult<()>;
    /// `NotFound` when there is no such feed.
    async fn delete_feed(&self, id: &str) -> StoreResult<()>;
}

/// Lists (authors, rooms) stored one item per line, as principals are.
pub fn join_lines(items: &[String]) -> String {
    items.join("\n")
}

pub fn split_lines(raw: &str) -> Vec<String> {
    raw.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}
