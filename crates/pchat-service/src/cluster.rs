//! Live consequences of changes, for every server of a pool: the service *announces* them through the store and
//! *applies* them when they come back through the event feed, so one server or many take the same path. An event
//! names what changed; applying it reads the current state, so a late or repeated event does no harm.

use pchat_store::ClusterEvent;
use tracing::warn;

use crate::Service;
use crate::hub::LiveEvent;
use crate::rooms::access_to;

impl Service {
    /// Publishes a live consequence to every server. A failure is logged, not returned: the change itself is
    /// committed, and connections meet the new state at their next operation anyway.
    pub(crate) async fn announce(&self, event: ClusterEvent) {
        if let Err(e) = self.store.publish(event).await {
            warn!(error = %e, "could not announce a change to the pool");
        }
    }

    /// Applies a live consequence to this server's connections.
    pub(crate) async fn apply(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::RoomChanged { room_id } => self.apply_room_change(&room_id).await,
            ClusterEvent::RoomDeleted { room_id } => {
                self.hub.evict(&room_id, &LiveEvent::RoomDeleted { room: room_id.clone() }, |_| true);
                self.hub.forget_room(&room_id);
            }
            ClusterEvent::CategoryChanged { category_id } => {
                let Ok(Some(category)) = self.store.get_category(&category_id).await else { return };
                let Ok(rooms) = self.all_rooms(Some(&category_id)).await else { return };
                // A narrower scope or a new deny entry takes effect at once for people joined to its rooms.
                for room in rooms {
                    self.hub.evict(&room.id, &LiveEvent::RemovedFromRoom { room: room.id.clone() }, |caller| {
                        !access_to(caller, &category, &room).read
                    });
                }
            }
            ClusterEvent::MessagesRemoved { room_id, ids } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::MessagesRemoved { room: room_id, ids });
            }
            ClusterEvent::MessagesReplaced { room_id, ids, text } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::MessageReplaced { room: room_id, ids, text });
            }
            ClusterEvent::RoomCleared { room_id, end_ts } => {
                self.hub.broadcast(&room_id.clone(), &LiveEvent::RoomCleared { room: room_id, end_ts });
            }
            ClusterEvent::Invitation { id, address, room_id, created_at } => {
                if let Ok(Some(room)) = self.store.get_room(&room_id).await {
                    self.hub.to_user(&address, &LiveEvent::Invitation { id, room, created_at });
                }
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
        }
    }

    /// A disabled room loses everyone at once; otherwise those who lost access are removed and the rest get the
    /// new properties.
    async fn apply_room_change(&self, room_id: &str) {
        let Ok(Some(room)) = self.store.get_room(room_id).await else { return };
        let Ok(Some(category)) = self.store.get_category(&room.category_id).await else { return };
        if room.disabled {
            self.hub.evict(&room.id, &LiveEvent::RoomDisabled { room: room.id.clone() }, |_| true);
            return;
        }
        self.hub.evict(&room.id, &LiveEvent::RemovedFromRoom { room: room.id.clone() }, |caller| {
            !access_to(caller, &category, &room).read
        });
        self.hub.broadcast(&room.id, &LiveEvent::RoomUpdated(room.clone()));
    }
}
