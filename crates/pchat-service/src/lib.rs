//! pchat use cases: sign-in and identity, the directory (users, groups, roles), policy and configuration,
//! categories, rooms and add-ins, messages and history, following and invitations, and the live fan-out [`hub`].
//! Front ends (HTTP/WebSocket now, SIP/XCCOS later) call [`Service`]; it knows nothing of their protocols.

mod access;
mod auth;
mod cluster;
pub mod compliance;
mod directory;
mod error;
pub mod export;
mod feeds;
pub mod files;
mod hasher;
pub mod hub;
mod me;
mod messages;
pub mod metrics;
pub mod pool;
mod ratelimit;
mod rooms;
mod search;
mod throttle;
pub mod time;
pub mod witness;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pchat_core::{Identity, Name};
use pchat_store::{ClusterEvent, Store, StoreEvent, StoreResult};
use tokio::sync::mpsc;
use tracing::warn;

pub use access::{CloseReason, Review};
pub use auth::{ClientInfo, SecuritySettings, SessionView};
pub use error::{ServiceError, ServiceResult};
pub use feeds::{MAX_FEED_AUTHORS, MAX_FEEDS};
pub use hub::{Conn, Frame, FrameKind, Hub, LiveEvent, MessageMeta};
pub use me::MyRoom;
pub use messages::{DEFAULT_REPLACEMENT, History, Joined, MAX_PAGE};
pub use rooms::RoomFilter;
pub use rooms::{RoomView, decode_cursor, encode_cursor};
pub use search::{HighlightField, MAX_SEARCH_ROOMS, SearchHit, SearchInput, SearchResults};
pub use throttle::ThrottleSettings;

/// The store records the service returns, for front ends to convert into their wire shapes.
pub mod records {
    /// `expires_at` of a session that ends only when revoked.
    pub use pchat_store::sessions::NEVER;
    pub use pchat_store::{
        AddinRecord, ArchivedEvent, AuditRecord, CategoryRecord, EventQuery, FeedRecord, InvitationRecord,
        MessageRecord, RoomRecord, SessionRecord, UserRecord,
    };
}

/// Deployment settings the service needs (from the server's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The SIP/mail domain of this deployment (room URIs, the bootstrap administrator).
    pub domain: String,
    /// The site and pool this server belongs to, for policy and configuration scopes.
    pub site: Name,
    pub pool: Name,
    /// Posts a user may make per second, sustained, and in a burst.
    pub post_rate_per_sec: f64,
    pub post_burst: f64,
    /// Frames queued for one connection before it is considered too slow.
    pub connection_queue: usize,
    /// Sign-in throttling, password hashing, sessions and passwords.
    pub security: SecuritySettings,
}

/// The signed-in user a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub display_name: String,
    pub admin: bool,
    pub user_admin: bool,
    pub chat_enabled: bool,
}

impl Caller {
    pub fn address(&self) -> &str {
        self.identity.address.as_str()
    }
}

pub struct Service {
    store: Arc<dyn Store>,
    settings: Settings,
    hub: Hub,
    limiter: ratelimit::RateLimiter,
    metrics: Arc<metrics::Metrics>,
    /// Moves on after every write that can change who a caller is (users, groups, roles, policies) or which
    /// configuration applies, so that derived values can be cached until then. In a pool, other servers' writes
    /// move it too (`StoreEvent::DirectoryChanged`).
    generation: AtomicU64,
    /// Whether this server accepts new connections (the pool's active servers); true until the registry says no.
    active: std::sync::atomic::AtomicBool,
    /// The effective configuration and the generation it was read at.
    config_cache: std::sync::RwLock<Option<(u64, pchat_core::ChatConfig)>>,
    /// This server's name in the pool, once it has joined it ([`Service::join_pool`]).
    server_name: std::sync::OnceLock<String>,
    /// The compliance configuration in force and the generation it was read at.
    compliance_cache: std::sync::RwLock<Option<(u64, pchat_api_types::ComplianceConfiguration)>>,
    /// Where captured events are archived ([`Service::set_archive`]).
    archive: std::sync::OnceLock<Arc<dyn pchat_store::Archive>>,
    /// Why the last compliance export failed, until one succeeds.
    export_problem: std::sync::RwLock<Option<String>>,
    /// One export at a time in this process (the worker's and a forced one share the pool's claim).
    export_lock: tokio::sync::Mutex<()>,
    /// This process among the pool's servers: access changes it announces come back marked with it.
    instance: String,
    /// Rooms with their categories, for re-evaluating live connections.
    rooms: access::RoomCache,
    /// Password hashing, bounded.
    hashes: hasher::Hasher,
    /// Failed sign-ins, for throttling.
    throttle: throttle::SignInThrottle,
    /// The compliance chain key and witness file ([`Service::set_chain_seal`]).
    seal: std::sync::OnceLock<compliance::ChainSeal>,
    /// Why the witness file could not be written, until it can.
    witness_problem: std::sync::RwLock<Option<String>>,
    /// Every topic feed, for matching new messages.
    feeds: feeds::FeedMatcher,
    /// Committed messages waiting to be matched against the topic feeds.
    feed_queue: std::sync::OnceLock<mpsc::UnboundedSender<pchat_store::MessageRecord>>,
    /// Where files posted in rooms are kept ([`Service::set_file_store`]).
    file_store: std::sync::OnceLock<Arc<dyn object_store::ObjectStore>>,
}

