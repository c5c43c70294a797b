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
    /// Recompute the archive's hash chains and check them against the witnesses kept outside the archive (this
    /// server's witness file, the export's *.chain.json files); exits 1 and says what does not hold.
    Verify {
        /// Also check the *.chain.json witnesses in this directory (e.g. a copy of the export kept elsewhere).
        #[arg(long)]
        witness_dir: Vec<PathBuf>,
    },
    /// Run the compliance worker alone (it also runs inside every `pchat serve`).
    Worker(WorkerArgs),
    /// Run the periodic export now, whatever the interval (into the configured output directory).
    Run,
    /// Export archived events into a directory on demand, read from the databases of this host's configuration
    /// (the periodic export's cursor is not touched).
    Export(ExportArgs),
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
        /// Days archived events are kept; 0 keeps them forever.
        #[arg(long)]
        retention_days: Option<u32>,
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

impl EventsArgs {
    /// The filters as a query string of the events endpoints.
    pub(crate) fn query(&self) -> String {
        let mut query = vec![format!("limit={}", self.limit)];
        for (key, value) in
            [("from", &self.from), ("to", &self.to), ("room", &self.room), ("user", &self.user), ("type", &self.kind)]
        {
            if let Some(v) = value {
                query.push(format!("{key}={}", segment(v)));
            }
        }
        query.join("&")
    }
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// xml (Lync's XmlAdapter format and pchat's companion file), csv or jsonl.
    #[arg(long, default_value = "xml", value_parser = ["xml", "csv", "jsonl"])]
    format: String,
    /// RFC 3339 time, inclusive.
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// Room id.
    #[arg(long)]
    room: Option<String>,
    /// One file per room.
    #[arg(long)]
    one_chat_room_per_output_file: bool,
    #[arg(long)]
    add_user_details: bool,
    #[arg(long)]
    add_chat_room_details: bool,
    /// The pool whose events to export (default: this server's).
    #[arg(long)]
    pool: Option<String>,
    #[command(flatten)]
    server: ServerConfig,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    server: ServerConfig,
}

/// Where a command that works on the databases directly finds them: the server's configuration.
#[derive(Debug, Args)]
pub(crate) struct ServerConfig {
    /// The server's configuration file (databases, pool name).
    #[arg(long, env = "PCHAT_CONFIG")]
    config: Option<PathBuf>,
    /// The server's data directory (the embedded databases), overriding the configuration's.
    #[arg(long, env = "PCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// Whether a running server left local administration credentials (`server.json` with a token).
    pub(crate) fn has_local_access(&self) -> bool {
        let Ok(config) = self.load() else { return false };
        std::fs::read_to_string(config.data_dir.join(crate::serve::LOCAL_ACCESS_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<crate::serve::LocalAccess>(&text).ok())
            .is_some_and(|access| !access.token.is_empty())
    }

    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_ref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// The service on the configured databases, with its archive.
    pub(crate) async fn service(&self) -> anyhow::Result<(Config, std::sync::Arc<pchat_service::Service>)> {
        let config = self.load()?;
        let (store, archive) = crate::serve::open_databases(&config).await?;
        let service = pchat_service::Service::start(
            store,
            crate::serve::settings(&config)?,
            pchat_http::encoder(config.domain.clone()),
        );
        service.set_archive(archive);
        service.set_chain_seal(config.compliance.chain_key()?, Some(config.compliance.witness_path(&config.data_dir)));
        Ok((config, service))
    }
}

pub(crate) const EVENT_COLUMNS: &[&str] = &["/id", "/type", "/ts", "/user", "/room", "/content"];

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
            retention_days,
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
            set("retention_days", retention_days.map(Value::from));
            out.object(&c.call(Method::PUT, &path, Some(Value::Object(body))).await?);
        }
        ComplianceCmd::Events(args) => {
            out.table(&c.get(&format!("/api/v1/compliance/events?{}", args.query())).await?, EVENT_COLUMNS);
        }
        ComplianceCmd::Verify { witness_dir } => {
            let mut witnesses = vec![];
            for dir in &witness_dir {
                let found = pchat_service::witness::read_export_witnesses(dir).map_err(anyhow::Error::msg)?;
                witnesses.extend(found.into_iter().map(|(_, w)| w));
            }
            let body = json!({ "witnesses": witnesses });
            let report = c.call(Method::POST, "/api/v1/compliance/verify", Some(body)).await?;
            out.object(&report);
            if report["ok"] != true {
                return Ok(ExitCode::FAILURE);
            }
        }
        ComplianceCmd::Run => {
            out.object(&c.call(Method::POST, "/api/v1/compliance/export", Some(json!({}))).await?);
        }
        ComplianceCmd::Worker(_) | ComplianceCmd::Export(_) => unreachable!("handled without a server"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pchat compliance worker`: opens the databases of the configuration and moves captured events into the archive
/// until SIGTERM or Ctrl-C.
pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (config, service) = args.server.service().await?;
    crate::logging::init(&config.log_format);
    let worker = service.start_compliance_worker();
    tracing::info!("compliance worker running");
    crate::serve::wait_for_signal().await;
    worker.abort();
    Ok(ExitCode::SUCCESS)
}

/// `pchat compliance export`: renders archived events into a directory, reading the databases directly (no
/// server needed).
pub(crate) async fn export(args: ExportArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let (_, service) = args.server.service().await?;
    let time = |field: &str, raw: &Option<String>| -> anyhow::Result<Option<i64>> {
        Ok(raw.as_deref().map(|t| pchat_service::time::parse_micros(field, t)).transpose()?)
    };
    let query = pchat_store::EventQuery {
        pool: args.pool.clone(),
        from_ts: time("from", &args.from)?,
        to_ts: time("to", &args.to)?,
        room_id: args.room.clone(),
        ..Default::default()
    };
    let options = pchat_service::export::ExportOptions {
        one_chat_room_per_output_file: args.one_chat_room_per_output_file,
        add_user_details: args.add_user_details,
        add_chat_room_details: args.add_chat_room_details,
        ..pchat_service::export::ExportOptions::plain(&args.format)
    };
    let report = service.export_to(&args.out, &options, query).await?;
    let out = crate::cli::Output { json: json_out };
    out.object(&serde_json::to_value(&report)?);
    Ok(ExitCode::SUCCESS)
}
