//! `pchat-bench`: load scenarios against real pchat servers through the real protocol. See `bench/README.md`.

mod api;
mod clients;
mod corpus;
mod hist;
mod history;
mod report;
mod scenarios;
mod target;
mod writers;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "pchat load scenarios through the real protocol; results in bench/results and bench/RESULTS.md")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The pchat binary (default: `pchat` beside this program, i.e. the same cargo profile).
    #[arg(long, global = true)]
    server: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "sqlite")]
    backend: target::Backend,
    /// Tiny scale: checks that the scenario runs and reports, in seconds (CI); results go to --out only.
    #[arg(long, global = true)]
    smoke: bool,
    /// Where the JSON figures (and plots) go.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// The Markdown summary the run is appended to (default bench/RESULTS.md; none with --smoke).
    #[arg(long, global = true)]
    markdown: Option<PathBuf>,
    /// Exit with an error when a target is missed.
    #[arg(long, global = true)]
    strict: bool,
    /// Keep the servers' directory (configuration, SQLite data, logs) after the run, and print where it is.
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Server memory with nothing connected after many sign-ins.
    Idle(scenarios::IdleArgs),
    /// As many idle connections joined to rooms as one server may hold, then one message per room.
    Connections(scenarios::ConnectionsArgs),
    /// The most durable posts/s from many writers over many rooms, and latency at fractions of it.
    Ingest(scenarios::IngestArgs),
    /// One auditorium with every member connected; presenters post 10 messages/s.
    Auditorium(scenarios::AuditoriumArgs),
    /// Thousands of clients connect and join with history within seconds.
    JoinStorm(scenarios::JoinStormArgs),
    /// Every client connected; the server is killed and restarted; all resume without gaps or duplicates.
    ReconnectStorm(scenarios::ReconnectStormArgs),
    /// Lync's user model for one server (or a pool): 16 rooms per user, posts and joins at 10× Lync's rates.
    LyncServer(scenarios::LyncServerArgs),
    /// A large directory and many rooms: my rooms, room listing and search, inviting a domain.
    Directory(scenarios::DirectoryArgs),
    /// A long history (10 million messages by default): history pages and searches.
    HistorySearch(history::HistorySearchArgs),
    /// (internal) A client process: reads its plan on stdin.
    #[command(hide = true)]
    Worker,
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = if matches!(cli.scenario, Scenario::Worker) {
        // A client process is one thread: the machine's cores go to the server and to the other workers, and
        // its tasks never wake each other across threads (work stealing between threads of every worker
        // process cost the shared cores context switches).
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.scenario, Scenario::Worker) {
        return clients::worker().await;
    }
    let limit = target::raise_open_files();
    let server = match &cli.server {
        Some(s) => s.clone(),
        None => std::env::current_exe()?.with_file_name("pchat"),
    };
    anyhow::ensure!(server.exists(), "no pchat binary at {} (build it, or give --server)", server.display());
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.smoke { std::env::temp_dir().join("pchat-bench-smoke") } else { repo_dir().join("bench/results") }
    });
    let markdown = match (&cli.markdown, cli.smoke) {
        (Some(m), _) => Some(m.clone()),
        (None, false) => Some(repo_dir().join("bench/RESULTS.md")),
        (None, true) => None,
    };
    let ctx = scenarios::Context { server, backend: cli.backend, smoke: cli.smoke, keep: cli.keep };
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("pchat-bench {command}\n  machine: {}; this process may open {limit} files", target::machine());
    let run = match cli.scenario {
        Scenario::Idle(a) => scenarios::idle(&ctx, a).await?,
        Scenario::Connections(a) => scenarios::connections(&ctx, a).await?,
        Scenario::Ingest(a) => scenarios::ingest(&ctx, a).await?,
        Scenario::Auditorium(a) => scenarios::auditorium(&ctx, a).await?,
        Scenario::JoinStorm(a) => scenarios::join_storm(&ctx, a).await?,
        Scenario::ReconnectStorm(a) => scenarios::reconnect_storm(&ctx, a).await?,
        Scenario::LyncServer(a) => scenarios::lync_server(&ctx, a).await?,
        Scenario::Directory(a) => scenarios::directory(&ctx, a).await?,
        Scenario::HistorySearch(a) => history::history_search(&ctx, a).await?,
        Scenario::Worker => unreachable!("handled above"),
    };
    let saved = run.save(&out, markdown.as_deref(), &target::machine(), &format!("pchat-bench {command}"))?;
    println!("  figures: {}", saved.display());
    if cli.strict && !run.all_met() {
        anyhow::bail!("a target was not met");
    }
    Ok(())
}
