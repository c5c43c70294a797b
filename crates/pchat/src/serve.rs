//! `pchat serve`: opens the store, bootstraps the first administrator, writes the local admin credentials,
//! serves HTTP/WebSocket until SIGTERM/SIGINT, then drains: stop accepting, finish in-flight requests (and so
//! their commits), close live connections with a close frame.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use pchat_core::Name;
use pchat_http::{AppState, HttpLimits};
use pchat_service::{Service, Settings};
use pchat_store::{Archive, Store};
use pchat_store_postgres::{PgArchive, PgStore, redact};
use pchat_store_sqlite::{Durability, SqliteArchive, SqliteStore};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;

/// What a local `pchat` command reads to reach the server on this host without flags.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LocalAccess {
    pub(crate) url: String,
    pub(crate) token: String,
    /// The server's certificate, so that local commands trust it even when it is self-signed.
    #[serde(default)]
    pub(crate) ca_cert: Option<PathBuf>,
}

pub(crate) const LOCAL_ACCESS_FILE: &str = "server.json";

/// Opens the chat store named by the server's database URL (`sqlite:` alone: `mgc.db` in the data directory) and
/// the compliance archive (`compliance.database_url`; empty: `mgccomp.db` beside an embedded store, the chat
/// database itself on PostgreSQL, following its failovers).
pub(crate) async fn open_databases(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Archive>)> {
    let durability = Durability::parse(&config.storage.synchronous).unwrap_or_default();
    let url = config.database.url.as_str();
    let (store, beside): (Arc<dyn Store>, Option<Arc<dyn Archive>>) = match (url, &config.database.backup_url) {
        ("sqlite:", _) => (Arc::new(SqliteStore::open(&config.data_dir.join("mgc.db"), durability)?), None),
        (primary, Some(backup)) => {
            let store = Arc::new(PgStore::connect_pair(primary, backup).await?);
            (store.clone(), Some(store))
        }
        (url, None) if is_postgres(url) => {
            let store = Arc::new(PgStore::connect(url).await?);
            (store.clone(), Some(store))
        }
        (url, None) => (open_url_with(url, durability).await?, None),
    };
    let compliance = config.compliance.database_url.as_str();
    let archive: Arc<dyn Archive> = match (compliance, beside) {
        ("", Some(chat_database)) => chat_database,
        ("", None) | ("sqlite:", _) => Arc::new(SqliteArchive::open(&config.data_dir.join("mgccomp.db"))?),
        (url, _) if is_postgres(url) => Arc::new(PgArchive::connect(url).await?),
        (url, _) => match url.strip_prefix("sqlite:") {
            Some(path) => Arc::new(SqliteArchive::open(&PathBuf::from(path))?),
            None => bail!("unsupported compliance.database_url {}", redact(url)),
        },
    };
    Ok((store, archive))
}

/// Opens the file store: an S3-compatible bucket, or a directory (by default `files` in the data directory). A pool
/// (PostgreSQL) must use a store every server sees: a bucket, or a directory the operator declares shared.
pub(crate) fn open_file_store(config: &Config) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
    let files = &config.files;
    if !files.s3_bucket.is_empty() {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&files.s3_bucket)
            .with_region(&files.s3_region)
            .with_allow_http(files.s3_allow_http);
        if !files.s3_endpoint.is_empty() {
            builder = builder.with_endpoint(&files.s3_endpoint).with_virtual_hosted_style_request(false);
        }
        if !files.s3_access_key_id.is_empty() {
            builder =
                builder.with_access_key_id(&files.s3_access_key_id).with_secret_access_key(&files.s3_secret_access_key);
        }
        let store = builder.build().with_context(|| format!("cannot use the S3 bucket {}", files.s3_bucket))?;
        return Ok(Arc::new(store));
    }
    if is_postgres(&config.database.url) && !files.shared_directory {
        bail!(
            "a pool on PostgreSQL needs a file store every server sees: set [files] s3_bucket, or a directory that \
             every server mounts with shared_directory = true"
        );
    }
    let dir = if files.directory.is_empty() { config.data_dir.join("files") } else { PathBuf::from(&files.directory) };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the file store {}", dir.display()))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .with_context(|| format!("cannot use the file store {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Connections waiting to be accepted, at most: when every client of a restarted server reconnects at once, a
/// short queue (tokio's default is 1,024) overflows and the kernel drops connection attempts, which the clients
/// only retry after a second or more. The kernel caps it at `net.core.somaxconn` (4,096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` (`host:port`) with [`LISTEN_BACKLOG`].
async fn listen(address: &str) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("{address} names no address"), anyhow::Error::from))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens a store by URL, `sqlite:PATH` or `postgres://…`: the one place that names concrete backends.
pub(crate) async fn open_url(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_url_with(url, Durability::Full).await
}

