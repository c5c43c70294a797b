//! Failover between a pool's primary and backup databases (Lync's `Set-CsPersistentChatState` Normal/FailedOver).
//!
//! Each database holds the pool's state in `pool_state`: `normal` (the servers use the primary) or `failed_over`
//! (the backup), with an epoch that grows by one at every switch. A server configured with both databases reads
//! the state from each every second and uses the database named by the highest epoch it can read, so it follows a
//! switch made while it runs, and picks the right database when it starts even if the other one is gone. An old
//! primary that comes back after a failover still says `normal` with an older epoch and is ignored.
//!
//! [`switch`] (`pchat pool failover` / `failback`) makes the switch: when the database being left still answers,
//! it fences it first (writes the new state, makes the database read-only for new sessions and ends the current
//! ones, so nothing more commits there) and waits until the standby has replayed everything it committed; then it
//! promotes the standby if asked, lifts the fence on it and writes the new state there.

use std::sync::{Arc, Weak};
use std::time::Duration;

use pchat_store::codec::now_micros;
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use crate::migrations;
use crate::store::{Database, OpenError, open_database, parse_url, redact};

/// How often a server reads the pool's state from both databases.
const POLL: Duration = Duration::from_secs(1);
/// Longest wait to reach a database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One of the pool's two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Backup => "backup",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Primary => Self::Backup,
            Self::Backup => Self::Primary,
        }
    }

    /// The pool state in which the servers use this database.
    pub fn state(self) -> PoolState {
        match self {
            Self::Primary => PoolState::Normal,
            Self::Backup => PoolState::FailedOver,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lync's pool states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Normal,
    FailedOver,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::FailedOver => "failed_over",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(Self::Normal),
            "failed_over" => Some(Self::FailedOver),
            _ => None,
        }
    }

    /// The database the servers use in this state.
    pub fn role(self) -> Role {
        match self {
            Self::Normal => Role::Primary,
            Self::FailedOver => Role::Backup,
        }
    }
}

/// The pool's state as one database records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRecord {
    pub state: PoolState,
    pub epoch: i64,
    /// Microseconds since the Unix epoch.
    pub changed_at: i64,
}

/// What a look at one database found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub role: Role,
    /// The URL, password redacted.
    pub url: String,
    /// Why it could not be read; `None` when it answered.
    pub error: Option<String>,
    /// A standby replaying another database's WAL (read-only).
    pub in_recovery: bool,
    pub state: Option<StateRecord>,
}

impl Probe {
    pub fn reachable(&self) -> bool {
        self.error.is_none()
    }
}

/// A pool's primary and backup databases.
#[derive(Debug, Clone)]
pub struct Pair {
    primary: (tokio_postgres::Config, String),
    backup: (tokio_postgres::Config, String),
}

impl Pair {
    pub fn parse(primary: &str, backup: &str) -> Result<Self, OpenError> {
        Ok(Self { primary: (parse_url(primary)?, redact(primary)), backup: (parse_url(backup)?, redact(backup)) })
    }

    fn endpoint(&self, role: Role) -> &(tokio_postgres::Config, String) {
        match role {
            Role::Primary => &self.primary,
            Role::Backup => &self.backup,
        }
    }

    /// Reads one database's recovery status and pool state.
    pub async fn probe(&self, role: Role) -> Probe {
        let (config, url) = self.endpoint(role);
        let mut probe = Probe { role, url: url.clone(), error: None, in_recovery: false, state: None };
        let look = async {
            let client = connect(config).await?;
            let in_recovery: bool = client.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
            Ok::<_, tokio_postgres::Error>((in_recovery, read_state(&client).await?))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, look).await {
            Ok(Ok((in_recovery, state))) => {
                probe.in_recovery = in_recovery;
                probe.state = state;
            }
            Ok(Err(e)) => probe.error = Some(e.to_string()),
            Err(_) => probe.error = Some("timed out".into()),
        }
        probe
    }

    /// Both databases, primary first.
    pub async fn probe_both(&self) -> [Probe; 2] {
        let (primary, backup) = tokio::join!(self.probe(Role::Primary), self.probe(Role::Backup));
        [primary, backup]
    }

    /// The database the pool's state names; `None` when neither database can be read.
    pub(crate) async fn wanted(&self) -> Option<Role> {
        decide(&self.probe_both().await)
    }

    pub(crate) async fn open(&self, role: Role) -> Result<Database, OpenError> {
        let (config, url) = self.endpoint(role);
        open_database(config.clone(), url, role.as_str()).await
    }
}

