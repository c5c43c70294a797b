//! The live fan-out hub: which connections are joined to (or follow) which rooms, and delivery to them.
//!
//! Each event is encoded once by the front end's [`Encoder`] and the same `Bytes` is queued to every recipient.
//! Each connection has one bounded queue; delivery never waits: a connection whose queue is full is dropped from
//! that room and told to resync (it resumes from history with `after_seq`), so a slow client never slows a room.
//! Locks are per room and held only to copy or edit a subscriber list, never across a send that could wait.
//!
//! Access can narrow while a connection is open. [`Hub::mark`] flags the connections a change concerns, in memory
//! and without waiting; each flagged connection's own task then re-evaluates itself ([`Service::review`]) before it
//! writes another frame, so frames queued meanwhile are held, not sent, until it is known they may be.
//!
//! [`Service::review`]: crate::Service::review

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use pchat_core::permissions::roster_suppressed;
use pchat_store::{AccessScope, MessageRecord, RoomRecord};
use tokio::sync::{Notify, mpsc};

use crate::Caller;

/// A live event as the service sees it; front ends encode it into their wire frame.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    Message(MessageRecord),
    RoomUpdated(RoomRecord),
    RoomDisabled {
        room: String,
    },
    RoomDeleted {
        room: String,
    },
    RemovedFromRoom {
        room: String,
    },
    ParticipantJoined {
        room: String,
        address: String,
        display_name: String,
    },
    ParticipantLeft {
        room: String,
        address: String,
        display_name: String,
    },
    Activity {
        room: String,
        last_seq: i64,
    },
    Invitation {
        id: i64,
        room: RoomRecord,
        created_at: i64,
    },
    MessagesRemoved {
        room: String,
        ids: Vec<String>,
    },
    MessageReplaced {
        room: String,
        ids: Vec<String>,
        text: String,
    },
    RoomCleared {
        room: String,
        end_ts: i64,
    },
    /// An invitation to a room the user may no longer read was withdrawn.
    InvitationWithdrawn {
        id: i64,
        room: String,
    },
    /// A new message matched one of the user's topic feeds.
    FeedMatch {
        feed: String,
        feed_name: String,
        hit: crate::SearchHit,
    },
}

impl LiveEvent {
    /// The room an event is about, if it is about one.
    pub fn room(&self) -> Option<&str> {
        match self {
            Self::Message(m) => Some(&m.room_id),
            Self::RoomUpdated(r) => Some(&r.id),
            Self::Invitation { .. } => None,
            Self::FeedMatch { hit, .. } => Some(&hit.message.room_id),
            Self::RoomDisabled { room }
            | Self::RoomDeleted { room }
            | Self::RemovedFromRoom { room }
            | Self::ParticipantJoined { room, .. }
            | Self::ParticipantLeft { room, .. }
            | Self::Activity { room, .. }
            | Self::MessagesRemoved { room, .. }
            | Self::MessageReplaced { room, .. }
            | Self::RoomCleared { room, .. }
            | Self::InvitationWithdrawn { room, .. } => Some(room),
        }
    }
}

pub type Encoder = Box<dyn Fn(&LiveEvent) -> Bytes + Send + Sync>;

/// What a connection needs to know about a message frame without parsing it.
#[derive(Debug, Clone)]
pub struct MessageMeta {
    pub room: Arc<str>,
    /// So the connection can skip what it already sent.
    pub seq: i64,
    /// Commit time (µs), for the delivery latency metric.
    pub ts: i64,
}

/// What a queued frame is about, so that the connection can tell whether it may still go out.
#[derive(Debug, Clone)]
pub enum FrameKind {
    /// A message of a joined room: written only while the room is joined, and only past what was sent.
    Message(MessageMeta),
    /// Any other event of a joined room (roster, room changes, moderation): written only while it is joined.
    Room(Arc<str>),
    /// Activity of a followed room: written only while the connection follows it and has not joined it.
    Activity(Arc<str>),
    /// Addressed to the user (invitations).
    User,
    /// A topic feed's match in a room: written only while the user may read the room.
    Feed(Arc<str>),
}

/// One queued frame for a connection.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: FrameKind,
    pub bytes: Bytes,
}

