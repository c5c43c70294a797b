//! The server's typed configuration: defaults, then the TOML file (`--config`), then `PCHAT_*` environment and
//! command-line flags for the settings that have them. Unknown keys are rejected. `docs/pchat.toml` documents
//! every field with its default; a test checks that file against [`Config::default`].

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the embedded databases and the local admin credentials live.
    pub(crate) data_dir: PathBuf,
    /// Address to listen on.
    pub(crate) listen: String,
    /// The SIP/mail domain of this deployment.
    pub(crate) domain: String,
    /// Site and pool names of this server (policy and configuration scopes `site:` and `pool:`).
    pub(crate) site: String,
    pub(crate) pool: String,
    /// This server's name in the pool's registry (`pchat pool status`); default `hostname:port`.
    pub(crate) server_name: Option<String>,
    /// `text` or `json`.
    pub(crate) log_format: String,
    pub(crate) database: DatabaseConfig,
    pub(crate) compliance: ComplianceConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) files: FilesConfig,
    pub(crate) tls: TlsConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) security: SecurityConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DatabaseConfig {
    /// `sqlite:` (default: `mgc.db` in the data directory), `sqlite:PATH`, or `postgres://…` (a pool's database).
    pub(crate) url: String,
    /// The pool's backup database (`postgres://…`, a streaming standby), used after `pchat pool failover`.
    pub(crate) backup_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ComplianceConfig {
    /// Where compliance events are archived. Empty (default): beside the chat database (`mgccomp.db` in the data
    /// directory on SQLite, the chat database itself on PostgreSQL); else `sqlite:PATH` or `postgres://…` (the
    /// same server as the chat database or another one; a pool must use PostgreSQL).
    pub(crate) database_url: String,
    /// A file holding at least 32 bytes of secret that seals the archive's chain (HMAC); empty: plain SHA-256.
    pub(crate) chain_key_file: String,
    /// Where this server records the chain's head after every append; empty: `compliance-witness.json` in the
    /// data directory.
    pub(crate) witness_file: String,
}

impl ComplianceConfig {
    /// The chain key, read from its file (refusing a short, unreadable or group- or world-readable one).
    pub(crate) fn chain_key(&self) -> anyhow::Result<Option<pchat_store::compliance::ChainKey>> {
        if self.chain_key_file.is_empty() {
            return Ok(None);
        }
        let path = std::path::Path::new(&self.chain_key_file);
        let secret =
            std::fs::read(path).with_context(|| format!("cannot read compliance.chain_key_file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!("compliance.chain_key_file {} must be readable by its owner only (chmod 600)", path.display());
            }
        }
        pchat_store::compliance::ChainKey::new(&secret)
            .map(Some)
            .with_context(|| format!("compliance.chain_key_file {} must hold at least 32 bytes", path.display()))
    }

    /// This server's witness file.
    pub(crate) fn witness_path(&self, data_dir: &std::path::Path) -> PathBuf {
        if self.witness_file.is_empty() {
            data_dir.join("compliance-witness.json")
        } else {
            PathBuf::from(&self.witness_file)
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageConfig {
    /// SQLite `synchronous`: `full` (survives power loss) or `normal` (survives a process crash).
    pub(crate) synchronous: String,
}

/// Where files posted in rooms are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FilesConfig {
    /// A directory; empty (default): `files` in the data directory. Not used when `s3_bucket` is set.
    pub(crate) directory: String,
    /// The directory is shared by every server of the pool (an NFS or SMB mount): required for a directory on a
    /// pool (a PostgreSQL database).
    pub(crate) shared_directory: bool,
    /// An S3-compatible bucket instead of a directory.
    pub(crate) s3_bucket: String,
    /// The S3 endpoint (a MinIO, Ceph or other S3-compatible server); empty: AWS.
    pub(crate) s3_endpoint: String,
    pub(crate) s3_region: String,
    /// Credentials; empty: from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
    pub(crate) s3_access_key_id: String,
    pub(crate) s3_secret_access_key: String,
    /// Allow a plain `http://` endpoint (a local server on a trusted network).
    pub(crate) s3_allow_http: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            directory: String::new(),
            shared_directory: false,
            s3_bucket: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// PEM certificate chain and private key; both set turns on HTTPS and WSS.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_ws_message_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) post_rate_per_sec: f64,
    pub(crate) post_burst: f64,
    pub(crate) connection_queue: usize,
    /// A connection must send a request's headers within this many seconds; idle keep-alive connections close
    /// after it too.
    pub(crate) request_header_timeout_secs: u64,
    /// Most open connections that have not made an authenticated request yet.
    pub(crate) max_unauthenticated_connections: usize,
    /// Seconds between WebSocket pings; a connection silent for two of them is closed.
    pub(crate) ping_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SecurityConfig {
    /// A session unused this long ends; an open stream keeps it in use.
    pub(crate) session_idle_timeout_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub(crate) session_lifetime_secs: i64,
    /// Shortest new password.
    pub(crate) min_password_chars: usize,
    /// Password hashes (Argon2id, 19 MiB each) computed at once, and password checks allowed to wait for one.
    pub(crate) password_hash_concurrency: usize,
    pub(crate) password_hash_queue: usize,
    /// Failed sign-ins before lockouts start: per account and client address, per address, per account.
    pub(crate) sign_in_free_failures_per_account_and_address: u32,
    pub(crate) sign_in_free_failures_per_address: u32,
    pub(crate) sign_in_free_failures_per_account: u32,
    /// The longest sign-in lockout.
    pub(crate) sign_in_max_lockout_secs: u64,
    /// Load balancers whose `X-Forwarded-For` names the client (for throttling and session descriptions).
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./pchat-data"),
            listen: "127.0.0.1:8080".into(),
            domain: "example.com".into(),
            site: "default".into(),
            pool: "default".into(),
            server_name: None,
            log_format: "text".into(),
            database: DatabaseConfig::default(),
            compliance: ComplianceConfig::default(),
            storage: StorageConfig::default(),
            files: FilesConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "sqlite:".into(), backup_url: None }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { synchronous: "full".into() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_connections: 20_000,
            post_rate_per_sec: 20.0,
            post_burst: 100.0,
            connection_queue: 1024,
            request_header_timeout_secs: 20,
            max_unauthenticated_connections: 1024,
            ping_interval_secs: 30,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        let service = pchat_service::SecuritySettings::default();
        Self {
            session_idle_timeout_secs: service.session_idle_timeout_secs,
            session_lifetime_secs: service.session_lifetime_secs,
            min_password_chars: service.min_password_chars,
            password_hash_concurrency: service.hash_concurrency,
            password_hash_queue: service.hash_queue,
            sign_in_free_failures_per_account_and_address: service.sign_in.free_per_account_and_address,
            sign_in_free_failures_per_address: service.sign_in.free_per_address,
            sign_in_free_failures_per_account: service.sign_in.free_per_account,
            sign_in_max_lockout_secs: service.sign_in.max_lockout_secs,
            trusted_proxies: vec![],
        }
    }
}

impl SecurityConfig {
    pub(crate) fn settings(&self) -> pchat_service::SecuritySettings {
        pchat_service::SecuritySettings {
            session_idle_timeout_secs: self.session_idle_timeout_secs,
            session_lifetime_secs: self.session_lifetime_secs,
            min_password_chars: self.min_password_chars,
            hash_concurrency: self.password_hash_concurrency,
            hash_queue: self.password_hash_queue,
            sign_in: pchat_service::ThrottleSettings {
                free_per_account_and_address: self.sign_in_free_failures_per_account_and_address,
                free_per_address: self.sign_in_free_failures_per_address,
                free_per_account: self.sign_in_free_failures_per_account,
                max_lockout_secs: self.sign_in_max_lockout_secs,
            },
        }
    }
}

impl Config {
    pub(crate) fn load(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        if pchat_store_sqlite::Durability::parse(&self.storage.synchronous).is_none() {
            bail!("storage.synchronous must be full or normal");
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.max_ws_message_bytes < 1024 {
            bail!("limits.max_body_bytes and limits.max_ws_message_bytes must be at least 1024");
        }
        if l.max_connections == 0 || l.connection_queue < 16 {
            bail!("limits.max_connections must be positive and limits.connection_queue at least 16");
        }
        if !(l.post_rate_per_sec > 0.0 && l.post_burst >= 1.0) {
            bail!("limits.post_rate_per_sec must be positive and limits.post_burst at least 1");
        }
        if !(1..=3600).contains(&l.request_header_timeout_secs) || !(1..=3600).contains(&l.ping_interval_secs) {
            bail!("limits.request_header_timeout_secs and limits.ping_interval_secs must be 1 to 3600");
        }
        if l.max_unauthenticated_connections == 0 {
            bail!("limits.max_unauthenticated_connections must be positive");
        }
        let s = &self.security;
        if s.session_idle_timeout_secs < 1 || s.session_lifetime_secs < 1 {
            bail!("security.session_idle_timeout_secs and security.session_lifetime_secs must be at least 1");
        }
        if !(8..=1024).contains(&s.min_password_chars) {
            bail!("security.min_password_chars must be 8 to 1024");
        }
        if !(1..=64).contains(&s.password_hash_concurrency) {
            bail!("security.password_hash_concurrency must be 1 to 64");
        }
        if s.sign_in_free_failures_per_account_and_address == 0
            || s.sign_in_free_failures_per_address == 0
            || s.sign_in_free_failures_per_account == 0
            || !(1..=86_400).contains(&s.sign_in_max_lockout_secs)
        {
            bail!("security.sign_in_free_failures_* must be positive and sign_in_max_lockout_secs 1 to 86400");
        }
        let postgres = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
        if let Some(backup) = &self.database.backup_url
            && !(postgres(backup) && postgres(&self.database.url))
        {
            bail!(
                "database.backup_url needs PostgreSQL: both database.url and database.backup_url must be postgres://"
            );
        }
        let compliance = &self.compliance.database_url;
        if !(compliance.is_empty() || compliance.starts_with("sqlite:") || postgres(compliance)) {
            bail!("compliance.database_url must be empty, sqlite:PATH or postgres://…");
        }
        if postgres(&self.database.url) && compliance.starts_with("sqlite:") {
            bail!("compliance.database_url must be postgres://… when the chat database is: a pool shares one archive");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls.cert and tls.key must be given together");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_match_the_code() {
        let text = include_str!("../../../docs/pchat.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(Config::parse("nonsense = 1").is_err());
        assert!(Config::parse("[limits]\nmax_connections = 0").is_err());
        assert!(Config::parse("log_format = \"xml\"").is_err());
        assert!(Config::parse("[storage]\nsynchronous = \"off\"").is_err());
        assert!(Config::parse("[tls]\ncert = \"a.pem\"").is_err());
        assert_eq!(Config::parse("domain = \"corp.example\"").unwrap().domain, "corp.example");
        assert!(Config::parse("[database]\nbackup_url = \"postgres://b/pchat\"").is_err(), "a backup needs a pool");
        let pool = "[database]\nurl = \"postgres://a/pchat\"\nbackup_url = \"postgres://b/pchat\"\n";
        assert_eq!(Config::parse(pool).unwrap().database.backup_url.as_deref(), Some("postgres://b/pchat"));
        assert!(Config::parse(&format!("{pool}[compliance]\ndatabase_url = \"sqlite:/x.db\"")).is_err());
        assert!(Config::parse(&format!("{pool}[compliance]\ndatabase_url = \"postgres://c/comp\"")).is_ok());
        assert!(Config::parse("[compliance]\ndatabase_url = \"mysql://c\"").is_err());
        assert!(Config::parse("[security]\nmin_password_chars = 4").is_err());
        assert!(Config::parse("[security]\nsession_idle_timeout_secs = 0").is_err());
        assert!(Config::parse("[security]\ntrusted_proxies = [\"not an address\"]").is_err());
        assert!(Config::parse("[limits]\nrequest_header_timeout_secs = 0").is_err());
        let proxies = Config::parse("[security]\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]").unwrap();
        assert_eq!(proxies.security.trusted_proxies.len(), 2);
    }
}