/// The highest epoch read wins; a pair that never switched is `normal`.
fn decide(probes: &[Probe]) -> Option<Role> {
    if !probes.iter().any(Probe::reachable) {
        return None;
    }
    let newest = probes.iter().filter_map(|p| p.state).max_by_key(|s| s.epoch);
    Some(newest.map_or(Role::Primary, |s| s.state.role()))
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let mut config = config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn read_state(client: &Client) -> Result<Option<StateRecord>, tokio_postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('pool_state') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(None);
    }
    let row = client.query_opt("SELECT state, epoch, changed_at FROM pool_state WHERE id = 1", &[]).await?;
    Ok(row
        .and_then(|r| Some(StateRecord { state: PoolState::parse(r.get(0))?, epoch: r.get(1), changed_at: r.get(2) })))
}

async fn write_state(client: &Client, state: PoolState, epoch: i64) -> Result<(), tokio_postgres::Error> {
    let sql = "INSERT INTO pool_state (id, state, epoch, changed_at) VALUES (1, $1, $2, $3) \
               ON CONFLICT (id) DO UPDATE SET state = excluded.state, epoch = excluded.epoch, \
               changed_at = excluded.changed_at";
    client.execute(sql, &[&state.as_str(), &epoch, &now_micros()]).await.map(drop)
}

/// Follows the pool's state: moves the store to the database it names once that database takes writes.
pub(crate) fn monitor(pair: Pair, in_use: Weak<watch::Sender<Arc<Database>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_error = None;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(wanted) = pair.wanted().await else { continue };
            let Some(sender) = in_use.upgrade() else { return };
            let current = sender.borrow().role;
            if wanted.as_str() == current {
                last_error = None;
                continue;
            }
            match pair.open(wanted).await {
                Ok(database) => {
                    warn!(from = current, to = %wanted, url = %database.shown, "the pool's state changed: switching databases");
                    sender.send_replace(Arc::new(database));
                    last_error = None;
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        warn!(to = %wanted, error = %message, "the pool's state names a database that cannot be used yet; retrying");
                        last_error = Some(message);
                    }
                }
            }
        }
    })
}

/// What [`switch`] did.
#[derive(Debug, Clone)]
pub struct SwitchReport {
    pub state: PoolState,
    pub epoch: i64,
    /// The database left behind was reachable and has been made read-only.
    pub fenced: bool,
    /// The target was a standby and has been promoted.
    pub promoted: bool,
    pub warnings: Vec<String>,
}

