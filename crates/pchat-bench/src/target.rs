//! The servers under test: started from the `pchat` binary on SQLite (a fresh data directory) or on a fresh
//! PostgreSQL database (one server or a pool), and watched through /proc (CPU time, resident memory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// The administrator's password (through the bootstrap variable) and every provisioned user's.
pub(crate) const PASSWORD: &str = "bench-password-1";

/// Which database the servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// One running server, stopped (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) data: PathBuf,
    config: PathBuf,
    binary: PathBuf,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    /// Starts server `n` of the directory `dir` (its configuration written there) on a free port.
    fn start(binary: &Path, dir: &Path, n: usize) -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            url: String::new(),
            data: dir.join(format!("data-{n}")),
            config: dir.join(format!("pchat-{n}.toml")),
            binary: binary.to_owned(),
            log: dir.join(format!("server-{n}.log")),
        };
        server.spawn("127.0.0.1:0", Duration::from_secs(60))?;
        Ok(server)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data, configuration and address.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let listen = self.url.trim_start_matches("http://").to_owned();
        self.spawn(&listen, Duration::from_secs(60))
    }

    fn spawn(&mut self, listen: &str, wait: Duration) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.data.join("server.json"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        // PCHAT_BENCH_SERVER_PREFIX runs the server under a tool (a profiler: `heaptrack -o /tmp/h`).
        let prefix: Vec<String> = std::env::var("PCHAT_BENCH_SERVER_PREFIX")
            .map(|p| p.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut command = match prefix.split_first() {
            Some((tool, args)) => {
                let mut c = Command::new(tool);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .env("PCHAT_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn,pchat::serve=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.data.join("server.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                self.url = v["url"].as_str().ok_or_else(|| anyhow!("no url in server.json"))?.to_owned();
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the server exited with {status}; see {}", self.log.display());
            }
            if Instant::now() > deadline {
                bail!("the server did not start within {wait:?}; see {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The servers of one run and what they stand on.
pub(crate) struct Target {
    pub(crate) servers: Vec<Server>,
    /// Kept until the servers are gone.
    database: Option<pchat_store_postgres::testing::TempDatabase>,
    /// The servers' directory: configuration, data, logs.
    pub(crate) dir: PathBuf,
    /// Removes it at the end, unless it is kept.
    _cleanup: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `servers` servers of `binary` (more than one needs PostgreSQL), one after the other (the first
    /// creates the administrator), with the benchmark's settings plus `extra` configuration; `keep` keeps their
    /// directory after the run.
    pub(crate) async fn start(
        binary: &Path,
        backend: Backend,
        servers: usize,
        extra: &str,
        keep: bool,
    ) -> anyhow::Result<Self> {
        if servers > 1 && backend == Backend::Sqlite {
            bail!("a pool of several servers needs --backend postgres");
        }
        let temp = tempfile::Builder::new().prefix("pchat-bench-").tempdir()?;
        let (dir, cleanup) = if keep {
            let dir = temp.keep();
            println!("  the servers' directory is kept: {}", dir.display());
            (dir, None)
        } else {
            (temp.path().to_owned(), Some(temp))
        };
        let database = match backend {
            Backend::Postgres => Some(pchat_store_postgres::testing::TempDatabase::create_as("").await.0),
            Backend::Sqlite => None,
        };
        let database_section = match &database {
            Some(db) => format!(
                "[database]\nurl = \"{}\"\n[files]\ndirectory = \"{}\"\nshared_directory = true\n",
                db.url(),
                dir.join("files").display()
            ),
            None => String::new(),
        };
        // Limits lifted for load (posting rates, connections); two password hashes at once (the machine's
        // cores), sessions that outlive the run.
        let config_text = format!(
            "domain = \"example.com\"\n{database_section}{extra}\n[limits]\npost_rate_per_sec = 1000000.0\n\
             post_burst = 1000000.0\nmax_connections = 1000000\nmax_unauthenticated_connections = 100000\n\
             [security]\npassword_hash_concurrency = 2\nsession_idle_timeout_secs = 86400\n"
        );
        let mut started = vec![];
        for n in 0..servers.max(1) {
            std::fs::write(dir.join(format!("pchat-{n}.toml")), &config_text)?;
            started.push(Server::start(binary, &dir, n)?);
        }
        Ok(Self { servers: started, database, dir, _cleanup: cleanup })
    }

    /// Starts one SQLite server again on a directory an earlier run kept (`--keep`); the directory stays.
    pub(crate) fn reopen(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        if !dir.join("pchat-0.toml").is_file() {
            bail!("{} is not a directory kept by an earlier run (no pchat-0.toml)", dir.display());
        }
        let server = Server::start(binary, dir, 0)?;
        Ok(Self { servers: vec![server], database: None, dir: dir.to_owned(), _cleanup: None })
    }

    /// The PostgreSQL database the servers use, if they use one.
    pub(crate) fn database_url(&self) -> Option<String> {
        self.database.as_ref().map(pchat_store_postgres::testing::TempDatabase::url)
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url.clone()).collect()
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Server::pid).collect()
    }
}

/// CPU time and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcStats {
    /// User + system CPU, seconds.
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: u64,
    /// The peak resident size since the process started.
    pub(crate) hwm_kib: u64,
}

pub(crate) fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let cpu_secs = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStats { cpu_secs, rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:") })
}

/// Bytes the process has caused to be written to storage (`write_bytes` less `cancelled_write_bytes` of
/// /proc/PID/io: file pages it dirtied, whoever flushes them; sockets are not counted). 0 when unreadable.
fn storage_written(pid: u32) -> u64 {
    let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) else { return 0 };
    let field = |key: &str| -> u64 {
        io.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    field("write_bytes:").saturating_sub(field("cancelled_write_bytes:"))
}

/// CPU seconds the whole machine has been busy since boot (every core: user, nice, system, irq, softirq and steal
/// time of /proc/stat's `cpu` line; idle and I/O wait are not busy). 0 when unreadable.
fn machine_busy_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| ticks.get(*i)).sum();
    busy / rustix::param::clock_ticks_per_second() as f64
}

/// Seconds in which some task waited for storage since boot (the `some` line's `total`, in µs, of
/// /proc/pressure/io); `None` without pressure stall information.
fn io_stall_secs() -> Option<f64> {
    let pressure = std::fs::read_to_string("/proc/pressure/io").ok()?;
    let some = pressure.lines().find(|l| l.starts_with("some "))?;
    let total = some.split_whitespace().find_map(|f| f.strip_prefix("total="))?;
    Some(total.parse::<f64>().ok()? / 1e6)
}

/// Watches processes while a phase runs: CPU used and the highest resident size seen (sampled every 100 ms).
pub(crate) struct Usage {
    pids: Vec<u32>,
    started: Instant,
    cpu_at_start: f64,
    machine_at_start: f64,
    io_stall_at_start: Option<f64>,
    written_at_start: u64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// What a phase cost the processes watched (summed over them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Used {
    /// CPU time over wall time: 100 = one core busy.
    pub(crate) cpu_percent: f64,
    /// The same for the whole machine (every process and the kernel; 100 × cores = every core busy), so a phase
    /// shows whether the machine had CPU to spare and what the load generator (and any database) took beside
    /// the watched processes.
    pub(crate) machine_cpu_percent: f64,
    pub(crate) wall_secs: f64,
    /// The share of the phase in which some task of the machine waited for storage (/proc/pressure/io, "some"),
    /// in %; `None` where the kernel does not report pressure.
    pub(crate) io_stall_percent: Option<f64>,
    pub(crate) rss_end_kib: u64,
    pub(crate) rss_peak_kib: u64,
    /// Bytes written to storage during the phase (see [`storage_written`]).
    pub(crate) storage_written: u64,
}

impl Usage {
    pub(crate) fn start(pids: Vec<u32>) -> Self {
        let total = |pids: &[u32]| pids.iter().filter_map(|p| proc_stats(*p)).map(|s| s.cpu_secs).sum::<f64>();
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (watched, peak, stopped) = (pids.clone(), Arc::clone(&peak_kib), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let rss: u64 = watched.iter().filter_map(|p| proc_stats(*p)).map(|s| s.rss_kib).sum();
                peak.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let cpu_at_start = total(&pids);
        let machine_at_start = machine_busy_secs();
        let io_stall_at_start = io_stall_secs();
        let written_at_start = pids.iter().map(|p| storage_written(*p)).sum();
        Self {
            pids,
            started: Instant::now(),
            cpu_at_start,
            machine_at_start,
            io_stall_at_start,
            written_at_start,
            peak_kib,
            stop,
        }
    }

    pub(crate) fn finish(self) -> Used {
        self.stop.store(true, Ordering::Relaxed);
        let stats: Vec<ProcStats> = self.pids.iter().filter_map(|p| proc_stats(*p)).collect();
        let cpu: f64 = stats.iter().map(|s| s.cpu_secs).sum();
        let rss_end_kib = stats.iter().map(|s| s.rss_kib).sum();
        let machine = machine_busy_secs();
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        Used {
            cpu_percent: (cpu - self.cpu_at_start) / wall * 100.0,
            machine_cpu_percent: (machine - self.machine_at_start) / wall * 100.0,
            wall_secs: wall,
            io_stall_percent: io_stall_secs()
                .zip(self.io_stall_at_start)
                .map(|(now, start)| (now - start) / wall * 100.0),
            rss_end_kib,
            rss_peak_kib: self.peak_kib.load(Ordering::Relaxed).max(rss_end_kib),
            storage_written: self
                .pids
                .iter()
                .map(|p| storage_written(*p))
                .sum::<u64>()
                .saturating_sub(self.written_at_start),
        }
    }
}

/// Raises this process's open-files limit to the hard limit; returns the limit now in force.
pub(crate) fn raise_open_files() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    match now.maximum {
        Some(hard) if soft < hard => {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
                Ok(()) => hard,
                Err(_) => soft,
            }
        }
        _ => soft,
    }
}

/// The cores this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine, for the record: CPU model, cores, memory.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cores();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cpu}, {cores} cores, {mem_gib} GiB RAM")
}