/// What a connection must re-evaluate before it writes another frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingReview {
    /// Resolve the caller again (groups, roles, policy, session) and check every room.
    pub caller: bool,
    /// Rooms that changed (or were deleted): check them, and send their new properties.
    pub rooms: HashSet<String>,
    /// Categories that changed: check every room of theirs.
    pub categories: HashSet<String>,
}

impl PendingReview {
    pub fn is_empty(&self) -> bool {
        !self.caller && self.rooms.is_empty() && self.categories.is_empty()
    }
}

/// A live connection of a signed-in user.
pub struct Conn {
    pub id: u64,
    address: Arc<str>,
    display_name: String,
    /// The hash of the bearer token the connection was opened with: it lives only as long as that session.
    pub(crate) session: String,
    /// The user as last resolved (at connection, then at every review).
    caller: RwLock<Arc<Caller>>,
    /// Frames waiting for the connection's task.
    pub frames: FrameQueue,
    joined: Mutex<HashSet<String>>,
    watching: Mutex<HashSet<String>>,
    overflowed: Mutex<Vec<String>>,
    review: Mutex<PendingReview>,
    /// Set (under `review`'s lock) while a review is pending: read on every frame, so it is an atomic.
    review_pending: AtomicBool,
    /// Signalled when there is something for the connection's task: a frame queued, a review requested, rooms
    /// dropped for overflow ([`Conn::take_overflowed`]). One signal for all three, so that a task waiting for
    /// work registers one waiter, not three (this is per message and recipient in a large room).
    pub attention: Notify,
}

impl Conn {
    pub fn take_overflowed(&self) -> Vec<String> {
        self.overflowed.lock().map(|mut o| std::mem::take(&mut *o)).unwrap_or_default()
    }

    pub fn is_joined(&self, room: &str) -> bool {
        self.joined.lock().is_ok_and(|j| j.contains(room))
    }