/// Switches the pool to the `to` database: `Backup` is a failover, `Primary` a failback. Refuses, changing
/// nothing, when the target cannot be reached or is still a standby and `promote` is false. `catch_up` bounds
/// the wait for the standby to replay what the fenced database committed, and for its promotion.
pub async fn switch(pair: &Pair, to: Role, promote: bool, catch_up: Duration) -> Result<SwitchReport, String> {
    let from = to.other();
    let [primary, backup] = pair.probe_both().await;
    let (leaving, target) = match to {
        Role::Primary => (backup, primary),
        Role::Backup => (primary, backup),
    };
    if let Some(e) = &target.error {
        return Err(format!("cannot reach the {to} database {}: {e}", target.url));
    }
    if target.in_recovery && !promote {
        return Err(format!(
            "the {to} database {} is a standby still in recovery: promote it first (pg_ctl promote) or pass --promote",
            target.url
        ));
    }
    let epoch = [&leaving, &target].iter().filter_map(|p| p.state).map(|s| s.epoch).max().unwrap_or(0) + 1;
    let state = to.state();
    let mut report = SwitchReport { state, epoch, fenced: false, promoted: false, warnings: vec![] };
    let (to_config, _) = pair.endpoint(to);
    if leaving.reachable() && !leaving.in_recovery {
        let (lsn, spared) = fence(&pair.endpoint(from).0, state, epoch)
            .await
            .map_err(|e| format!("cannot fence the {from} database {}: {e}", leaving.url))?;
        report.fenced = true;
        if spared > 0 {
            report.warnings.push(format!(
                "{spared} session(s) of other roles on the {from} database could not be ended; run this command as \
                 the servers' database role or a superuser"
            ));
        }
        info!(%from, %lsn, "fenced the database being left");
        if target.in_recovery {
            wait_for_replay(to_config, &lsn, catch_up).await.map_err(|e| {
                format!("{e}; the {from} database is fenced (read-only): rerun once the {to} database has caught up")
            })?;
        } else {
            report.warnings.push(format!(
                "the {to} database had already been promoted: anything committed on the {from} database after that \
                 is not in it"
            ));
        }
    }
    if target.in_recovery {
        promote_standby(to_config, catch_up).await.map_err(|e| format!("cannot promote the {to} database: {e}"))?;
        report.promoted = true;
    }
    let warnings =
        take_over(to_config, state, epoch).await.map_err(|e| format!("cannot take over the {to} database: {e}"))?;
    report.warnings.extend(warnings);
    Ok(report)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Writes the new state into the database being left, makes it read-only for new sessions and ends the others.
/// Returns its WAL position after that, and how many sessions could not be ended (other roles).
async fn fence(
    config: &tokio_postgres::Config,
    state: PoolState,
    epoch: i64,
) -> Result<(String, i64), tokio_postgres::Error> {
    let client = connect(config).await?;
    // The fence must not wait for a standby that may be gone; the replay wait below checks the standby instead.
    client.batch_execute("SET synchronous_commit = local").await?;
    write_state(&client, state, epoch).await?;
    let name: String = client.query_one("SELECT current_database()", &[]).await?.get(0);
    client
        .batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", quote_ident(&name)))
        .await?;
    let sessions = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
                    AND backend_type = 'client backend'";
    client
        .execute(&format!("SELECT pg_terminate_backend(pid) {sessions} AND pg_has_role(usesysid, 'MEMBER')"), &[])
        .await?;
    let spared: i64 = client
        .query_one(&format!("SELECT count(*) {sessions} AND NOT pg_has_role(usesysid, 'MEMBER')"), &[])
        .await?
        .get(0);
    let lsn: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    Ok((lsn, spared))
}

async fn wait_for_replay(config: &tokio_postgres::Config, lsn: &str, limit: Duration) -> Result<(), String> {
    let client = connect(config).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let done: Option<bool> = client
            .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if done == Some(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the standby has not replayed up to {lsn} within {} s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn promote_standby(config: &tokio_postgres::Config, limit: Duration) -> Result<(), String> {
    let client = connect(config).await.map_err(|e| e.to_string())?;
    let seconds = i32::try_from(limit.as_secs().max(1)).unwrap_or(i32::MAX);
    let promoted: bool =
        client.query_one("SELECT pg_promote(true, $1)", &[&seconds]).await.map_err(|e| e.to_string())?.get(0);
    if promoted { Ok(()) } else { Err(format!("not promoted within {seconds} s")) }
}

/// Lifts a fence the database may have inherited, applies pending migrations and records the new state. Returns
/// warnings about its synchronous replication.
async fn take_over(config: &tokio_postgres::Config, state: PoolState, epoch: i64) -> Result<Vec<String>, String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let mut client = connect(config).await.map_err(text)?;
    client
        .batch_execute("SET default_transaction_read_only = off; SET synchronous_commit = local")
        .await
        .map_err(text)?;
    let name: String = client.query_one("SELECT current_database()", &[]).await.map_err(text)?.get(0);
    client
        .batch_execute(&format!("ALTER DATABASE {} RESET default_transaction_read_only", quote_ident(&name)))
        .await
        .map_err(text)?;
    migrations::apply(&mut client).await.map_err(|e| e.to_string())?;
    write_state(&client, state, epoch).await.map_err(text)?;
    let standbys: String =
        client.query_one("SELECT current_setting('synchronous_standby_names')", &[]).await.map_err(text)?.get(0);
    let streaming: i64 = client
        .query_one("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')", &[])
        .await
        .map_err(text)?
        .get(0);
    let mut warnings = vec![];
    if standbys.is_empty() {
        warnings.push(
            "synchronous replication is off on the new database: set synchronous_standby_names once a new standby \
             streams from it, or an acknowledged message can be lost with it"
                .to_owned(),
        );
    } else if streaming == 0 {
        warnings.push(format!(
            "synchronous_standby_names is '{standbys}' but no synchronous standby is connected: every commit waits \
             until one connects (ALTER SYSTEM RESET synchronous_standby_names to run without one)"
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(role: Role, reachable: bool, state: Option<(PoolState, i64)>) -> Probe {
        Probe {
            role,
            url: String::new(),
            error: (!reachable).then(|| "down".to_owned()),
            in_recovery: false,
            state: state.map(|(state, epoch)| StateRecord { state, epoch, changed_at: 0 }),
        }
    }

    #[test]
    fn the_newest_state_names_the_database() {
        use PoolState::*;
        let p = |r, s| probe(Role::Primary, r, s);
        let b = |r, s| probe(Role::Backup, r, s);
        assert_eq!(decide(&[p(false, None), b(false, None)]), None, "nothing readable: stay");
        assert_eq!(decide(&[p(true, None), b(true, None)]), Some(Role::Primary), "never switched");
        assert_eq!(decide(&[p(false, None), b(true, Some((Normal, 1)))]), Some(Role::Primary));
        assert_eq!(decide(&[p(false, None), b(true, Some((FailedOver, 2)))]), Some(Role::Backup));
        // The old primary comes back still saying normal: the newer failover wins.
        assert_eq!(decide(&[p(true, Some((Normal, 1))), b(true, Some((FailedOver, 2)))]), Some(Role::Backup));
        // A fenced primary names the backup before the backup knows.
        assert_eq!(decide(&[p(true, Some((FailedOver, 2))), b(true, Some((Normal, 1)))]), Some(Role::Backup));
        assert_eq!(decide(&[p(true, Some((Normal, 3))), b(true, Some((FailedOver, 2)))]), Some(Role::Primary));
    }
}
