//! `pchat compliance …` (Lync `*-CsPersistentChatComplianceConfiguration`): configuration, the archive's events,
//! verification of its hash chains, and the compliance worker run on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Client, segment};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum ComplianceCmd {
    /// The compliance configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Archived events, oldest first.
    Events(EventsArgs),
    /// Recompute the archive's hash chains; exits 1 and names the first broken event if one does not match.
    Verify,
    /// Run the compliance worker alone (it also runs inside every `pchat serve`).
    Worker(WorkerArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCmd {
    Get {
        #[arg(default_value = "global")]
        scope: String,
    },
    /// Change settings at a scope (global or pool:NAME); settings not given keep their current value.
    Set {
        #[arg(default_value = "global")]
        scope: String,
        #[arg(long, action = clap::ArgAction::Set)]
        enabled: Option<bool>,
        /// xml, csv or jsonl.
        #[arg(long)]
        adapter: Option<String>,
        #[arg(long)]
        output_dir: Option<String>,
        /// Seconds between exports (60 to 2592000).
        #[arg(long)]
        run_interval_secs: Option<u64>,
        #[arg(long, action = clap::ArgAction::Set)]
        one_chat_room_per_output_file: Option<bool>,
        #[arg(long, action = clap::ArgAction::Set)]
        add_user_details: Option<bool>,
        #[arg(long, action = clap::ArgAction::Set)]
        add_chat_room_details: Option<bool>,
        #[arg(long, action = clap::ArgAction::Set)]
        create_file_attachments_manifest: Option<bool>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// RFC 3339 time, inclusive.
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// Room id.
    #[arg(long)]
    room: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// Event type, e.g. CHAT.
    #[arg(long = "type")]
    kind: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The server's configuration file (databases, pool name).
    #[arg(long, env = "PCHAT_CONFIG")]
    config: Option<PathBuf>,
}

const EVENT_COLUMNS: &[&str] = &["/id", "/type", "/ts", "/user", "/room", "/content"];

pub(crate) async fn run(c: &Client, json_out: bool, cmd: ComplianceCmd) -> anyhow::Result<ExitCode> {
    let out = crate::cli::Output { json: json_out };
    match cmd {
        ComplianceCmd::Config(ConfigCmd::Get { scope }) => {
            out.object(&c.get(&format!("/api/v1/compliance/configuration/{}", segment(&scope))).await?);
        }
        ComplianceCmd::Config(ConfigCmd::Set {
            scope,
            enabled,
            adapter,
            output_dir,
            run_interval_secs,
            one_chat_room_per_output_file,
            add_user_details,
            add_chat_room_details,
            create_file_attachments_manifest,
        }) => {
            let path = format!("/api/v1/compliance/configuration/{}", segment(&scope));
            let mut body: Map<String, Value> = match c.get(&path).await? {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(v) = value {
                    body.insert(key.to_owned(), v);
                }
            };
            set("enabled", enabled.map(Value::from));
            set("adapter", adapter.map(Value::from));
            set("output_dir", output_dir.map(Value::from));
            set("run_interval_secs", run_interval_secs.map(Value::from));
            set("one_chat_room_per_output_file", one_chat_room_per_output_file.map(Value::from));
            set("add_user_details", add_user_details.map(Value::from));
            set("add_chat_room_details", add_chat_room_details.map(Value::from));
            set("create_file_attachments_manifest", create_file_attachments_manifest.map(Value::from));
            out.object(&c.call(Method::PUT, &path, Some(Value::Object(body))).await?);
        }
        ComplianceCmd::Events(args) => {
            let mut query = vec![format!("limit={}", args.limit)];
            for (key, value) in
                [("from", args.from), ("to", args.to), ("room", args.room), ("user", args.user), ("type", args.kind)]
            {
                if let Some(v) = value {
                    query.push(format!("{key}={}", segment(&v)));
                }
            }
            out.table(&c.get(&format!("/api/v1/compliance/events?{}", query.join("&"))).await?, EVENT_COLUMNS);
        }
        ComplianceCmd::Verify => {
            let report = c.call(Method::POST, "/api/v1/compliance/verify", Some(json!({}))).await?;
            out.object(&report);
            if report["ok"] != true {
                return Ok(ExitCode::FAILURE);
            }
        }
        ComplianceCmd::Worker(_) => unreachable!("handled without a server"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pchat compliance worker`: opens the databases of the configuration and moves captured events into the archive
/// until SIGTERM or Ctrl-C.
pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_ref())?;
    crate::logging::init(&config.log_format);
    let (store, archive) = crate::serve::open_databases(&config).await?;
    let service = pchat_service::Service::start(
        store,
        crate::serve::settings(&config)?,
        pchat_http::encoder(config.domain.clone()),
    );
    service.set_archive(archive);
    let worker = service.start_compliance_worker();
    tracing::info!("compliance worker running");
    crate::serve::wait_for_signal().await;
    worker.abort();
    Ok(ExitCode::SUCCESS)
}