async fn open_url_with(url: &str, durability: Durability) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
        return Ok(Arc::new(SqliteStore::open(&PathBuf::from(path), durability)?));
    }
    if is_postgres(url) {
        return Ok(Arc::new(PgStore::connect(url).await?));
    }
    bail!("unsupported database URL {}: use sqlite:PATH or postgres://…", redact(url))
}

/// Descriptors kept back from sockets for the databases, log and data files, uploads and exports.
fn reserved_descriptors(limit: u64) -> u64 {
    128 + limit / 200
}

/// Raises the soft limit on open files to the hard limit (as far as the kernel allows) and returns how many
/// sockets the server may hold: the limit less a reserve for its own files. Stated at start, since it bounds the
/// connections one server holds.
fn socket_budget() -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let mut soft = now.current.unwrap_or(u64::MAX);
    if let Some(hard) = now.maximum
        && soft < hard
    {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
            Ok(()) => soft = hard,
            Err(e) => warn!(error = %e, soft, hard, "cannot raise the open-files limit to the hard limit"),
        }
    }
    let reserve = reserved_descriptors(soft);
    let sockets = soft.saturating_sub(reserve).max(16);
    info!(open_files_limit = soft, sockets, reserved = reserve, "open-files limit: at most {sockets} connections");
    usize::try_from(sockets).unwrap_or(usize::MAX)
}

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let max_sockets = socket_budget();
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (store, archive) = open_databases(&config).await?;
    let objects = open_file_store(&config)?;
    let service = Service::start(Arc::clone(&store), settings(&config)?, pchat_http::encoder(config.domain.clone()));
    service.set_archive(archive);
    service.set_file_store(objects);
    service.set_chain_seal(config.compliance.chain_key()?, Some(config.compliance.witness_path(&config.data_dir)));
    let compliance_worker = service.start_compliance_worker();
    let session_purge = tokio::spawn(purge_sessions(Arc::clone(&service)));

    let bootstrap_password = std::env::var("PCHAT_BOOTSTRAP_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    if let Some((address, generated)) = service.bootstrap_admin(bootstrap_password).await? {
        match generated {
            Some(password) => println!(
                "Created administrator {address} with password: {password}\n(shown once; change it with \
                 `pchat user set-password {address}` or PUT /api/v1/me/password)"
            ),
            None => {
                info!(%address, "created the administrator with the password from PCHAT_BOOTSTRAP_ADMIN_PASSWORD")
            }
        }
    }

    let listener = listen(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let url = format!("{}://{address}", if tls.is_some() { "https" } else { "http" });
    let ca_cert = config.tls.cert.as_ref().and_then(|c| std::fs::canonicalize(c).ok());
    write_local_access(&service, &config.data_dir, &url, ca_cert).await?;
    let name = config.server_name.clone().unwrap_or_else(|| format!("{}:{}", hostname(), address.port()));
    let heartbeat = service.join_pool(name.clone(), url.clone()).await?;
    if !service.is_active() {
        warn!(%name, "this server is inactive in its pool: it accepts no new connections until made active");
    }
    info!(%url, data_dir = %config.data_dir.display(), "pchat listening");
    println!("pchat listening on {url}");
    let _ = std::io::stdout().flush();

    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        service: Arc::clone(&service),
        limits: HttpLimits {
            max_body_bytes: config.limits.max_body_bytes,
            max_ws_message_bytes: config.limits.max_ws_message_bytes,
            max_connections: config.limits.max_connections.min(max_sockets),
            max_sockets,
            header_timeout: Duration::from_secs(config.limits.request_header_timeout_secs),
            max_unauthenticated: config.limits.max_unauthenticated_connections,
            trusted_proxies: config.security.trusted_proxies.clone(),
            ping_interval: Duration::from_secs(config.limits.ping_interval_secs),
        },
        shutdown: stopped.clone(),
    };
    let mut server_stopped = stopped.clone();
    let until_stopped = async move {
        let _ = server_stopped.wait_for(|s| *s).await;
    };
    let server = match tls {
        Some(tls) => tokio::spawn(pchat_http::serve_tls(listener, tls, state, until_stopped)),
        None => tokio::spawn(pchat_http::serve(listener, state, until_stopped)),
    };
    // A store that can no longer work at all (the SQLite writer thread died) makes the server exit non-zero, so
    // that its supervisor restarts it, instead of answering requests whose every write fails.
    let fatal = tokio::select! {
        () = wait_for_signal() => None,
        why = fatal_condition(Arc::clone(&service)) => Some(why),
    };
    if let Some(why) = &fatal {
        tracing::error!(%why, "cannot go on; shutting down to be restarted");
    }
    heartbeat.abort();
    compliance_worker.abort();
    session_purge.abort();
    info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop.send(true);
    match tokio::time::timeout(Duration::from_secs(20), server).await {
        Ok(result) => result??,
        Err(_) => warn!("requests still running after 20 s; exiting anyway"),
    }
    // Live connections close themselves with a close frame once told; give them a moment to send it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while service.hub().connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    revoke_local_access(&service, &config.data_dir).await;
    if let Some(why) = fatal {
        bail!("stopped because {why}");
    }
    info!("stopped");
    Ok(())
}

