//! What a user sees of their own: rooms they belong to or follow with unread counts, follows, read marks,
//! invitations, and opening a live connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pchat_core::Identity;
use pchat_store::{ClusterEvent, InvitationRecord, RoomRecord};

use crate::hub::Conn;
use crate::rooms::{access_to, scope_of};
use crate::{Caller, Service, ServiceError, ServiceResult};

/// A room in the caller's own list.
#[derive(Debug, Clone)]
pub struct MyRoom {
    pub room: RoomRecord,
    pub following: bool,
    pub unread: i64,
    pub last_seq: i64,
}

impl Service {
    /// Rooms the caller is a member, presenter or manager of, or follows. Unread counts messages after the
    /// caller's read mark (`last_seq - read mark`; removed messages still count until read past).
    pub async fn my_rooms(&self, caller: &Caller) -> ServiceResult<Vec<MyRoom>> {
        Self::require_chat(caller)?;
        let follows: HashSet<String> = self.store.follows(caller.address()).await?.into_iter().collect();
        let marks: HashMap<String, i64> = self.store.read_marks(caller.address()).await?.into_iter().collect();
        let categories = self.store.list_categories().await?;
        // Candidates from the role-list index: rooms naming the user, a group of theirs, their domain or
        // everyone, and the rooms they follow; access decides as ever.
        let principals = role_principals(&caller.identity);
        let followed: Vec<String> = follows.iter().cloned().collect();
        let mut out = vec![];
        for room in self.store.rooms_of(&principals, &followed).await? {
            let Some(category) = categories.iter().find(|c| c.id == room.category_id) else { continue };
            let access = access_to(caller, category, &room);
            let in_scope = scope_of(category).contains(&caller.identity);
            let listed = in_scope
                && [&room.members, &room.managers, &room.presenters].iter().any(|l| caller.identity.matches_any(l));
            let following = follows.contains(&room.id);
            if !access.see || !(listed || following) {
                continue;
            }
            let last_seq = self.store.last_seq(&room.id).await?;
            let unread = if access.read { (last_seq - marks.get(&room.id).copied().unwrap_or(0)).max(0) } else { 0 };
            out.push(MyRoom { room, following, unread, last_seq });
        }
        Ok(out)
    }

    /// Follows a room the caller may read, or stops following one.
    pub async fn set_follow(&self, caller: &Caller, reference: &str, follow: bool) -> ServiceResult<()> {
        let room_id = if follow {
            self.readable_room(caller, reference).await?.0.id
        } else {
            Self::require_chat(caller)?;
            self.room_view(caller, reference).await?.0.room.id
        };
        self.store.set_follow(caller.address(), &room_id, follow).await?;
        self.announce(ClusterEvent::Follow { address: caller.address().to_owned(), room_id, follow }).await;
        Ok(())
    }

    pub async fn mark_read(&self, caller: &Caller, reference: &str, seq: i64) -> ServiceResult<()> {
        if seq < 0 {
            return Err(ServiceError::validation("seq", "must not be negative"));
        }
        let room = self.readable_room(caller, reference).await.map_err(|e| match e {
            ServiceError::NotFound(_) => ServiceError::validation("room", format!("no room {reference}")),
            other => other,
        })?;
        let last = self.store.last_seq(&room.0.id).await?;
        Ok(self.store.mark_read(caller.address(), &room.0.id, seq.min(last)).await?)
    }

    /// Pending invitations after `after_id`, for rooms the caller may still see.
    pub async fn invitations(
        &self,
        caller: &Caller,
        after_id: i64,
        limit: u32,
    ) -> ServiceResult<Vec<(InvitationRecord, RoomRecord)>> {
        Self::require_chat(caller)?;
        let mut out = vec![];
        // Only rooms the caller may read: an invitation to a room they lost is withdrawn.
        for inv in self.store.invitations(caller.address(), after_id, limit).await? {
            if let Ok((view, _)) = self.room_view(caller, &inv.room_id).await
                && view.access.read
            {
                out.push((inv, view.room));
            }
        }
        Ok(out)
    }

    /// Opens a live connection for the caller, signed in with `token`, watching the rooms they follow and may
    /// still read. `marks_seen` is [`crate::Hub::marks`] as read before the caller was resolved.
    pub async fn connect(&self, caller: Caller, token: &str, marks_seen: u64) -> ServiceResult<Arc<Conn>> {
        Self::require_chat(&caller)?;
        let follows = self.store.follows(caller.address()).await?;
        let mut readable = vec![];
        for room in follows {
            if self.may_read_cached(&caller, &room).await? {
                readable.push(room);
            }
        }
        let conn = self.hub.connect(caller, crate::auth::token_hash(token), marks_seen);
        for room in readable {
            self.hub.watch(&conn, &room, true);
        }
        Ok(conn)
    }
}

/// How role lists can name someone, as stored: their address, a group of theirs, their domain, everyone.
pub(crate) fn role_principals(who: &Identity) -> Vec<String> {
    let mut principals = vec![who.address.to_string(), format!("domain:{}", who.address.domain()), "*".to_owned()];
    principals.extend(who.groups.iter().map(|g| format!("group:{g}")));
    principals
}
