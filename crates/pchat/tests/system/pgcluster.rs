//! Private PostgreSQL instances for the failover tests: a primary made with `initdb` and standbys made with
//! `pg_basebackup`, each on its own port on 127.0.0.1, run with Debian's PostgreSQL binaries (as the `postgres`
//! user when the tests run as root, since PostgreSQL refuses to run as root). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The directory of PostgreSQL's programs: `PCHAT_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PCHAT_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs are needed (scripts/test installs Debian's postgresql package)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/initdb").1
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory the instances live in, owned by the user they run as.
pub struct Root {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Root {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = running_as_root();
        if as_postgres {
            let status = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown of the cluster directory failed");
        }
        Self { dir, bin: bin_dir(), as_postgres }
    }

    /// One of PostgreSQL's programs, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn append(&self, file: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// A new primary on a free port.
    pub fn primary(&self, name: &str) -> Instance<'_> {
        let data = self.dir.path().join(name);
        let path = data.to_str().unwrap();
        self.run("initdb", &["-D", path, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"]);
        let port = free_port();
        self.append(
            &data.join("postgresql.conf"),
            &format!(
                "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
                self.dir.path().display()
            ),
        );
        Instance { root: self, data, port, running: false }
    }

    /// A hot standby streaming from `upstream` (which must be running), made with `pg_basebackup`, known to the
    /// upstream as `application_name`; on `port`, or a free one.
    pub fn standby(
        &self,
        name: &str,
        upstream: &Instance<'_>,
        application_name: &str,
        port: Option<u16>,
    ) -> Instance<'_> {
        let data = self.dir.path().join(name);
        let up_port = upstream.port.to_string();
        // A fast checkpoint: the default spread one makes pg_basebackup wait for minutes.
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &up_port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
            ],
        );
        let port = port.unwrap_or_else(free_port);
        // Later lines win: this instance's port, and a connection the upstream knows by name.
        self.append(
            &data.join("postgresql.auto.conf"),
            &format!(
                "\nport = {port}\nprimary_conninfo = 'host=127.0.0.1 port={up_port} user=postgres \
                 application_name={application_name}'\n"
            ),
        );
        Instance { root: self, data, port, running: false }
    }
}

pub struct Instance<'r> {
    root: &'r Root,
    data: PathBuf,
    pub port: u16,
    running: bool,
}

impl Instance<'_> {
    pub fn start(&mut self) {
        let log = self.data.with_extension("log");
        self.root.run(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
        self.running = true;
    }

    /// Stops at once, as a crash would: no checkpoint, clients cut off.
    pub fn crash(&mut self) {
        self.root.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        self.running = false;
    }

    /// Stops if running and deletes the data directory.
    pub fn destroy(mut self) {
        if self.running {
            self.crash();
        }
        std::fs::remove_dir_all(&self.data).unwrap();
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn client(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(database), NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    pub async fn execute(&self, sql: &str) {
        self.client("postgres").await.batch_execute(sql).await.unwrap();
    }

    /// Makes `application_name` this instance's synchronous standby and waits until it streams synchronously.
    pub async fn require_sync_standby(&self, application_name: &str) {
        // ALTER SYSTEM refuses to run in a transaction block, which several statements in one batch would form.
        self.execute(&format!("ALTER SYSTEM SET synchronous_standby_names = '{application_name}'")).await;
        self.execute("SELECT pg_reload_conf()").await;
        let client = self.client("postgres").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = client
                .query_opt(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    &[&application_name],
                )
                .await
                .unwrap();
            if row.is_some_and(|r| r.get::<_, String>(0) == "sync") {
                return;
            }
            assert!(Instant::now() < deadline, "{application_name} never became a synchronous standby");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Instance<'_> {
    fn drop(&mut self) {
        if self.running {
            let _ =
                self.root.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).output();
        }
    }
}
