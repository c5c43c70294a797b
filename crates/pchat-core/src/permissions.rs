//! The permission table of PRODUCT.md §3: who may see, read (join, history, follow), post in and manage a room.
//!
//! Decisions taken where the specification leaves room (recorded in ARCHITECTURE.md):
//! - Role lists only count for users who are still in the category's scope: narrowing the scope or adding a deny
//!   entry (an ethical wall) takes effect at once, without rewriting role lists.
//! - Administrators see and manage every room, but join, read and post like anyone else: as in Lync, an
//!   administrator adds themself to a room to take part in it.
//! - A disabled room is hidden from everyone but administrators and its own managers (so that a manager who
//!   disabled a room can enable it again); nobody can read or post in it.
//! - Presenters read in every room type and post in auditoriums; in a normal room every reader posts.

use crate::principal::{Identity, Principal, Scope};
use crate::room::{Privacy, RoomType};

/// The parts of a room that access depends on.
#[derive(Debug, Clone, Copy)]
pub struct RoomAcl<'a> {
    pub privacy: Privacy,
    pub room_type: RoomType,
    pub disabled: bool,
    pub members: &'a [Principal],
    pub managers: &'a [Principal],
    pub presenters: &'a [Principal],
}

/// What one user may do with one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// Find it in the directory and read its properties.
    pub see: bool,
    /// Join it, read its history, follow it.
    pub read: bool,
    pub post: bool,
    /// Change its properties and role lists, disable and enable it.
    pub manage: bool,
}

pub fn decide(who: &Identity, is_admin: bool, scope: &Scope, room: &RoomAcl<'_>) -> Access {
    let in_scope = scope.contains(who);
    let member = in_scope && who.matches_any(room.members);
    let presenter = in_scope && who.matches_any(room.presenters);
    let manager = in_scope && who.matches_any(room.managers);

    let manage = is_admin || manager;
    if room.disabled {
        return Access { see: manage, read: false, post: false, manage };
    }
    let (see, read) = match room.privacy {
        Privacy::Open => (in_scope, in_scope),
        Privacy::Closed => (in_scope, member || presenter),
        Privacy::Secret => (member || presenter || manager, member || presenter),
    };
    let post = read
        && match room.room_type {
            RoomType::Normal => true,
            RoomType::Auditorium => presenter,
        };
    Access { see: see || is_admin || manager, read, post, manage }
}

/// Whether a user may create rooms in a category: its creators who are in scope, and administrators.
pub fn may_create_room(who: &Identity, is_admin: bool, scope: &Scope, creators: &[Principal]) -> bool {
    is_admin || (scope.contains(who) && who.matches_any(creators))
}

/// Roster suppression with hysteresis (Lync's `ParticipantUpdateLimit`): above `limit` connected participants
/// roster updates stop; they resume only once the count falls below 80 % of the limit.
pub fn roster_suppressed(currently_suppressed: bool, participants: usize, limit: u32) -> bool {
    let limit = limit as usize;
    if currently_suppressed {
        // Resume strictly below 80 %: participants < 0.8 * limit, computed in integers.
        participants * 5 >= limit * 4
    } else {
        participants > limit
    }
}

#[cfg(test)]
mod tests;
