//! Live consequences of changes, for every server of a pool: the service *announces* them through the store and
//! *applies* them when they come back through the event feed, so one server or many take the same path. An event
//! names what changed; applying it reads the current state, so a late or repeated event does no harm.

use pchat_store::ClusterEvent;
use tracing::warn;

use crate::Service;
use crate::hub::LiveEvent;

impl Service {
    /// Publishes a live consequence to every server. A failure is logged, not returned: the change itself is
    /// committed, and connections meet the new state at their next operation anyway.
    pub(crate) async fn announce(&self, event: ClusterEvent) {
        self.announce_all(vec![event]).await;
    }

    /// Announces several changes, in order, at once (one statement on PostgreSQL).
    pub(crate) async fn announce_all(&self, events: Vec<ClusterEvent>) {
        if let Err(e) = self.store.publish(events).await {
            warn!(error = %e, "could not announce a change to the pool");
        }
    }

    /// Applies a live consequence to this server's connections at once, unless it needs the database (an
    /// invitation names its room by id; a change of feeds reloads them): that one is returned, for
    /// [`Service::apply_reading`] on a task of its own, so that the dispatcher delivering every room's messages
    /// never waits for a read.
    pub(crate) fn apply_live(&self, event: ClusterEvent) -> Option<ClusterEvent> {
        match event {
            ClusterEvent::AccessChanged { origin, scope } => self.apply_access(&origin, &scope),
            ClusterEvent::MessagesRemoved { room_id, ids } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::MessagesRemoved { room: room_id, ids });
            }
            ClusterEvent::MessagesReplaced { room_id, ids, text } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::MessageReplaced { room: room_id, ids, text });
            }
            ClusterEvent::RoomCleared { room_id, end_ts } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::RoomCleared { room: room_id, end_ts });
            }
            ClusterEvent::Follow { address, room_id, follow } => self.hub.set_watch(&address, &room_id, follow),
            // This server's own presence is in its roster already.
            ClusterEvent::Presence { server, room_id, address, display_name, present } => {
                if !self.is_this_server(&server) {
                    self.hub.remote_presence(&server, &room_id, &address, &display_name, present);
                }
            }
            ClusterEvent::ServerGone { server } => {
                if !self.is_this_server(&server) {
                    self.hub.server_gone(&server);
                }
            }
            reading @ (ClusterEvent::Invitation { .. } | ClusterEvent::FeedsChanged { .. }) => return Some(reading),
        }
        None
    }

    /// Applies what [`Service::apply_live`] left because it reads the database. Invitations come in bursts for one
    /// room (a room inviting a domain): `room` keeps the last room read, so a burst reads it once.
    pub(crate) async fn apply_reading(&self, event: ClusterEvent, room: &mut Option<pchat_store::RoomRecord>) {
        match event {
            ClusterEvent::Invitation { id, address, room_id, created_at } => {
                if room.as_ref().is_none_or(|r| r.id != room_id) {
                    *room = self.store.get_room(&room_id).await.ok().flatten();
                }
                if let Some(room) = room.as_ref().filter(|r| r.id == room_id) {
                    self.hub.to_user(&address, &LiveEvent::Invitation { id, room: room.clone(), created_at });
                }
            }
            ClusterEvent::FeedsChanged { owner: Some(owner) } => self.reload_feeds(&owner).await,
            ClusterEvent::FeedsChanged { owner: None } => self.reload_all_feeds().await,
            // The rest never needs a read (`apply_live` keeps them).
            other => {
                let _ = self.apply_live(other);
            }
        }
    }
}
