//! Topic feeds: saved searches (at most [`MAX_FEEDS`] per user) that notify their owner live when a new message
//! matches in a room they may read, and list their past matches through search.
//!
//! Live matching must stay cheap with many feeds: every server keeps every feed in an in-memory inverted index
//! ([`FeedMatcher`]) keyed by one required term per alternative of the feed's query (its longest term). A
//! committed message looks up only its own distinct terms, so its cost grows with the feeds that share one of its
//! words, not with the number of feeds; each candidate is then tested exactly (rooms, authors, the query on the
//! text). Matching runs on a task of its own, after the message was delivered to its room, and each frame goes
//! only to the owner's connections on this server that may read the room at that moment; the stream checks again
//! before writing it, like every other frame.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pchat_api_types as api;
use pchat_core::text::{MAX_QUERY_CHARS, MatchMode, TextQuery, index_terms};
use pchat_core::{Address, Name};
use pchat_store::{ClusterEvent, FeedRecord, MessageRecord, SearchKey};
use tokio::sync::mpsc;
use tracing::warn;

use crate::hub::{Frame, FrameKind, LiveEvent};
use crate::rooms::access_to;
use crate::search::{Criteria, SearchResults, highlighted};
use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Most topic feeds one user keeps.
pub const MAX_FEEDS: u32 = 100;
/// Most authors one feed names.
pub const MAX_FEED_AUTHORS: usize = 50;

/// A feed ready for matching.
#[derive(Debug)]
struct Compiled {
    id: String,
    owner: String,
    name: String,
    query: TextQuery,
    authors: Vec<String>,
    rooms: Vec<String>,
}

impl Compiled {
    fn from_record(f: &FeedRecord) -> Option<Self> {
        let mode = MatchMode::parse("match", &f.match_mode).ok()?;
        let query = TextQuery::parse("keywords", &f.keywords, mode, f.case_sensitive).ok()?;
        Some(Self {
            id: f.id.clone(),
            owner: f.owner.clone(),
            name: f.name.clone(),
            query,
            authors: f.authors.clone(),
            rooms: f.rooms.clone(),
        })
    }

    /// The terms it is filed under: one per alternative, the longest (usually the rarest).
    fn keys(&self) -> HashSet<String> {
        self.query
            .alternatives()
            .into_iter()
            .filter_map(|terms| terms.into_iter().max_by_key(|t| (t.chars().count(), t.clone())))
            .collect()
    }

    fn matches(&self, m: &MessageRecord) -> bool {
        (self.rooms.is_empty() || self.rooms.contains(&m.room_id))
            && (self.authors.is_empty() || self.authors.contains(&m.author))
            && self.query.matches(&m.text, m.story_title.as_deref())
    }
}

#[derive(Default)]
struct Index {
    by_owner: HashMap<String, Vec<Arc<Compiled>>>,
    by_term: HashMap<String, Vec<Arc<Compiled>>>,
}

impl Index {
    fn remove_owner(&mut self, owner: &str) {
        for feed in self.by_owner.remove(owner).unwrap_or_default() {
            for key in feed.keys() {
                if let Some(list) = self.by_term.get_mut(&key) {
                    list.retain(|f| f.id != feed.id);
                    if list.is_empty() {
                        self.by_term.remove(&key);
                    }
                }
            }
        }
    }

    fn add(&mut self, feed: Compiled) {
        let feed = Arc::new(feed);
        for key in feed.keys() {
            self.by_term.entry(key).or_default().push(Arc::clone(&feed));
        }
        self.by_owner.entry(feed.owner.clone()).or_default().push(feed);
    }
}

/// Every feed of the pool, filed by term for matching new messages.
#[derive(Default)]
pub(crate) struct FeedMatcher {
    index: RwLock<Index>,
}

impl FeedMatcher {
    /// Replaces what is known of one owner's feeds.
    fn set_owner(&self, owner: &str, feeds: &[FeedRecord]) {
        if let Ok(mut index) = self.index.write() {
            index.remove_owner(owner);
            feeds.iter().filter_map(Compiled::from_record).for_each(|f| index.add(f));
        }
    }

