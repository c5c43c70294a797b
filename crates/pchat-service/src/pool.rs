//! The pool's server registry (Lync's active servers): this server registers at start and sends a heartbeat with
//! its connection count; each heartbeat also tells it whether it is active. An inactive server keeps its existing
//! connections but accepts no new ones and answers `/readyz` with 503, so a load balancer sends clients elsewhere.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pchat_api_types as api;
use std::collections::HashSet;

use pchat_store::{ClusterEvent, PresenceRecord, ServerRecord};
use tracing::warn;

use crate::directory::require_admin;
use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// The most presence changes recorded (and announced) together.
const PRESENCE_BATCH: usize = 512;

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
        let _ = self.server_name.set(name.clone());
        self.join_roster(&name).await?;
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
                service.drop_dead_servers().await;
            }
        }))
    }

    pub(crate) fn is_this_server(&self, name: &str) -> bool {
        self.server_name.get().is_some_and(|n| n == name)
    }

    /// Joins the pool-wide roster: forgets what this server's previous run left there (telling the other servers),
    /// loads who is present through the other live servers, and from now on records and announces this server's
    /// presence changes, in order.
    async fn join_roster(self: &Arc<Self>, name: &str) -> ServiceResult<()> {
        self.store.clear_presence(name).await?;
        self.announce(ClusterEvent::ServerGone { server: name.to_owned() }).await;
        let now = now_micros();
        let up: HashSet<String> = self
            .store
            .list_servers()
            .await?
            .into_iter()
            .filter(|s| now - s.heartbeat_at < DOWN_AFTER_MICROS)
            .map(|s| s.name)
            .collect();
        for p in self.store.list_presence().await? {
            if p.server != name && up.contains(&p.server) {
                self.hub.remote_presence(&p.server, &p.room_id, &p.address, &p.display_name, true);
            }
        }
        let mut changes = self.hub.presence_changes();
        let service = Arc::downgrade(self);
        let server = name.to_owned();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(PRESENCE_BATCH);
            // Whatever queued while the previous batch was written goes in the next one (one transaction), in
            // order: a burst of joins costs a commit per batch, not per join.
            while changes.recv_many(&mut batch, PRESENCE_BATCH).await > 0 {
                let Some(service) = service.upgrade() else { return };
                let records: Vec<(PresenceRecord, bool)> = batch
                    .drain(..)
                    .map(|change| {
                        let record = PresenceRecord {
                            server: server.clone(),
                            room_id: change.room,
                            address: change.address,
                            display_name: change.display_name,
                        };
                        (record, change.present)
                    })
                    .collect();
                if let Err(e) = service.store.set_presence(&records).await {
                    warn!(error = %e, changes = records.len(), "could not record presence changes");
                }
                let events = records
                    .into_iter()
                    .map(|(PresenceRecord { server, room_id, address, display_name }, present)| {
                        ClusterEvent::Presence { server, room_id, address, display_name, present }
                    })
                    .collect();
                service.announce_all(events).await;
            }
        });
        Ok(())
    }

    /// Participants present through servers that stopped answering leave their rooms, here and in the database
    /// (every live server does this; it is idempotent).
    async fn drop_dead_servers(&self) {
        let present = self.hub.servers_present();
        if present.is_empty() {
            return;
        }
        let Ok(servers) = self.store.list_servers().await else { return };
        let now = now_micros();
        for server in servers.iter().filter(|s| present.contains(&s.name) && now - s.heartbeat_at >= DOWN_AFTER_MICROS)
        {
            warn!(server = %server.name, "a pool server stopped answering: its participants leave their rooms");
            self.hub.server_gone(&server.name);
            if let Err(e) = self.store.clear_presence(&server.name).await {
                warn!(error = %e, "could not clear a dead server's presence");
            }
        }
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
