//! The pool's server registry (Lync's active servers): this server registers at start and sends a heartbeat with
//! its connection count; each heartbeat also tells it whether it is active. An inactive server keeps its existing
//! connections but accepts no new ones and answers `/readyz` with 503, so a load balancer sends clients elsewhere.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pchat_api_types as api;
use pchat_store::ServerRecord;
use tracing::warn;

use crate::directory::require_admin;
use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// How often a server says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A server not heard from for this long (three heartbeats) is shown as down.
const DOWN_AFTER_MICROS: i64 = 6_000_000;

/// A registered server and whether it is up.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub server: ServerRecord,
    pub up: bool,
}

impl Service {
    /// Registers this server under `name` and starts its heartbeat; the task runs until aborted or the service goes.
    pub async fn join_pool(self: &Arc<Self>, name: String, url: String) -> ServiceResult<tokio::task::JoinHandle<()>> {
        let now = now_micros();
        let record = ServerRecord {
            name: name.clone(),
            url,
            started_at: now,
            heartbeat_at: now,
            active: true,
            connections: 0,
            database: self.store.database_in_use().to_owned(),
        };
        let active = self.store.register_server(&record).await?;
        self.active.store(active, Ordering::Release);
        let service = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(service) = service.upgrade() else { return };
                let connections = service.hub.connection_count() as i64;
                match service.store.heartbeat(&name, connections, service.store.database_in_use(), now_micros()).await {
                    Ok(active) => service.active.store(active, Ordering::Release),
                    // Without the database the last known state stands; /readyz reports the database itself.
                    Err(e) => warn!(error = %e, "heartbeat failed"),
                }
            }
        }))
    }

    /// Whether this server accepts new connections.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Every registered server with its state (administrators).
    pub async fn pool_status(&self, caller: &Caller) -> ServiceResult<Vec<ServerView>> {
        require_admin(caller)?;
        let now = now_micros();
        let servers = self.store.list_servers().await?;
        Ok(servers
            .into_iter()
            .map(|server| ServerView { up: now - server.heartbeat_at < DOWN_AFTER_MICROS, server })
            .collect())
    }

    /// Changes which servers accept new connections; an unknown name changes nothing (`validation_failed`).
    pub async fn set_active_servers(
        &self,
        caller: &Caller,
        change: api::ActiveServers,
    ) -> ServiceResult<Vec<ServerView>> {
        require_admin(caller)?;
        let servers = self.store.list_servers().await?;
        let known = |name: &String| servers.iter().any(|s| &s.name == name);
        let named = change.add.iter().chain(&change.remove).chain(change.replace.iter().flatten());
        if let Some(unknown) = named.clone().find(|n| !known(n)) {
            return Err(ServiceError::validation("servers", format!("no server {unknown} in the pool")));
        }
        let forms = usize::from(change.swap)
            + usize::from(change.replace.is_some())
            + usize::from(!change.add.is_empty() || !change.remove.is_empty());
        if forms != 1 {
            return Err(ServiceError::validation("servers", "give exactly one of: add/remove, replace, swap"));
        }
        let changes: Vec<(String, bool)> = if change.swap {
            servers.iter().map(|s| (s.name.clone(), !s.active)).collect()
        } else if let Some(active) = &change.replace {
            servers.iter().map(|s| (s.name.clone(), active.contains(&s.name))).collect()
        } else {
            change
                .add
                .iter()
                .map(|n| (n.clone(), true))
                .chain(change.remove.iter().map(|n| (n.clone(), false)))
                .collect()
        };
        self.store.set_active(&changes).await?;
        self.pool_status(caller).await
    }
}