impl Service {
    /// Builds the service and starts the task that turns committed store events into live deliveries.
    /// `encode` turns a live event into the front end's wire frame, once per event.
    pub fn start(store: Arc<dyn Store>, settings: Settings, encode: hub::Encoder) -> Arc<Self> {
        let events = store.take_events();
        let limiter = ratelimit::RateLimiter::new(settings.post_rate_per_sec, settings.post_burst);
        let settings_security = settings.security.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        let hub = Hub::new(encode, settings.connection_queue, metrics.slow_consumer_drops.clone());
        let service = Arc::new(Self {
            hub,
            store,
            settings,
            limiter,
            metrics,
            generation: AtomicU64::new(0),
            active: std::sync::atomic::AtomicBool::new(true),
            config_cache: std::sync::RwLock::new(None),
            server_name: std::sync::OnceLock::new(),
            compliance_cache: std::sync::RwLock::new(None),
            archive: std::sync::OnceLock::new(),
            export_problem: std::sync::RwLock::new(None),
            export_lock: tokio::sync::Mutex::new(()),
            instance: uuid::Uuid::new_v4().to_string(),
            rooms: access::RoomCache::default(),
            hashes: hasher::Hasher::start(settings_security.hash_concurrency, settings_security.hash_queue),
            throttle: auth::new_throttle(&settings_security),
            seal: std::sync::OnceLock::new(),
            witness_problem: std::sync::RwLock::new(None),
            feeds: feeds::FeedMatcher::default(),
            feed_queue: std::sync::OnceLock::new(),
            file_store: std::sync::OnceLock::new(),
        });
        service.start_file_sweeper();
        service.start_part_capture();
        let _ = service.feed_queue.set(service.start_feed_matching());
        if let Some(events) = events {
            tokio::spawn(dispatch(Arc::downgrade(&service), events));
        } else {
            warn!("store event feed already taken: live delivery disabled");
        }
        service
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The Prometheus text of the service's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(self.hub.connection_count())
    }

    /// Whether the database answers and takes writes.
    pub async fn ready(&self) -> ServiceResult<()> {
        Ok(self.store.ping().await?)
    }

    /// Why this server can no longer work at all and should exit (its supervisor restarts it).
    pub fn fatal(&self) -> Option<String> {
        self.store.fatal()
    }

    /// The current directory generation: a caller resolved at an earlier generation may be out of date.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs a write that can change a caller or the configuration, then moves the generation on (whatever the
    /// outcome: a spurious move only costs a re-read).
    pub(crate) async fn directory_write<T>(&self, write: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let result = write.await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    pub fn room_uri(&self, room_id: &str) -> String {
        format!("ma-chan://{}/{}", self.settings.domain, room_id)
    }
}

/// Publishes committed messages to the hub in commit order (which is `seq` order per room), moves the directory
/// generation on when another server changed the directory, and applies cluster events. It never waits for the
/// database: events whose consequences need a read go to a task of their own ([`apply_reading`]), so a burst of
/// invitations or a reload of feeds does not hold up any room's messages.
async fn dispatch(service: std::sync::Weak<Service>, mut events: mpsc::UnboundedReceiver<StoreEvent>) {
    let (reading, to_read) = mpsc::unbounded_channel();
    tokio::spawn(apply_reading(service.clone(), to_read));
    while let Some(event) = events.recv().await {
        let Some(service) = service.upgrade() else {
            return;
        };
        match event {
            StoreEvent::MessagePosted(message) => {
                service.hub.publish_message(&message);
                if !service.feeds.is_empty()
                    && let Some(queue) = service.feed_queue.get()
                {
                    let _ = queue.send(message);
                }
            }
            StoreEvent::DirectoryChanged => {
                service.generation.fetch_add(1, Ordering::AcqRel);
            }
            StoreEvent::Cluster(event) => {
                if let Some(left) = service.apply_live(event) {
                    let _ = reading.send(left);
                }
            }
        }
    }
}

/// Applies, in order, the cluster events whose consequences read the database (see [`dispatch`]).
async fn apply_reading(service: std::sync::Weak<Service>, mut events: mpsc::UnboundedReceiver<ClusterEvent>) {
    let mut room = None;
    while let Some(event) = events.recv().await {
        let Some(service) = service.upgrade() else {
            return;
        };
        service.apply_reading(event, &mut room).await;
        if events.is_empty() {
            // The end of a burst: the next one reads its room afresh.
            room = None;
        }
    }
}

/// Helpers for the crate's own tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use pchat_core::Name;
    use pchat_store::Store;
    use pchat_store_sqlite::{Durability, SqliteStore};

    use crate::Service;

    /// A service on a fresh SQLite store in `dir` (NORMAL durability: these tests do not crash).
    pub(crate) fn open_service(dir: &std::path::Path) -> (Arc<Service>, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("mgc.db"), Durability::Normal).unwrap());
        let settings = crate::Settings {
            domain: "example.com".into(),
            site: Name::parse("site", "default").unwrap(),
            pool: Name::parse("pool", "default").unwrap(),
            post_rate_per_sec: 100.0,
            post_burst: 100.0,
            connection_queue: 64,
            security: crate::SecuritySettings::default(),
        };
        let service = Service::start(Arc::clone(&store), settings, Box::new(|_| bytes::Bytes::new()));
        (service, store)
    }
}
