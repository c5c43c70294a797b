//! `pchat pool failover | failback | state`: moves a pool between its primary and backup databases (Lync's
//! `Set-CsPersistentChatState -PoolState FailedOver | Normal`). These verbs talk to the two databases directly,
//! not to a server: in a disaster the primary database, and with it every server's sign-in, may be gone. Every
//! server of the pool follows the state written here within about a second (`pchat_store_postgres::ha`).
//! The runbook is docs/failover.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pchat_store_postgres::ha::{self, Pair, Role};
use serde_json::json;

use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct DatabasesArgs {
    /// The pool's configuration file, for database.url and database.backup_url.
    #[arg(long, env = "PCHAT_CONFIG")]
    config: Option<PathBuf>,
    /// The primary database (overrides the file).
    #[arg(long, env = "PCHAT_DATABASE_URL")]
    database_url: Option<String>,
    /// The backup database (overrides the file).
    #[arg(long, env = "PCHAT_DATABASE_BACKUP_URL")]
    backup_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SwitchArgs {
    #[command(flatten)]
    databases: DatabasesArgs,
    /// Promote the target when it is still a standby (SELECT pg_promote()).
    #[arg(long)]
    promote: bool,
    /// Longest wait, in seconds, for the standby to catch up and for its promotion.
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

impl DatabasesArgs {
    fn pair(self) -> anyhow::Result<Pair> {
        let config = Config::load(self.config.as_ref())?;
        let primary = self.database_url.unwrap_or(config.database.url);
        let Some(backup) = self.backup_url.or(config.database.backup_url) else {
            bail!("no backup database: set database.backup_url in the configuration or pass --backup-url");
        };
        if !primary.starts_with("postgres") {
            bail!("failover needs PostgreSQL databases; the primary is {primary}");
        }
        Ok(Pair::parse(&primary, &backup)?)
    }
}

/// `pchat pool state`: each database's reachability, recovery status and recorded pool state.
pub(crate) async fn state(args: DatabasesArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let probes = args.pair()?.probe_both().await;
    if json_out {
        let list: Vec<_> = probes.iter().map(probe_json).collect();
        println!("{}", json!({ "databases": list }));
    } else {
        println!("{:<8} {:<10} {:<8} {:<12} {:>5}  url", "role", "reachable", "standby", "state", "epoch");
        for p in &probes {
            let (state, epoch) = p.state.map_or(("-", String::from("-")), |s| (s.state.as_str(), s.epoch.to_string()));
            println!(
                "{:<8} {:<10} {:<8} {:<12} {:>5}  {}{}",
                p.role.as_str(),
                if p.reachable() { "yes" } else { "no" },
                if p.in_recovery { "yes" } else { "no" },
                state,
                epoch,
                p.url,
                p.error.as_ref().map(|e| format!("  ({e})")).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn probe_json(p: &ha::Probe) -> serde_json::Value {
    json!({
        "role": p.role.as_str(),
        "url": p.url,
        "reachable": p.reachable(),
        "error": p.error,
        "standby": p.in_recovery,
        "state": p.state.map(|s| s.state.as_str()),
        "epoch": p.state.map(|s| s.epoch),
    })
}

/// `pchat pool failover` (to the backup) and `pchat pool failback` (to the primary).
pub(crate) async fn switch(args: SwitchArgs, to: Role, json_out: bool) -> anyhow::Result<ExitCode> {
    let pair = args.databases.pair()?;
    let report = ha::switch(&pair, to, args.promote, Duration::from_secs(args.wait))
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("the pool was not switched to its {to} database"))?;
    if json_out {
        println!(
            "{}",
            json!({
                "state": report.state.as_str(),
                "epoch": report.epoch,
                "database": to.as_str(),
                "fenced": report.fenced,
                "promoted": report.promoted,
                "warnings": report.warnings,
            })
        );
    } else {
        println!(
            "pool state: {} (epoch {}): the servers now use the {to} database",
            report.state.as_str(),
            report.epoch
        );
        if report.fenced {
            println!("the {} database was fenced (read-only) after the standby caught up", to.other());
        }
        if report.promoted {
            println!("the {to} database was promoted");
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