    fn load(&self, feeds: &[FeedRecord]) {
        let mut fresh = Index::default();
        feeds.iter().filter_map(Compiled::from_record).for_each(|f| fresh.add(f));
        if let Ok(mut index) = self.index.write() {
            *index = fresh;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.read().map(|i| i.by_owner.is_empty()).unwrap_or(true)
    }

    /// The feeds a message matches.
    fn matching(&self, message: &MessageRecord) -> Vec<Arc<Compiled>> {
        let Ok(index) = self.index.read() else { return vec![] };
        if index.by_term.is_empty() {
            return vec![];
        }
        let mut seen = HashSet::new();
        let mut out = vec![];
        for term in index_terms(&message.text, message.story_title.as_deref()) {
            for feed in index.by_term.get(&term).into_iter().flatten() {
                if seen.insert(feed.id.as_str()) && feed.matches(message) {
                    out.push(Arc::clone(feed));
                }
            }
        }
        out
    }
}

/// A feed as created or changed (wire input, validated here).
fn criteria_of(feed: &FeedRecord) -> ServiceResult<Criteria> {
    let mode = MatchMode::parse("match", &feed.match_mode)?;
    Ok(Criteria {
        query: TextQuery::parse("keywords", &feed.keywords, mode, feed.case_sensitive)?,
        authors: feed.authors.clone(),
        from_ts: None,
        to_ts: None,
        rooms: feed.rooms.clone(),
    })
}

/// A feed's keywords as stored: limited as given (like a search query), kept trimmed.
fn keywords(raw: &str) -> ServiceResult<String> {
    if raw.chars().count() > MAX_QUERY_CHARS {
        return Err(ServiceError::validation("keywords", format!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    Ok(raw.trim().to_owned())
}

fn authors(list: Vec<String>) -> ServiceResult<Vec<String>> {
    if list.len() > MAX_FEED_AUTHORS {
        return Err(ServiceError::validation("authors", format!("at most {MAX_FEED_AUTHORS} authors")));
    }
    let mut out: Vec<String> = vec![];
    for raw in list {
        let address = Address::parse("authors", &raw)?.to_string();
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}

impl Service {
    pub async fn list_feeds(&self, caller: &Caller) -> ServiceResult<Vec<FeedRecord>> {
        Self::require_chat(caller)?;
        Ok(self.store.list_feeds(caller.address()).await?)
    }

    /// The caller's feed; `not_found` for anyone else's (feeds are private).
    pub async fn get_feed(&self, caller: &Caller, id: &str) -> ServiceResult<FeedRecord> {
        Self::require_chat(caller)?;
        match self.store.get_feed(id).await? {
            Some(feed) if feed.owner == caller.address() => Ok(feed),
            _ => Err(ServiceError::not_found("feed")),
        }
    }

    pub async fn create_feed(&self, caller: &Caller, input: api::NewFeed) -> ServiceResult<FeedRecord> {
        Self::require_chat(caller)?;
        let feed = FeedRecord {
            id: uuid::Uuid::new_v4().to_string(),
            owner: caller.address().to_owned(),
            name: Name::parse("name", &input.name)?.into_string(),
            keywords: keywords(&input.keywords)?,
            match_mode: input.match_.unwrap_or_else(|| "all".into()),
            case_sensitive: input.case_sensitive.unwrap_or(false),
            authors: authors(input.authors.unwrap_or_default())?,
            rooms: self.feed_rooms(caller, &input.rooms.unwrap_or_default()).await?,
            created_at: now_micros(),
        };
        criteria_of(&feed)?;
        self.store.create_feed(&feed, MAX_FEEDS).await.map_err(|e| match e {
            pchat_store::StoreError::LimitReached => {
                ServiceError::LimitReached(format!("a user keeps at most {MAX_FEEDS} topic feeds"))
            }
            other => other.into(),
        })?;
        self.feeds_changed(caller.address()).await;
        Ok(feed)
    }

    /// Changes a feed: the fields given replace the feed's (the feed is its owner's alone, so the last change
    /// wins).
    pub async fn update_feed(&self, caller: &Caller, id: &str, patch: api::FeedPatch) -> ServiceResult<FeedRecord> {
        let mut feed = self.get_feed(caller, id).await?;
        if let Some(name) = patch.name {
            feed.name = Name::parse("name", &name)?.into_string();
        }
        if let Some(keywords) = patch.keywords {
            feed.keywords = self::keywords(&keywords)?;
        }
        if let Some(mode) = patch.match_ {
            feed.match_mode = mode;
        }
        if let Some(cs) = patch.case_sensitive {
            feed.case_sensitive = cs;
        }
        if let Some(list) = patch.authors {
            feed.authors = authors(list)?;
        }
        if let Some(rooms) = patch.rooms {
            feed.rooms = self.feed_rooms(caller, &rooms).await?;
        }
        criteria_of(&feed)?;
        self.store.update_feed(&feed).await?;
        self.feeds_changed(caller.address()).await;
        Ok(feed)
    }

    pub async fn delete_feed(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        let feed = self.get_feed(caller, id).await?;
        self.store.delete_feed(&feed.id).await?;
        self.feeds_changed(caller.address()).await;
        Ok(())
    }

    /// The rooms a feed names, as ids: each must be readable by its owner. A room that does not exist and one the
    /// caller may not read get the same answer (a body that names an unknown object is `validation_failed`).
    async fn feed_rooms(&self, caller: &Caller, references: &[String]) -> ServiceResult<Vec<String>> {
        match self.named_rooms(caller, "rooms", references).await {
            Err(ServiceError::NotFound(_) | ServiceError::Forbidden(_) | ServiceError::RoomDisabled) => {
                Err(ServiceError::validation("rooms", "names a room that does not exist or that you may not read"))
            }
            other => other,
        }
    }

    /// A feed's past matches, newest first, in the rooms its owner may read now.
    pub async fn feed_matches(
        &self,
        caller: &Caller,
        id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<SearchResults> {
        let feed = self.get_feed(caller, id).await?;
        let after = cursor
            .map(|c| SearchKey::decode(c).ok_or_else(|| ServiceError::validation("cursor", "is not a search cursor")))
            .transpose()?;
        self.search_criteria(caller, &criteria_of(&feed)?, after, limit, "feed").await
    }

    /// After a change to an owner's feeds: this server's matcher learns it before the change is answered, the
    /// pool's other servers when the announcement reaches them.
    async fn feeds_changed(&self, owner: &str) {
        self.reload_feeds(owner).await;
        self.announce(ClusterEvent::FeedsChanged { owner: Some(owner.to_owned()) }).await;
    }

    pub(crate) async fn reload_all_feeds(&self) {
        match self.store.all_feeds().await {
            Ok(feeds) => self.feeds.load(&feeds),
            Err(e) => warn!(error = %e, "could not read the topic feeds; live matches use what was known"),
        }
    }

    pub(crate) async fn reload_feeds(&self, owner: &str) {
        match self.store.list_feeds(owner).await {
            Ok(feeds) => self.feeds.set_owner(owner, &feeds),
            Err(e) => {
                warn!(error = %e, "could not read a user's topic feeds; their live matches wait for the next change")
            }
        }
    }

    /// Loads every feed (at start, retrying while the database cannot be read) and then matches each committed
    /// message this server hears of.
    pub(crate) fn start_feed_matching(self: &Arc<Self>) -> mpsc::UnboundedSender<MessageRecord> {
        let (queue, mut messages) = mpsc::unbounded_channel::<MessageRecord>();
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = service.upgrade() else { return };
                match s.store.all_feeds().await {
                    Ok(feeds) => {
                        s.feeds.load(&feeds);
                        break;
                    }
                    Err(e) => warn!(error = %e, "could not load topic feeds; retrying"),
                }
                drop(s);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            while let Some(message) = messages.recv().await {
                let Some(s) = service.upgrade() else { return };
                s.deliver_feed_matches(&message).await;
            }
        });
        queue
    }

    /// Whether a queued `feed_match` about `room` may still go out on this connection: its user may read the room
    /// now (checked again when it is written, after any pending review). An error keeps it back.
    pub async fn may_send_feed_match(&self, conn: &crate::Conn, room: &str) -> bool {
        self.may_read_cached(&conn.caller(), room).await.unwrap_or(false)
    }

    /// Sends `feed_match` to the owners of the feeds a message matches, on their connections to this server that
    /// may read the message's room now.
    async fn deliver_feed_matches(&self, message: &MessageRecord) {
        if self.feeds.is_empty() {
            return;
        }
        let matched = self.feeds.matching(message);
        if matched.is_empty() {
            return;
        }
        let entry = match self.rooms.get(&*self.store, &message.room_id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot check access for topic feed matches; they are not sent");
                return;
            }
        };
        let room: Arc<str> = Arc::from(message.room_id.as_str());
        for feed in matched {
            let conns: Vec<_> = self
                .hub
                .user_conns(&feed.owner)
                .into_iter()
                .filter(|c| access_to(&c.caller(), &entry.category, &entry.room).read)
                .collect();
            if conns.is_empty() {
                continue;
            }
            let hit = highlighted(&feed.query, message.clone(), entry.room.name.clone());
            let event = LiveEvent::FeedMatch { feed: feed.id.clone(), feed_name: feed.name.clone(), hit };
            let bytes = self.hub.encode(&event);
            for conn in conns {
                // Advisory, like activity: a full queue misses one (the feed's matches list it).
                conn.push(Frame { kind: FrameKind::Feed(Arc::clone(&room)), bytes: bytes.clone() });
            }
        }
    }
}
