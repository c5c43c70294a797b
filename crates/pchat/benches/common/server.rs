//! Starting a pchat server for a benchmark and calling its HTTP API (shared by the benchmarks).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// Every benchmark user's password (the administrator's too, through the bootstrap variable).
pub(crate) const PASSWORD: &str = "bench-password-1";

/// A running server, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    /// A temporary directory the server's data lives in, removed after the server stops.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What goes in the server's configuration file beside the benchmark's rate limits (lifted).
pub(crate) struct Setup<'a> {
    /// A PostgreSQL database (SQLite in the data directory when `None`).
    pub(crate) database_url: Option<&'a str>,
    /// With PostgreSQL: add the `[files]` section naming a directory shared by a pool's servers (builds from
    /// before files in rooms refuse it).
    pub(crate) files_config: bool,
    /// More configuration, appended as it is.
    pub(crate) extra: &'a str,
}

/// Starts `binary` on the data directory `dir/data` with the configuration file `dir/pchat.toml` and waits, up to
/// `wait`, until it says where it listens. A `temp` directory given is removed after the server stops.
pub(crate) fn start(
    binary: &Path,
    dir: &Path,
    setup: &Setup<'_>,
    wait: Duration,
    temp: Option<tempfile::TempDir>,
) -> anyhow::Result<Server> {
    let config = dir.join("pchat.toml");
    let files = format!(
        "[files]\ndirectory = \"{}\"\nshared_directory = true\n",
        std::env::temp_dir().join("pchat-bench-files").display()
    );
    let database = setup
        .database_url
        .map(|u| format!("[database]\nurl = \"{u}\"\n{}", if setup.files_config { files.as_str() } else { "" }))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!("{database}{}[limits]\npost_rate_per_sec = 1000000.0\npost_burst = 1000000.0\n", setup.extra),
    )?;
    let data = dir.join("data");
    // A kept data directory may hold the previous run's address.
    let _ = std::fs::remove_file(data.join("server.json"));
    let child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env("PCHAT_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Server { child, url: String::new(), _dir: temp };
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join("server.json")) {
            let v: Value = serde_json::from_str(&text)?;
            server.url = v["url"].as_str().ok_or_else(|| anyhow!("no url"))?.to_owned();
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!("server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A signed-in user of the HTTP API.
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Api {
    pub(crate) async fn sign_in(base: &str, user: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let v: Value = http
            .post(format!("{base}/api/v1/sessions"))
            .json(&json!({ "user": user, "password": PASSWORD }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = v["token"].as_str().ok_or_else(|| anyhow!("no token"))?.to_owned();
        Ok(Self { http, base: base.to_owned(), token })
    }

    /// Calls `method path` with `body` (none for `null`); the answer's JSON, or an error with its status and text.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if !body.is_null() {
            request = request.json(&body);
        }
        let resp = request.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
