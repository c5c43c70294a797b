//! Access decisions that hold on live connections. Every change that can narrow what someone may see or read
//! goes through one path, [`Service::changed_access`]: it names the connections concerned (an [`AccessScope`]),
//! flags them on this server at once, before the change is acknowledged, and tells the pool's other servers,
//! which flag theirs when the notification arrives (in commit order, before any later message). A flagged
//! connection holds its queued frames and re-evaluates itself ([`Service::review`]): rooms it may no longer read
//! are left with `removed_from_room` (or `room_disabled` / `room_deleted`), follows it may no longer read stop,
//! invitations to them are withdrawn, and a connection whose user was deleted, whose session ended or whose chat
//! was disabled is closed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pchat_store::{AccessScope, CategoryRecord, ClusterEvent, RoomRecord, Store, StoreResult};

use crate::hub::{Conn, LiveEvent};
use crate::rooms::access_to;
use crate::{Service, ServiceResult};

/// Most rooms kept in the room cache; when full it starts over (it is only a cache).
const ROOM_CACHE_CAPACITY: usize = 20_000;

/// A room and its category as read together.
#[derive(Debug)]
pub(crate) struct RoomEntry {
    pub(crate) room: RoomRecord,
    pub(crate) category: CategoryRecord,
}

/// Rooms with their categories for reviews, so that re-evaluating 10,000 connections of one room reads it once.
/// Entries go when a change names their room or category; a read that raced with such a change is returned to
/// its reader but not kept (the epoch moved), and its reader is reviewed again anyway.
#[derive(Default)]
pub(crate) struct RoomCache {
    epoch: AtomicU64,
    entries: std::sync::RwLock<HashMap<String, Arc<RoomEntry>>>,
}

impl RoomCache {
    pub(crate) async fn get(&self, store: &dyn Store, room_id: &str) -> StoreResult<Option<Arc<RoomEntry>>> {
        if let Ok(entries) = self.entries.read()
            && let Some(entry) = entries.get(room_id)
        {
            return Ok(Some(Arc::clone(entry)));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(room) = store.get_room(room_id).await? else { return Ok(None) };
        let Some(category) = store.get_category(&room.category_id).await? else { return Ok(None) };
        let entry = Arc::new(RoomEntry { room, category });
        if let Ok(mut entries) = self.entries.write()
            && self.epoch.load(Ordering::Acquire) == epoch
        {
            if entries.len() >= ROOM_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(room_id.to_owned(), Arc::clone(&entry));
        }
        Ok(Some(entry))
    }

    fn invalidate(&self, scope: &AccessScope) {
        if scope.rooms.is_empty() && scope.categories.is_empty() && !scope.everyone {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            if scope.everyone {
                entries.clear();
                return;
            }
            for room in &scope.rooms {
                entries.remove(room);
            }
            if !scope.categories.is_empty() {
                entries.retain(|_, e| !scope.categories.contains(&e.category.id));
            }
        }
    }
}

/// Why a connection is closed by a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The user was deleted.
    UserDeleted,
    /// The session the connection was opened with ended (signed out, ended by an administrator, expired, or
    /// ended by a password change).
    SessionEnded,
    /// The user's effective policy no longer enables chat.
    ChatDisabled,
}

impl CloseReason {
    /// A stable code, also used as the close frame's reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::UserDeleted => "user_deleted",
            Self::SessionEnded => "session_ended",
            Self::ChatDisabled => "chat_disabled_by_policy",
        }
    }
}

/// What a review decided: frames to write now (in this order), or that the connection ends.
#[derive(Debug, Default)]
pub struct Review {
    pub close: Option<CloseReason>,
    pub events: Vec<LiveEvent>,
}

impl Service {
    /// The one path for every change that can narrow access: flags the connections of this server that `scope`
    /// concerns (so none writes another frame before re-evaluating itself), then tells the other servers of the
    /// pool. Called after the change committed and before it is acknowledged.
    pub(crate) async fn changed_access(&self, scope: AccessScope) {
        if scope.is_empty() {
            return;
        }
        self.rooms.invalidate(&scope);
        self.hub.mark(&scope);
        self.announce(ClusterEvent::AccessChanged { origin: self.instance.clone(), scope }).await;
    }