    pub fn is_watching(&self, room: &str) -> bool {
        self.watching.lock().is_ok_and(|w| w.contains(room))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The hash of the token the connection was opened with.
    pub fn session_hash(&self) -> String {
        self.session.clone()
    }

    /// The user as of the last review.
    pub fn caller(&self) -> Arc<Caller> {
        self.caller.read().map(|c| Arc::clone(&c)).unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    pub(crate) fn set_caller(&self, caller: Caller) {
        if let Ok(mut current) = self.caller.write() {
            *current = Arc::new(caller);
        }
    }

    pub(crate) fn joined_rooms(&self) -> Vec<String> {
        self.joined.lock().map(|j| j.iter().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn watched_rooms(&self) -> Vec<String> {
        self.watching.lock().map(|w| w.iter().cloned().collect()).unwrap_or_default()
    }

    fn follows_or_joined_any(&self) -> bool {
        self.joined.lock().is_ok_and(|j| !j.is_empty()) || self.watching.lock().is_ok_and(|w| !w.is_empty())
    }

    /// Whether the connection must re-evaluate its access before writing anything else.
    pub fn review_pending(&self) -> bool {
        self.review_pending.load(Ordering::Acquire)
    }

    /// Takes what is to be re-evaluated; a request arriving afterwards makes another review pending.
    pub(crate) fn take_review(&self) -> PendingReview {
        let Ok(mut review) = self.review.lock() else {
            return PendingReview { caller: true, ..PendingReview::default() };
        };
        self.review_pending.store(false, Ordering::Release);
        std::mem::take(&mut *review)
    }

    /// Asks for the user to be resolved again (and every room checked) before the next frame.
    pub fn request_caller_review(&self) {
        self.request_review(|r| r.caller = true);
    }

    pub(crate) fn request_review(&self, add: impl FnOnce(&mut PendingReview)) {
        if let Ok(mut review) = self.review.lock() {
            add(&mut review);
            self.review_pending.store(true, Ordering::Release);
        }
        self.attention.notify_one();
    }

    pub(crate) fn push(&self, frame: Frame) -> bool {
        let queued = self.frames.push(frame);
        if queued {
            self.attention.notify_one();
        }
        queued
    }
}

/// A connection's bounded queue of frames: filled by the hub, which never waits (a full queue refuses) and signals
/// [`Conn::attention`], and drained by the connection's task. It holds no memory while it has never been used and
/// keeps only a few slots after: a tokio channel keeps a block of 32 slots (2.3 KiB) per connection, idle or not,
/// which was a sixth of an idle connection's memory.
pub struct FrameQueue {
    frames: Mutex<VecDeque<Frame>>,
    capacity: usize,
}

impl FrameQueue {
    fn new(capacity: usize) -> Self {
        Self { frames: Mutex::new(VecDeque::new()), capacity }
    }

    /// Queues a frame unless the queue is full.
    fn push(&self, frame: Frame) -> bool {
        let Ok(mut frames) = self.frames.lock() else { return false };
        if frames.len() >= self.capacity {
            return false;
        }
        frames.push_back(frame);
        true
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.lock().map_or(true, |f| f.is_empty())
    }

    /// The next frame, if one is waiting. A queue emptied after a burst gives its memory back.
    pub fn try_pop(&self) -> Option<Frame> {
        let mut frames = self.frames.lock().ok()?;
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > 16 {
            *frames = VecDeque::new();
        }
        frame
    }
}

/// A room's participants across the pool: those connected here and those connected through other servers.
struct Roster {
    /// Connected here: address → (connections, display name).
    present: HashMap<String, (usize, String)>,
    /// Connected through other servers of the pool: address → (servers, display name).
    remote: HashMap<String, (HashSet<String>, String)>,
    suppressed: bool,
    /// The participant update limit in force at the latest join or roster request.
    limit: u32,
}

impl Default for Roster {
    fn default() -> Self {
        Self {
            present: HashMap::new(),
            remote: HashMap::new(),
            suppressed: false,
            limit: pchat_core::ChatConfig::default().participant_update_limit,
        }
    }
}

impl Roster {
    fn contains(&self, address: &str) -> bool {
        self.present.contains_key(address) || self.remote.contains_key(address)
    }

    /// Participants pool-wide, each counted once.
    fn count(&self) -> usize {
        self.present.len() + self.remote.keys().filter(|a| !self.present.contains_key(*a)).count()
    }

    fn resuppress(&mut self) {
        self.suppressed = roster_suppressed(self.suppressed, self.count(), self.limit);
    }
}

/// A user's presence in a room through this server changed: their first connection joined it, or their last one
/// left. The pool's other servers learn it through [`Hub::presence_changes`].
#[derive(Debug, Clone)]
pub struct PresenceChange {
    pub room: String,
    pub address: String,
    pub display_name: String,
    pub present: bool,
}

#[derive(Default)]
struct RoomHub {
    subscribers: RwLock<Vec<Arc<Conn>>>,
    watchers: RwLock<Vec<Arc<Conn>>>,
    roster: Mutex<Roster>,
}

pub struct Hub {
    encode: Encoder,
    slow_consumer_drops: prometheus_client::metrics::counter::Counter,
    queue_len: usize,
    next_id: AtomicU64,
    rooms: RwLock<HashMap<String, Arc<RoomHub>>>,
    users: Mutex<HashMap<String, Vec<Weak<Conn>>>>,
    /// Moves on at every [`Hub::mark`], so that a connection resolved before a mark can tell it missed one.
    marks: AtomicU64,
    presence: Mutex<Option<mpsc::UnboundedSender<PresenceChange>>>,
    parts: Mutex<Option<mpsc::UnboundedSender<(String, String)>>>,
}

fn remove_conn(list: &RwLock<Vec<Arc<Conn>>>, id: u64) -> bool {
    let Ok(mut list) = list.write() else {
        return false;
    };
    let before = list.len();
    list.retain(|c| c.id != id);
    list.len() != before
}

fn snapshot(list: &RwLock<Vec<Arc<Conn>>>) -> Vec<Arc<Conn>> {
    list.read().map(|l| l.clone()).unwrap_or_default()
}

impl Hub {
    pub(crate) fn new(
        encode: Encoder,
        queue_len: usize,
        slow_consumer_drops: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            encode,
            slow_consumer_drops,
            queue_len: queue_len.max(16),
            next_id: AtomicU64::new(1),
            rooms: RwLock::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            marks: AtomicU64::new(0),
            presence: Mutex::new(None),
            parts: Mutex::new(None),
        }
    }

    /// From now on, every connection leaving a room (part, disconnect, removal) is reported here as
    /// (room, user), for compliance (PART).
    pub fn part_events(&self) -> mpsc::UnboundedReceiver<(String, String)> {
        let (sender, parts) = mpsc::unbounded_channel();
        if let Ok(mut slot) = self.parts.lock() {
            *slot = Some(sender);
        }
        parts
    }

    /// From now on, every change of a user's presence in a room on this server is also sent here, in order.
    pub fn presence_changes(&self) -> mpsc::UnboundedReceiver<PresenceChange> {
        let (sender, changes) = mpsc::unbounded_channel();
        if let Ok(mut presence) = self.presence.lock() {
            *presence = Some(sender);
        }
        changes
    }

    fn presence_changed(&self, room: &str, conn: &Conn, present: bool) {
        if let Ok(presence) = self.presence.lock()
            && let Some(sender) = presence.as_ref()
        {
            let _ = sender.send(PresenceChange {
                room: room.to_owned(),
                address: conn.address().to_owned(),
                display_name: conn.display_name.clone(),
                present,
            });
        }
    }

    /// Registers a connection opened with the session `session` (a token hash) for a caller resolved before
    /// [`Hub::marks`] read `marks_seen`; frames for it arrive on the returned receiver. If a change was marked since,
    /// the connection starts with a review pending, so nothing resolved before the change is trusted.
    pub fn connect(&self, caller: Caller, session: String, marks_seen: u64) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            address: Arc::from(caller.address()),
            display_name: caller.display_name.clone(),
            session,
            caller: RwLock::new(Arc::new(caller)),
            frames: FrameQueue::new(self.queue_len),
            joined: Mutex::new(HashSet::new()),
            watching: Mutex::new(HashSet::new()),
            overflowed: Mutex::new(Vec::new()),
            review: Mutex::new(PendingReview::default()),
            review_pending: AtomicBool::new(false),
            attention: Notify::new(),
        });
        if let Ok(mut users) = self.users.lock() {
            let list = users.entry(conn.address().to_owned()).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&conn));
        }
        if self.marks() != marks_seen {
            conn.request_review(|r| r.caller = true);
        }
        conn
    }

    /// How many changes have been marked so far.
    pub fn marks(&self) -> u64 {
        self.marks.load(Ordering::Acquire)
    }

    /// Flags every connection the scope concerns for review. Reads only memory and waits for nothing: applying a
    /// change costs a walk over this server's connections at most, whatever the size of the groups involved.
    pub fn mark(&self, scope: &AccessScope) {
        if scope.is_empty() {
            return;
        }
        self.marks.fetch_add(1, Ordering::AcqRel);
        let everything = scope.everyone || !scope.groups.is_empty() || !scope.categories.is_empty();
        if everything {
            for conn in self.all_conns() {
                let caller = scope.everyone
                    || scope.users.iter().any(|u| u.as_str() == conn.address())
                    || (!scope.groups.is_empty() && {
                        let current = conn.caller();
                        scope.groups.iter().any(|g| current.identity.groups.contains(g))
                    });
                let categories = !scope.categories.is_empty() && conn.follows_or_joined_any();
                if caller || categories {
                    conn.request_review(|r| {
                        r.caller |= caller;
                        if categories {
                            r.categories.extend(scope.categories.iter().cloned());
                        }
                    });
                }
            }
        } else {
            for user in &scope.users {
                for conn in self.user_conns(user) {
                    conn.request_review(|r| r.caller = true);
                }
            }
        }
        for room in &scope.rooms {
            let Some(hub) = self.room(room) else { continue };
            let mut conns = snapshot(&hub.subscribers);
            conns.extend(snapshot(&hub.watchers));
            for conn in conns {
                conn.request_review(|r| {
                    r.rooms.insert(room.clone());
                });
            }
        }
    }

    fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.users
            .lock()
            .map(|u| u.values().flat_map(|l| l.iter().filter_map(Weak::upgrade)).collect())
            .unwrap_or_default()
    }

    /// Wakes every connection's task (at shutdown, so that each sees the signal and closes).
    pub fn wake_all(&self) {
        for conn in self.all_conns() {
            conn.attention.notify_one();
        }
    }

    /// Removes a connection from every room it joined or watched.
    pub fn disconnect(&self, conn: &Arc<Conn>) {
        let joined: Vec<String> = conn.joined.lock().map(|j| j.iter().cloned().collect()).unwrap_or_default();
        for room in joined {
            self.unsubscribe(conn, &room);
        }
        let watching: Vec<String> = conn.watching.lock().map(|mut w| w.drain().collect()).unwrap_or_default();
        for room in watching {
            if let Some(hub) = self.room(&room) {
                remove_conn(&hub.watchers, conn.id);
            }
        }
        if let Ok(mut users) = self.users.lock()
            && let Some(list) = users.get_mut(conn.address())
        {
            list.retain(|w| w.upgrade().is_some_and(|c| c.id != conn.id));
            if list.is_empty() {
                users.remove(conn.address());
            }
        }
    }

    fn room(&self, room: &str) -> Option<Arc<RoomHub>> {
        self.rooms.read().ok().and_then(|r| r.get(room).cloned())
    }

    fn room_or_create(&self, room: &str) -> Option<Arc<RoomHub>> {
        if let Some(hub) = self.room(room) {
            return Some(hub);
        }
        let mut rooms = self.rooms.write().ok()?;
        Some(Arc::clone(rooms.entry(room.to_owned()).or_default()))
    }

    /// Subscribes the connection to a room's live events and enters it in the roster. Returns false if it was
    /// already subscribed.
    pub fn subscribe(&self, conn: &Arc<Conn>, room: &str, participant_update_limit: u32) -> bool {
        let Ok(mut joined) = conn.joined.lock() else {
            return false;
        };
        if !joined.insert(room.to_owned()) {
            return false;
        }
        drop(joined);
        let Some(hub) = self.room_or_create(room) else {
            return false;
        };
        if let Ok(mut subs) = hub.subscribers.write() {
            subs.push(Arc::clone(conn));
        }
        let (first_here, announce) = {
            let Ok(mut roster) = hub.roster.lock() else {
                return true;
            };
            let address = conn.address();
            let elsewhere = roster.remote.contains_key(address);
            let entry = roster.present.entry(address.to_owned()).or_insert((0, conn.display_name.clone()));
            entry.0 += 1;
            let first = entry.0 == 1;
            roster.limit = participant_update_limit;
            roster.resuppress();
            (first, first && !elsewhere && !roster.suppressed)
        };
        if first_here {
            self.presence_changed(room, conn, true);
        }
        if announce {
            self.broadcast_room(
                &hub,
                &LiveEvent::ParticipantJoined {
                    room: room.to_owned(),
                    address: conn.address().to_owned(),
                    display_name: conn.display_name.clone(),
                },
                Some(conn.id),
            );
        }
        true
    }

    /// Leaves a room (part, disconnect, or being dropped); announces the departure if roster updates are on.
    pub fn unsubscribe(&self, conn: &Arc<Conn>, room: &str) -> bool {
        let was_joined = conn.joined.lock().is_ok_and(|mut j| j.remove(room));
        if !was_joined {
            return false;
        }
        let Some(hub) = self.room(room) else {
            return true;
        };
        remove_conn(&hub.subscribers, conn.id);
        self.roster_leave(&hub, room, conn);
        if let Ok(parts) = self.parts.lock()
            && let Some(sender) = parts.as_ref()
        {
            let _ = sender.send((room.to_owned(), conn.address().to_owned()));
        }
        true
    }

    fn roster_leave(&self, hub: &RoomHub, room: &str, conn: &Conn) {
        let (gone_here, announce) = {
            let Ok(mut roster) = hub.roster.lock() else {
                return;
            };
            let address = conn.address();
            let gone_here = match roster.present.get_mut(address) {
                Some(entry) if entry.0 > 1 => {
                    entry.0 -= 1;
                    false
                }
                Some(_) => {
                    roster.present.remove(address);
                    true
                }
                None => false,
            };
            // A departure is announced while updates are on; it may also bring the room back below 80 % of the
            // limit, after which updates resume.
            let was_suppressed = roster.suppressed;
            roster.resuppress();
            (gone_here, gone_here && !roster.remote.contains_key(address) && !was_suppressed)
        };
        if gone_here {
            self.presence_changed(room, conn, false);
        }
        if announce {
            self.broadcast_room(
                hub,
                &LiveEvent::ParticipantLeft {
                    room: room.to_owned(),
                    address: conn.address().to_owned(),
                    display_name: conn.display_name.clone(),
                },
                None,
            );
        }
    }

    /// Re-evaluates roster suppression against the configured limit (which an administrator may have changed).
    pub fn refresh_roster(&self, room: &str, participant_update_limit: u32) {
        if let Some(hub) = self.room(room)
            && let Ok(mut roster) = hub.roster.lock()
        {
            roster.limit = participant_update_limit;
            roster.resuppress();
        }
    }

    /// Applies another server's presence change to the room's roster, announcing the user's arrival or departure
    /// when it is one pool-wide.
    pub fn remote_presence(&self, server: &str, room: &str, address: &str, display_name: &str, present: bool) {
        let hub = if present { self.room_or_create(room) } else { self.room(room) };
        let Some(hub) = hub else { return };
        let announce = {
            let Ok(mut roster) = hub.roster.lock() else { return };
            let was_there = roster.contains(address);
            let was_suppressed = roster.suppressed;
            if present {
                let entry = roster
                    .remote
                    .entry(address.to_owned())
                    .or_insert_with(|| (HashSet::new(), display_name.to_owned()));
                entry.0.insert(server.to_owned());
            } else if let Some(entry) = roster.remote.get_mut(address) {
                entry.0.remove(server);
                if entry.0.is_empty() {
                    roster.remote.remove(address);
                }
            }
            roster.resuppress();
            let is_there = roster.contains(address);
            if present { !was_there && !roster.suppressed } else { was_there && !is_there && !was_suppressed }
        };
        if announce {
            let (room, address, display_name) = (room.to_owned(), address.to_owned(), display_name.to_owned());
            let event = if present {
                LiveEvent::ParticipantJoined { room, address, display_name }
            } else {
                LiveEvent::ParticipantLeft { room, address, display_name }
            };
            self.broadcast_room(&hub, &event, None);
        }
    }

    /// The other servers someone is present through, in any room.
    pub fn servers_present(&self) -> HashSet<String> {
        let rooms: Vec<Arc<RoomHub>> = self.rooms.read().map(|r| r.values().cloned().collect()).unwrap_or_default();
        let mut servers = HashSet::new();
        for hub in rooms {
            if let Ok(roster) = hub.roster.lock() {
                servers.extend(roster.remote.values().flat_map(|(s, _)| s.iter().cloned()));
            }
        }
        servers
    }

    /// Everyone present through `server` leaves every room (it restarted or stopped answering).
    pub fn server_gone(&self, server: &str) {
        let rooms: Vec<(String, Arc<RoomHub>)> =
            self.rooms.read().map(|r| r.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()).unwrap_or_default();
        for (room, hub) in rooms {
            let through: Vec<(String, String)> = hub
                .roster
                .lock()
                .map(|r| {
                    r.remote
                        .iter()
                        .filter(|(_, (s, _))| s.contains(server))
                        .map(|(a, (_, d))| (a.clone(), d.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for (address, display_name) in through {
                self.remote_presence(server, &room, &address, &display_name, false);
            }
        }
    }

    /// The connected participants of a room, or `None` when roster updates are suppressed.
    pub fn participants(&self, room: &str) -> Option<Vec<(String, String)>> {
        let Some(hub) = self.room(room) else {
            return Some(vec![]);
        };
        let roster = hub.roster.lock().ok()?;
        if roster.suppressed {
            return None;
        }
        let mut list: Vec<_> = roster.present.iter().map(|(a, (_, d))| (a.clone(), d.clone())).collect();
        list.extend(
            roster
                .remote
                .iter()
                .filter(|(a, _)| !roster.present.contains_key(*a))
                .map(|(a, (_, d))| (a.clone(), d.clone())),
        );
        list.sort();
        Some(list)
    }

    /// Starts or stops activity notifications of a room for every connection of `address`.
    pub fn set_watch(&self, address: &str, room: &str, watch: bool) {
        for conn in self.user_conns(address) {
            self.watch(&conn, room, watch);
        }
    }

    pub fn watch(&self, conn: &Arc<Conn>, room: &str, watch: bool) {
        let changed =
            conn.watching.lock().is_ok_and(|mut w| if watch { w.insert(room.to_owned()) } else { w.remove(room) });
        if !changed {
            return;
        }
        if watch {
            if let Some(hub) = self.room_or_create(room)
                && let Ok(mut watchers) = hub.watchers.write()
            {
                watchers.push(Arc::clone(conn));
            }
        } else if let Some(hub) = self.room(room) {
            remove_conn(&hub.watchers, conn.id);
        }
    }

    /// Encodes an event once, for pushing to several connections.
    pub(crate) fn encode(&self, event: &LiveEvent) -> Bytes {
        (self.encode)(event)
    }

    pub(crate) fn user_conns(&self, address: &str) -> Vec<Arc<Conn>> {
        self.users
            .lock()
            .ok()
            .and_then(|u| u.get(address).map(|l| l.iter().filter_map(Weak::upgrade).collect()))
            .unwrap_or_default()
    }

    /// Delivers a committed message to the room's subscribers and activity to followers not joined to it.
    pub(crate) fn publish_message(&self, message: &MessageRecord) {
        let Some(hub) = self.room(&message.room_id) else {
            return;
        };
        let room: Arc<str> = Arc::from(message.room_id.as_str());
        let bytes = (self.encode)(&LiveEvent::Message(message.clone()));
        let subscribers = snapshot(&hub.subscribers);
        let mut slow = vec![];
        for conn in &subscribers {
            let frame = Frame {
                kind: FrameKind::Message(MessageMeta { room: Arc::clone(&room), seq: message.seq, ts: message.ts }),
                bytes: bytes.clone(),
            };
            if !conn.push(frame) {
                slow.push(Arc::clone(conn));
            }
        }
        for conn in slow {
            self.drop_slow(&conn, &message.room_id);
        }
        let watchers = snapshot(&hub.watchers);
        if watchers.is_empty() {
            return;
        }
        let activity = (self.encode)(&LiveEvent::Activity { room: message.room_id.clone(), last_seq: message.seq });
        for conn in watchers.iter().filter(|c| !c.is_joined(&message.room_id)) {
            // Activity is advisory (the unread count is authoritative), so a full queue just misses one.
            conn.push(Frame { kind: FrameKind::Activity(Arc::clone(&room)), bytes: activity.clone() });
        }
    }

    fn drop_slow(&self, conn: &Arc<Conn>, room: &str) {
        if self.unsubscribe(conn, room) {
            self.slow_consumer_drops.inc();
            if let Ok(mut o) = conn.overflowed.lock() {
                o.push(room.to_owned());
            }
            conn.attention.notify_one();
        }
    }

    fn broadcast_room(&self, hub: &RoomHub, event: &LiveEvent, except: Option<u64>) {
        let bytes = (self.encode)(event);
        let room: Arc<str> = Arc::from(event.room().unwrap_or_default());
        for conn in snapshot(&hub.subscribers).iter().filter(|c| Some(c.id) != except) {
            conn.push(Frame { kind: FrameKind::Room(Arc::clone(&room)), bytes: bytes.clone() });
        }
    }

    /// Sends an event to every connection joined to the room.
    pub fn broadcast(&self, room: &str, event: &LiveEvent) {
        if let Some(hub) = self.room(room) {
            self.broadcast_room(&hub, event, None);
        }
    }

    /// Sends `event` to every connection of the user.
    pub fn to_user(&self, address: &str, event: &LiveEvent) {
        let conns = self.user_conns(address);
        if conns.is_empty() {
            return;
        }
        let bytes = (self.encode)(event);
        for conn in conns {
            conn.push(Frame { kind: FrameKind::User, bytes: bytes.clone() });
        }
    }

    /// Forgets a room entirely (after deletion).
    pub fn forget_room(&self, room: &str) {
        if let Ok(mut rooms) = self.rooms.write()
            && let Some(hub) = rooms.remove(room)
        {
            for conn in snapshot(&hub.watchers) {
                if let Ok(mut w) = conn.watching.lock() {
                    w.remove(room);
                }
            }
        }
    }

    /// Connections currently open (for metrics).
    pub fn connection_count(&self) -> usize {
        self.users
            .lock()
            .map(|u| u.values().map(|l| l.iter().filter(|w| w.strong_count() > 0).count()).sum())
            .unwrap_or(0)
    }
}