/// Resolves when the service reports a condition it cannot recover from.
async fn fatal_condition(service: Arc<Service>) -> String {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        if let Some(why) = service.fatal() {
            return why;
        }
    }
}

/// Deletes ended sessions every hour, so that the sessions table does not grow without bound.
async fn purge_sessions(service: Arc<Service>) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        match service.purge_sessions().await {
            Ok(0) => {}
            Ok(n) => info!(sessions = n, "deleted ended sessions"),
            Err(e) => warn!(error = %e, "cannot delete ended sessions"),
        }
    }
}

/// What the service needs of the configuration.
pub(crate) fn settings(config: &Config) -> anyhow::Result<Settings> {
    Ok(Settings {
        domain: config.domain.clone(),
        site: Name::parse("site", &config.site)?,
        pool: Name::parse("pool", &config.pool)?,
        post_rate_per_sec: config.limits.post_rate_per_sec,
        post_burst: config.limits.post_burst,
        connection_queue: config.limits.connection_queue,
        security: config.security.settings(),
    })
}

/// This machine's host name, for the default server name.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Gives local `pchat` commands the server's URL and an administrator token, readable only by this user.
async fn write_local_access(
    service: &Service,
    data_dir: &Path,
    url: &str,
    ca_cert: Option<PathBuf>,
) -> anyhow::Result<()> {
    // The previous run's token (left behind by a crash) stops working.
    revoke_local_access(service, data_dir).await;
    let Some(token) = service.local_admin_token().await? else {
        warn!("no administrator exists: local admin commands need --url and --token");
        return Ok(());
    };
    let body = serde_json::to_vec_pretty(&LocalAccess { url: url.to_owned(), token, ca_cert })?;
    let path = data_dir.join(LOCAL_ACCESS_FILE);
    let tmp = data_dir.join(format!("{LOCAL_ACCESS_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(&body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Revokes the local administrator token and removes `server.json`.
async fn revoke_local_access(service: &Service, data_dir: &Path) {
    let path = data_dir.join(LOCAL_ACCESS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(access) = serde_json::from_str::<LocalAccess>(&text)
        && let Err(e) = service.sign_out(&access.token).await
    {
        warn!(error = %e, "cannot revoke the previous local administrator token");
    }
    let _ = std::fs::remove_file(path);
}