    /// Applies another server's access change (ours were applied when made).
    pub(crate) fn apply_access(&self, origin: &str, scope: &AccessScope) {
        if origin == self.instance {
            return;
        }
        self.rooms.invalidate(scope);
        self.hub.mark(scope);
    }

    /// Re-evaluates a flagged connection: resolves its user again when the change concerned them, checks the
    /// rooms it joined or follows that the change concerned, and leaves those it may no longer read.
    pub async fn review(&self, conn: &Arc<Conn>) -> ServiceResult<Review> {
        let pending = conn.take_review();
        let mut out = Review::default();
        if pending.is_empty() {
            return Ok(out);
        }
        if pending.caller {
            let Some(fresh) = self.caller_for(conn.address()).await? else {
                out.close = Some(CloseReason::UserDeleted);
                return Ok(out);
            };
            if !self.session_alive(&conn.session).await? {
                out.close = Some(CloseReason::SessionEnded);
                return Ok(out);
            }
            if !fresh.chat_enabled {
                out.close = Some(CloseReason::ChatDisabled);
                return Ok(out);
            }
            conn.set_caller(fresh);
        }
        let caller = conn.caller();
        let rooms: BTreeSet<String> = conn.joined_rooms().into_iter().chain(conn.watched_rooms()).collect();
        let mut lost = BTreeSet::new();
        for room_id in rooms {
            let named = pending.rooms.contains(&room_id);
            if !pending.caller && !named && pending.categories.is_empty() {
                continue;
            }
            let entry = self.rooms.get(&*self.store, &room_id).await?;
            let removal = match &entry {
                None => Some(LiveEvent::RoomDeleted { room: room_id.clone() }),
                Some(e) => {
                    if !pending.caller && !named && !pending.categories.contains(&e.category.id) {
                        continue;
                    }
                    if access_to(&caller, &e.category, &e.room).read {
                        if named && conn.is_joined(&room_id) {
                            out.events.push(LiveEvent::RoomUpdated(e.room.clone()));
                        }
                        None
                    } else if e.room.disabled {
                        Some(LiveEvent::RoomDisabled { room: room_id.clone() })
                    } else {
                        Some(LiveEvent::RemovedFromRoom { room: room_id.clone() })
                    }
                }
            };
            let Some(removal) = removal else { continue };
            let joined = self.hub.unsubscribe(conn, &room_id);
            let watched = conn.is_watching(&room_id);
            if watched {
                self.hub.watch(conn, &room_id, false);
            }
            if joined || watched {
                out.events.push(removal);
            }
            lost.insert(room_id);
        }
        if pending.caller || !lost.is_empty() {
            out.events.extend(self.withdraw_invitations(conn, &caller, pending.caller, &lost).await?);
        }
        Ok(out)
    }

    /// Withdraws the user's invitations to rooms they may no longer read: all of them when the user changed,
    /// otherwise those to the rooms just lost.
    async fn withdraw_invitations(
        &self,
        conn: &Conn,
        caller: &crate::Caller,
        all: bool,
        lost: &BTreeSet<String>,
    ) -> ServiceResult<Vec<LiveEvent>> {
        let mut unreadable = vec![];
        for inv in self.store.invitations(conn.address(), 0, crate::messages::MAX_PAGE).await? {
            if !all && !lost.contains(&inv.room_id) {
                continue;
            }
            let readable = match self.rooms.get(&*self.store, &inv.room_id).await? {
                Some(e) => access_to(caller, &e.category, &e.room).read,
                None => false,
            };
            if !readable {
                unreadable.push(inv.room_id);
            }
        }
        if unreadable.is_empty() {
            return Ok(vec![]);
        }
        let withdrawn = self.store.withdraw_invitations(conn.address(), &unreadable).await?;
        Ok(withdrawn.into_iter().map(|inv| LiveEvent::InvitationWithdrawn { id: inv.id, room: inv.room_id }).collect())
    }

    /// Whether a room may be read by the caller, through the room cache (for live paths).
    pub(crate) async fn may_read_cached(&self, caller: &crate::Caller, room_id: &str) -> ServiceResult<bool> {
        Ok(match self.rooms.get(&*self.store, room_id).await? {
            Some(e) => access_to(caller, &e.category, &e.room).read,
            None => false,
        })
    }
}
