//! Command-line verbs (PRODUCT.md §7). List options follow Lync's idiom: `--add-X a,b`, `--remove-X a,b`, or
//! `--X a,b` to replace the list. Output is a readable table or `key: value` lines; `--json` prints the API's JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Client, segment};
use crate::config::Config;
use pchat_store_postgres::ha::Role;

#[derive(Debug, Parser)]
#[command(name = "pchat", version, about = "pchat: a self-hosted persistent group chat server")]
pub(crate) struct Cli {
    /// Server URL for administration verbs, given before the verb (default: the local server found in the
    /// data directory).
    #[arg(long, env = "PCHAT_URL")]
    url: Option<String>,
    /// Bearer token for administration verbs (default: the local administrator token).
    #[arg(long, env = "PCHAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of a certificate to trust (a self-signed server certificate or a private CA), given before the verb.
    #[arg(long, env = "PCHAT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Administrators (Lync CsPersistentChatAdministrator) and user administrators.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Users of the built-in directory.
    #[command(subcommand)]
    User(UserCmd),
    /// Groups (nesting allowed, cycles rejected).
    #[command(subcommand)]
    Group(GroupCmd),
    /// Persistent chat policy (enable_persistent_chat) per scope.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Chat configuration per scope.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Categories.
    #[command(subcommand)]
    Category(CategoryCmd),
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCmd),
    /// Remove or replace messages.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Add-ins.
    #[command(subcommand)]
    Addin(AddinCmd),
    /// Database tools (offline).
    #[command(subcommand)]
    Db(DbCmd),
    /// The pool's servers (Lync Set-CsPersistentChatActiveServer).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Compliance: configuration, archived events, verification, the worker.
    #[command(subcommand)]
    Compliance(crate::compliance::ComplianceCmd),
    /// The audit trail of administrative actions (who, when, what, before and after), oldest first.
    Audit(crate::compliance::EventsArgs),
    /// Synthetic transaction: two test users exchange a message through a room.
    Check(crate::check::CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Data directory (databases, local admin credentials).
    #[arg(long, env = "PCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "PCHAT_LISTEN")]
    listen: Option<String>,
    /// The SIP/mail domain of this deployment.
    #[arg(long, env = "PCHAT_DOMAIN")]
    domain: Option<String>,
    /// Configuration file (TOML; see docs/pchat.toml).
    #[arg(long, env = "PCHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite: (default), sqlite:PATH or postgres://….
    #[arg(long, env = "PCHAT_DATABASE_URL")]
    database_url: Option<String>,
    /// The pool's backup database (postgres://…, a streaming standby).
    #[arg(long, env = "PCHAT_DATABASE_BACKUP_URL")]
    backup_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Grant a role (admin by default). On the server's host this also works when no administrator can sign in
    /// (no `server.json` token, or `--on-host`): the role is granted in the database directly.
    Add {
        user: String,
        #[arg(long, default_value = "admin")]
        role: String,
        /// Grant directly in the configured database instead of through the running server.
        #[arg(long)]
        on_host: bool,
        #[command(flatten)]
        server: crate::compliance::ServerConfig,
    },
    List,
    /// Revoke a role (admin by default).
    Remove {
        user: String,
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    Add {
        address: String,
        #[arg(long)]
        name: String,
        #[arg(long, env = "PCHAT_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    Get {
        address: String,
    },
    List {
        #[arg(long, default_value = "")]
        query: String,
    },
    Remove {
        address: String,
    },
    /// Sets a user's password; every session of the user ends (their open connections close).
    SetPassword {
        address: String,
        #[arg(long, env = "PCHAT_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Ends every session of a user (their open connections close).
    EndSessions {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    New {
        name: String,
    },
    Get {
        name: String,
    },
    List,
    Set {
        name: String,
        #[command(flatten)]
        members: ListArgs,
    },
    Remove {
        name: String,
    },
}

/// `--add-member a,b`, `--remove-member a,b`, `--members a,b` (replace).
#[derive(Debug, Args, Default)]
struct ListArgs {
    #[arg(long = "add-member", value_delimiter = ',')]
    add: Vec<String>,
    #[arg(long = "remove-member", value_delimiter = ',')]
    remove: Vec<String>,
    #[arg(long = "members", value_delimiter = ',')]
    replace: Option<Vec<String>>,
}

fn list_change(add: &[String], remove: &[String], replace: &Option<Vec<String>>) -> Option<Value> {
    if let Some(r) = replace {
        return Some(json!({ "replace": r }));
    }
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    Some(json!({ "add": add, "remove": remove }))
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Show a scope's policy: global, site:NAME, pool:NAME, user:ADDRESS.
    Get { scope: String },
    Set {
        scope: String,
        #[arg(long, action = clap::ArgAction::Set)]
        enable: bool,
    },
    /// Remove a scope's policy (global: reset to disabled).
    Remove { scope: String },
    /// The effective policy of a user.
    Effective { user: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    Get {
        #[arg(default_value = "global")]
        scope: String,
    },
    /// Change settings at a scope; settings not given keep their current value.
    Set {
        #[arg(default_value = "global")]
        scope: String,
        #[arg(long)]
        default_chat_history: Option<i64>,
        #[arg(long)]
        max_file_size_kb: Option<i64>,
        #[arg(long)]
        participant_update_limit: Option<i64>,
        #[arg(long)]
        room_management_url: Option<String>,
        #[arg(long)]
        max_message_bytes: Option<i64>,
    },
    Remove {
        scope: String,
    },
}

#[derive(Debug, Args, Default)]
struct CategoryFields {
    #[arg(long)]
    description: Option<String>,
    #[arg(long, action = clap::ArgAction::Set)]
    file_upload: Option<bool>,
    #[arg(long, action = clap::ArgAction::Set)]
    chat_history: Option<bool>,
    #[arg(long, action = clap::ArgAction::Set)]
    invitations: Option<bool>,
    #[arg(long, value_delimiter = ',')]
    add_allowed: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_allowed: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    allowed: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    add_denied: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_denied: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    denied: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    add_creator: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_creator: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    creators: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
enum CategoryCmd {
    New {
        name: String,
        #[command(flatten)]
        fields: CategoryFields,
    },
    /// One category (id or name), or all.
    Get {
        category: Option<String>,
    },
    Set {
        category: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: CategoryFields,
    },
    Remove {
        category: String,
    },
}

#[derive(Debug, Args, Default)]
struct RoomFields {
    #[arg(long)]
    description: Option<String>,
    /// open, closed or secret.
    #[arg(long)]
    privacy: Option<String>,
    /// normal or auditorium.
    #[arg(long = "type")]
    room_type: Option<String>,
    /// inherit or off.
    #[arg(long)]
    invitations: Option<String>,
    #[arg(long)]
    addin: Option<String>,
    #[arg(long, action = clap::ArgAction::Set)]
    disabled: Option<bool>,
    #[arg(long, value_delimiter = ',')]
    add_member: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_member: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    add_manager: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_manager: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    managers: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    add_presenter: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    remove_presenter: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    presenters: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
enum RoomCmd {
    New {
        name: String,
        #[arg(long)]
        category: String,
        #[command(flatten)]
        fields: RoomFields,
    },
    /// One room (id or name), or the directory.
    Get {
        room: Option<String>,
        #[arg(long)]
        query: Option<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long, action = clap::ArgAction::Set)]
        disabled: Option<bool>,
    },
    Set {
        room: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        fields: RoomFields,
    },
    Remove {
        room: String,
    },
    /// Delete every message up to and including END_DATE (RFC 3339).
    Clear {
        room: String,
        #[arg(long)]
        end_date: String,
    },
}

#[derive(Debug, Subcommand)]
enum MessageCmd {
    /// Remove (or with --replace, replace the text of) the messages matched.
    Remove {
        room: String,
        #[arg(long)]
        author: Option<String>,
        #[arg(long)]
        start_date: Option<String>,
        #[arg(long)]
        end_date: Option<String>,
        #[arg(long)]
        keywords: Option<String>,
        /// all, any or exact.
        #[arg(long = "match", default_value = "all")]
        match_mode: String,
        #[arg(long)]
        case_sensitive: bool,
        #[arg(long)]
        replace: Option<String>,
    },
    /// Search history in every room you may read (administrators: disabled rooms too), newest first.
    Search {
        /// The words to find.
        query: String,
        /// all (every word), any (one word) or exact (the phrase).
        #[arg(long = "match", default_value = "all", value_parser = ["all", "any", "exact"])]
        match_mode: String,
        #[arg(long)]
        case_sensitive: bool,
        #[arg(long)]
        author: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// A room to search (id or name); repeat for several.
        #[arg(long)]
        room: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after the page that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DbCmd {
    /// Copy every record from one database to another, empty one, and verify the copy (counts and checksums).
    Convert(crate::convert::ConvertArgs),
}

#[derive(Debug, Subcommand)]
enum PoolCmd {
    /// Every server: state, active, connections.
    Status,
    /// Choose which servers accept new connections.
    SetActive {
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Exactly these servers are active.
        #[arg(long, value_delimiter = ',')]
        servers: Option<Vec<String>>,
        /// No server is active.
        #[arg(long)]
        none: bool,
        /// Flip every server between active and inactive.
        #[arg(long)]
        swap: bool,
    },
    /// Move every server of the pool to its backup database (Lync PoolState FailedOver); docs/failover.md.
    Failover(crate::failover::SwitchArgs),
    /// Move every server of the pool back to its primary database (Lync PoolState Normal).
    Failback(crate::failover::SwitchArgs),
    /// The pool's databases: reachable, standby or not, and the pool state each records.
    State(crate::failover::DatabasesArgs),
}

#[derive(Debug, Subcommand)]
enum AddinCmd {
    New {
        name: String,
        #[arg(long)]
        url: String,
    },
    Get {
        name: Option<String>,
    },
    Set {
        addin: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
    },
    Remove {
        name: String,
    },
}

/// Resolves a room or category argument: an id as is, anything else as `name:…`.
fn reference(raw: &str) -> String {
    let looks_like_id = raw.len() == 36 && raw.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if looks_like_id || raw.starts_with("name:") { segment(raw) } else { segment(&format!("name:{raw}")) }
}

fn insert_opt<T: serde::Serialize>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), json!(v));
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Serve(args) = cli.command {
        let mut config = Config::load(args.config.as_ref())?;
        if let Some(v) = args.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = args.listen {
            config.listen = v;
        }
        if let Some(v) = args.domain {
            config.domain = v;
        }
        if let Some(v) = args.database_url {
            config.database.url = v;
        }
        if let Some(v) = args.backup_url {
            config.database.backup_url = Some(v);
        }
        config.validate()?;
        crate::logging::init(&config.log_format);
        crate::serve::run(config).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // Verbs that work on databases directly, without a running server.
    match cli.command {
        Command::Db(DbCmd::Convert(args)) => return crate::convert::run(args, cli.json).await,
        Command::Pool(PoolCmd::Failover(args)) => return crate::failover::switch(args, Role::Backup, cli.json).await,
        Command::Pool(PoolCmd::Failback(args)) => return crate::failover::switch(args, Role::Primary, cli.json).await,
        Command::Pool(PoolCmd::State(args)) => return crate::failover::state(args, cli.json).await,
        Command::Compliance(crate::compliance::ComplianceCmd::Worker(args)) => {
            return crate::compliance::worker(args).await;
        }
        Command::Compliance(crate::compliance::ComplianceCmd::Export(args)) => {
            return crate::compliance::export(args, cli.json).await;
        }
        Command::Admin(AdminCmd::Add { user, role, on_host, server })
            if on_host || (cli.url.is_none() && !server.has_local_access()) =>
        {
            let (_, service) = server.service().await?;
            service.grant_role_on_host(&crate::serve::hostname(), &user, &role).await?;
            Output { json: cli.json }.done(&format!("granted {role} to {user} (directly in the database)"));
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let data_dir = std::env::var_os("PCHAT_DATA_DIR").map(PathBuf::from);
    let client = Client::locate(cli.url, cli.token, cli.ca_cert, data_dir)?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve(_) | Command::Db(_) => unreachable!("handled above"),
        Command::Check(args) => return crate::check::run(&client, args, cli.json).await,
        Command::Compliance(cmd) => return crate::compliance::run(&client, cli.json, cmd).await,
        Command::Audit(args) => {
            let columns = ["/id", "/type", "/ts", "/user", "/room", "/content"];
            out.table(&client.get(&format!("/api/v1/audit?{}", args.query())).await?, &columns);
        }
        Command::Admin(cmd) => admin(&client, &out, cmd).await?,
        Command::User(cmd) => user(&client, &out, cmd).await?,
        Command::Group(cmd) => group(&client, &out, cmd).await?,
        Command::Policy(cmd) => policy(&client, &out, cmd).await?,
        Command::Config(cmd) => configuration(&client, &out, cmd).await?,
        Command::Category(cmd) => category(&client, &out, cmd).await?,
        Command::Room(cmd) => room(&client, &out, cmd).await?,
        Command::Message(cmd) => message(&client, &out, cmd).await?,
        Command::Addin(cmd) => addin(&client, &out, cmd).await?,
        Command::Pool(cmd) => pool(&client, &out, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints results as JSON or for people.
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// One object as `key: value` lines.
    pub(crate) fn object(&self, value: &Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return;
        }
        if let Value::Object(map) = value {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                println!("{k:width$}  {}", cell(v));
            }
        }
    }

    /// A list (the `items` of a page, or an array) as a table of `columns`.
    pub(crate) fn table(&self, value: &Value, columns: &[&str]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return;
        }
        let items = value.get("items").unwrap_or(value).as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| columns.iter().map(|c| cell(item.pointer(c).unwrap_or(&Value::Null))).collect())
            .collect();
        let headers: Vec<String> = columns.iter().map(|c| c.trim_start_matches('/').replace('/', ".")).collect();
        let widths: Vec<usize> = (0..columns.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!("{}", line(&headers));
        for row in &rows {
            println!("{}", line(row));
        }
    }

    fn done(&self, what: &str) {
        if self.json {
            println!("{}", json!({ "ok": true, "done": what }));
        } else {
            println!("{what}");
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

async fn admin(c: &Client, out: &Output, cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Add { user, role, .. } => {
            c.call(Method::POST, "/api/v1/admins", Some(json!({ "user": user, "role": role }))).await?;
            out.done(&format!("granted {role} to {user}"));
        }
        AdminCmd::List => out.table(&c.get("/api/v1/admins").await?, &["/user", "/role"]),
        AdminCmd::Remove { user, role } => {
            c.call(Method::DELETE, &format!("/api/v1/admins/{}/{}", segment(&user), segment(&role)), None).await?;
            out.done(&format!("revoked {role} from {user}"));
        }
    }
    Ok(())
}

async fn user(c: &Client, out: &Output, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add { address, name, password } => {
            let body = json!({ "address": address, "display_name": name, "password": password });
            out.object(&c.call(Method::POST, "/api/v1/users", Some(body)).await?);
        }
        UserCmd::Get { address } => out.object(&c.get(&format!("/api/v1/users/{}", segment(&address))).await?),
        UserCmd::List { query } => {
            out.table(
                &c.get(&format!("/api/v1/users?limit=500&query={}", segment(&query))).await?,
                &["/address", "/display_name"],
            );
        }
        UserCmd::Remove { address } => {
            c.call(Method::DELETE, &format!("/api/v1/users/{}", segment(&address)), None).await?;
            out.done(&format!("removed {address}"));
        }
        UserCmd::SetPassword { address, password } => {
            let path = format!("/api/v1/users/{}/password", segment(&address));
            c.call(Method::PUT, &path, Some(json!({ "password": password }))).await?;
            out.done(&format!("password of {address} set; their sessions ended"));
        }
        UserCmd::EndSessions { address } => {
            c.call(Method::DELETE, &format!("/api/v1/users/{}/sessions", segment(&address)), None).await?;
            out.done(&format!("every session of {address} ended"));
        }
    }
    Ok(())
}

async fn group(c: &Client, out: &Output, cmd: GroupCmd) -> anyhow::Result<()> {
    match cmd {
        GroupCmd::New { name } => {
            out.object(&c.call(Method::POST, "/api/v1/groups", Some(json!({ "name": name }))).await?)
        }
        GroupCmd::Get { name } => out.object(&c.get(&format!("/api/v1/groups/{}", segment(&name))).await?),
        GroupCmd::List => out.table(&c.get("/api/v1/groups").await?, &["/name"]),
        GroupCmd::Set { name, members } => {
            let Some(change) = list_change(&members.add, &members.remove, &members.replace) else {
                bail!("nothing to change: give --add-member, --remove-member or --members");
            };
            let path = format!("/api/v1/groups/{}", segment(&name));
            out.object(&c.call(Method::PATCH, &path, Some(json!({ "members": change }))).await?);
        }
        GroupCmd::Remove { name } => {
            c.call(Method::DELETE, &format!("/api/v1/groups/{}", segment(&name)), None).await?;
            out.done(&format!("removed group {name}"));
        }
    }
    Ok(())
}

async fn policy(c: &Client, out: &Output, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Get { scope } => out.object(&c.get(&format!("/api/v1/policies/{}", segment(&scope))).await?),
        PolicyCmd::Set { scope, enable } => {
            let body = json!({ "enable_persistent_chat": enable });
            out.object(&c.call(Method::PUT, &format!("/api/v1/policies/{}", segment(&scope)), Some(body)).await?);
        }
        PolicyCmd::Remove { scope } => {
            c.call(Method::DELETE, &format!("/api/v1/policies/{}", segment(&scope)), None).await?;
            out.done(&format!("removed policy {scope}"));
        }
        PolicyCmd::Effective { user } => {
            out.object(&c.get(&format!("/api/v1/users/{}/effective-policy", segment(&user))).await?)
        }
    }
    Ok(())
}

async fn configuration(c: &Client, out: &Output, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Get { scope } => out.object(&c.get(&format!("/api/v1/configuration/{}", segment(&scope))).await?),
        ConfigCmd::Set {
            scope,
            default_chat_history,
            max_file_size_kb,
            participant_update_limit,
            room_management_url,
            max_message_bytes,
        } => {
            let path = format!("/api/v1/configuration/{}", segment(&scope));
            // Settings not given keep the scope's current values (or the effective ones for a new scope).
            let current = match c.get(&path).await {
                Ok(v) => v,
                Err(_) => c.get("/api/v1/configuration/global").await?,
            };
            let mut body = Map::new();
            for key in [
                "default_chat_history",
                "max_file_size_kb",
                "participant_update_limit",
                "room_management_url",
                "max_message_bytes",
            ] {
                if let Some(v) = current.get(key) {
                    body.insert(key.to_owned(), v.clone());
                }
            }
            insert_opt(&mut body, "default_chat_history", default_chat_history);
            insert_opt(&mut body, "max_file_size_kb", max_file_size_kb);
            insert_opt(&mut body, "participant_update_limit", participant_update_limit);
            insert_opt(&mut body, "room_management_url", room_management_url);
            insert_opt(&mut body, "max_message_bytes", max_message_bytes);
            out.object(&c.call(Method::PUT, &path, Some(Value::Object(body))).await?);
        }
        ConfigCmd::Remove { scope } => {
            c.call(Method::DELETE, &format!("/api/v1/configuration/{}", segment(&scope)), None).await?;
            out.done(&format!("removed configuration {scope}"));
        }
    }
    Ok(())
}

/// One list option set: the JSON key, then `--add-X`, `--remove-X` and `--X` (replace).
type ListOptions<'a> = (&'a str, Vec<String>, Vec<String>, Option<Vec<String>>);

/// Role and scope lists: plain lists when creating, list modifiers (add/remove or replace) when changing.
fn list_fields<const N: usize>(body: &mut Map<String, Value>, creating: bool, lists: [ListOptions<'_>; N]) {
    for (key, add, remove, replace) in lists {
        if creating {
            let list: Vec<String> = replace.unwrap_or_default().into_iter().chain(add).collect();
            if !list.is_empty() {
                body.insert(key.to_owned(), json!(list));
            }
        } else {
            insert_opt(body, key, list_change(&add, &remove, &replace));
        }
    }
}

fn category_body(f: CategoryFields, creating: bool) -> Map<String, Value> {
    let mut body = Map::new();
    insert_opt(&mut body, "description", f.description);
    insert_opt(&mut body, "file_upload", f.file_upload);
    insert_opt(&mut body, "chat_history", f.chat_history);
    insert_opt(&mut body, "invitations", f.invitations);
    list_fields(
        &mut body,
        creating,
        [
            ("allowed_members", f.add_allowed, f.remove_allowed, f.allowed),
            ("denied_members", f.add_denied, f.remove_denied, f.denied),
            ("creators", f.add_creator, f.remove_creator, f.creators),
        ],
    );
    body
}

const CATEGORY_COLUMNS: &[&str] = &["/id", "/name", "/allowed_members", "/denied_members", "/creators"];

async fn category(c: &Client, out: &Output, cmd: CategoryCmd) -> anyhow::Result<()> {
    match cmd {
        CategoryCmd::New { name, fields } => {
            let mut body = category_body(fields, true);
            body.insert("name".into(), json!(name));
            out.object(&c.call(Method::POST, "/api/v1/categories", Some(Value::Object(body))).await?);
        }
        CategoryCmd::Get { category: Some(k) } => {
            out.object(&c.get(&format!("/api/v1/categories/{}", reference(&k))).await?)
        }
        CategoryCmd::Get { category: None } => out.table(&c.get("/api/v1/categories").await?, CATEGORY_COLUMNS),
        CategoryCmd::Set { category, name, fields } => {
            let mut body = category_body(fields, false);
            insert_opt(&mut body, "name", name);
            let path = format!("/api/v1/categories/{}", reference(&category));
            out.object(&c.call(Method::PATCH, &path, Some(Value::Object(body))).await?);
        }
        CategoryCmd::Remove { category } => {
            c.call(Method::DELETE, &format!("/api/v1/categories/{}", reference(&category)), None).await?;
            out.done(&format!("removed category {category}"));
        }
    }
    Ok(())
}

fn room_body(f: RoomFields, creating: bool) -> Map<String, Value> {
    let mut body = Map::new();
    insert_opt(&mut body, "description", f.description);
    insert_opt(&mut body, "privacy", f.privacy);
    insert_opt(&mut body, "type", f.room_type);
    insert_opt(&mut body, "invitations", f.invitations);
    insert_opt(&mut body, "addin", f.addin);
    insert_opt(&mut body, "disabled", f.disabled);
    list_fields(
        &mut body,
        creating,
        [
            ("members", f.add_member, f.remove_member, f.members),
            ("managers", f.add_manager, f.remove_manager, f.managers),
            ("presenters", f.add_presenter, f.remove_presenter, f.presenters),
        ],
    );
    body
}

const ROOM_COLUMNS: &[&str] = &["/id", "/name", "/privacy", "/type", "/disabled", "/members", "/managers"];

async fn room(c: &Client, out: &Output, cmd: RoomCmd) -> anyhow::Result<()> {
    match cmd {
        RoomCmd::New { name, category, fields } => {
            let mut body = room_body(fields, true);
            body.insert("name".into(), json!(name));
            let category = if category.len() == 36 || category.starts_with("name:") {
                category
            } else {
                format!("name:{category}")
            };
            body.insert("category".into(), json!(category));
            out.object(&c.call(Method::POST, "/api/v1/rooms", Some(Value::Object(body))).await?);
        }
        RoomCmd::Get { room: Some(r), .. } => out.object(&c.get(&format!("/api/v1/rooms/{}", reference(&r))).await?),
        RoomCmd::Get { room: None, query, category, disabled } => {
            let mut path = "/api/v1/rooms?limit=500".to_owned();
            if let Some(q) = query {
                path.push_str(&format!("&query={}", segment(&q)));
            }
            if let Some(k) = category {
                let k = if k.len() == 36 || k.starts_with("name:") { k } else { format!("name:{k}") };
                path.push_str(&format!("&category={}", segment(&k)));
            }
            if let Some(d) = disabled {
                path.push_str(&format!("&disabled={d}"));
            }
            out.table(&c.get(&path).await?, ROOM_COLUMNS);
        }
        RoomCmd::Set { room, name, category, fields } => {
            let mut body = room_body(fields, false);
            insert_opt(&mut body, "name", name);
            insert_opt(
                &mut body,
                "category",
                category.map(|k| if k.len() == 36 || k.starts_with("name:") { k } else { format!("name:{k}") }),
            );
            let path = format!("/api/v1/rooms/{}", reference(&room));
            out.object(&c.call(Method::PATCH, &path, Some(Value::Object(body))).await?);
        }
        RoomCmd::Remove { room } => {
            c.call(Method::DELETE, &format!("/api/v1/rooms/{}", reference(&room)), None).await?;
            out.done(&format!("removed room {room}"));
        }
        RoomCmd::Clear { room, end_date } => {
            let path = format!("/api/v1/rooms/{}/clear", reference(&room));
            out.object(&c.call(Method::POST, &path, Some(json!({ "end_date": end_date }))).await?);
        }
    }
    Ok(())
}

async fn message(c: &Client, out: &Output, cmd: MessageCmd) -> anyhow::Result<()> {
    match cmd {
        MessageCmd::Remove { room, author, start_date, end_date, keywords, match_mode, case_sensitive, replace } => {
            let mut body = Map::new();
            insert_opt(&mut body, "author", author);
            insert_opt(&mut body, "start_date", start_date);
            insert_opt(&mut body, "end_date", end_date);
            insert_opt(&mut body, "keywords", keywords);
            insert_opt(&mut body, "replace_with", replace);
            body.insert("match".into(), json!(match_mode));
            body.insert("case_sensitive".into(), json!(case_sensitive));
            let path = format!("/api/v1/rooms/{}/messages/remove", reference(&room));
            out.object(&c.call(Method::POST, &path, Some(Value::Object(body))).await?);
        }
        MessageCmd::Search { query, match_mode, case_sensitive, author, from, to, room, limit, cursor } => {
            let mut params = vec![
                format!("q={}", segment(&query)),
                format!("match={match_mode}"),
                format!("case_sensitive={case_sensitive}"),
                format!("limit={limit}"),
            ];
            for (key, value) in [("author", author), ("from", from), ("to", to), ("cursor", cursor)] {
                if let Some(v) = value {
                    params.push(format!("{key}={}", segment(&v)));
                }
            }
            params.extend(room.iter().map(|r| format!("room={}", reference(r))));
            let found = c.get(&format!("/api/v1/search?{}", params.join("&"))).await?;
            out.table(&found, &["/message/ts", "/room/name", "/message/author", "/highlight"]);
            if !out.json {
                let estimate = found["total_estimate"].as_u64().unwrap_or(0);
                match found["next_cursor"].as_str() {
                    Some(next) => println!("about {estimate} in all; more with --cursor {next}"),
                    None => println!("{estimate} in all"),
                }
            }
        }
    }
    Ok(())
}

async fn addin(c: &Client, out: &Output, cmd: AddinCmd) -> anyhow::Result<()> {
    match cmd {
        AddinCmd::New { name, url } => {
            out.object(&c.call(Method::POST, "/api/v1/addins", Some(json!({ "name": name, "url": url }))).await?)
        }
        AddinCmd::Get { name: Some(n) } => out.object(&c.get(&format!("/api/v1/addins/{}", segment(&n))).await?),
        AddinCmd::Get { name: None } => out.table(&c.get("/api/v1/addins").await?, &["/name", "/url"]),
        AddinCmd::Set { addin, name, url } => {
            let mut body = Map::new();
            insert_opt(&mut body, "name", name);
            insert_opt(&mut body, "url", url);
            out.object(
                &c.call(Method::PATCH, &format!("/api/v1/addins/{}", segment(&addin)), Some(Value::Object(body)))
                    .await?,
            );
        }
        AddinCmd::Remove { name } => {
            c.call(Method::DELETE, &format!("/api/v1/addins/{}", segment(&name)), None).await?;
            out.done(&format!("removed add-in {name}"));
        }
    }
    Ok(())
}

const SERVER_COLUMNS: &[&str] = &["/name", "/state", "/active", "/connections", "/database", "/url", "/heartbeat_at"];

async fn pool(c: &Client, out: &Output, cmd: PoolCmd) -> anyhow::Result<()> {
    match cmd {
        PoolCmd::Status => out.table(&c.get("/api/v1/pool/servers").await?, SERVER_COLUMNS),
        PoolCmd::SetActive { add, remove, servers, none, swap } => {
            let replace = if none { Some(vec![]) } else { servers };
            let body = json!({ "add": add, "remove": remove, "replace": replace, "swap": swap });
            out.table(&c.call(Method::PATCH, "/api/v1/pool/servers/active", Some(body)).await?, SERVER_COLUMNS);
        }
        PoolCmd::Failover(_) | PoolCmd::Failback(_) | PoolCmd::State(_) => unreachable!("handled in run"),
    }
    Ok(())
}
