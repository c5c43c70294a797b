//! PostgreSQL backend of the pchat storage port, selected by a `postgres://` database URL. Several `pchat serve`
//! processes can share one database: posts are appended by a batching task per server under per-room row locks
//! ([`appender`]), so `seq` stays gap-free and ordered across servers; every server hears every commit through
//! LISTEN/NOTIFY ([`listener`], [`notify`]); appended messages are indexed for search after their commit
//! ([`indexer`]); everything else is one transaction per operation on a connection pool.
//! A pool may name a backup database (a streaming standby); [`ha`] switches every server to it and back.

mod appender;
mod archive;
mod directory;
mod feeds;
mod files;
pub mod ha;
mod indexer;
mod listener;
mod migrations;
mod notify;
mod search;
mod sessions;
mod store;

pub use migrations::MigrationError;
pub mod testing;

pub use archive::PgArchive;
pub use store::{OpenError, PgStore, redact};

#[cfg(test)]
mod tests;
