//! The audit trail: a record of every administrative action (who, when, what, before and after), kept in the
//! chat database whether or not compliance capture is on. Records are written in the action's own transaction
//! ([`crate::compliance::Captured::audit`]) and read here.

use async_trait::async_trait;

use crate::{EventQuery, NewEvent, StoreResult};

/// One recorded administrative action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the trail (increasing in commit order on SQLite, in id order on PostgreSQL).
    pub id: i64,
    pub event: NewEvent,
}

/// Reading the audit trail. Every backend's [`crate::Store`] is one.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Records matching the query (`pool` is ignored; `after_id` pages), oldest first.
    async fn audit_events(&self, query: &EventQuery) -> StoreResult<Vec<AuditRecord>>;
}
