//! Test harness: starts and kills the real server, and typed HTTP and WebSocket clients for it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub const ADMIN: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "password-1234";

/// Settings every test server gets; rate limits are raised so that bursts are not throttled unless a test asks.
const BASE_LIMITS: &str = "[limits]\npost_rate_per_sec = 100000.0\npost_burst = 100000.0\n";

/// A pool (a PostgreSQL database) needs a shared file store: unless the test set one, the servers of one database
/// share a directory named after it, as servers sharing a mount would.
fn shared_files(extra: &str) -> String {
    if extra.contains("[files]") {
        return String::new();
    }
    let Some(start) = extra.find("postgres://") else { return String::new() };
    let url = extra[start..].split('"').next().unwrap_or_default();
    let database = url.rsplit('/').next().unwrap_or("pool").split('?').next().unwrap_or("pool");
    let dir = std::env::temp_dir().join(format!("pchat-files-{database}"));
    format!("\n[files]\ndirectory = \"{}\"\nshared_directory = true\n", dir.display())
}

pub struct Server {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    config: PathBuf,
    pub url: String,
    pub local_token: String,
    /// Environment variables of the server process (applied at the next start).
    pub env: Vec<(String, String)>,
    /// The open-files limit (soft, hard) the server starts with, set by `prlimit` (util-linux).
    pub open_files: Option<(u64, u64)>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a server whose config file is the base settings plus `extra` (TOML appended).
    pub async fn start_with(extra: &str) -> Self {
        Self::start_custom(extra, &[], None).await
    }

    /// As [`Server::start_with`], with environment variables and, optionally, the data directory (and its log
    /// beside it) somewhere given.
    pub async fn start_custom(extra: &str, env: &[(&str, &str)], data_dir: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
        let config = dir.path().join("pchat.toml");
        // The test's settings first (top-level keys before any table), then the default limits unless it set them.
        let limits = if extra.contains("[limits]") { "" } else { BASE_LIMITS };
        let files = shared_files(extra);
        let text = format!("domain = \"example.com\"\n{extra}\n{limits}{files}");
        std::fs::write(&config, text).unwrap();
        let mut server = Self {
            child: None,
            _dir: dir,
            data_dir,
            config,
            url: String::new(),
            local_token: String::new(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            open_files: None,
        };
        server.spawn().await;
        server
    }

    /// A server started with the open-files limit `soft` (and `hard`), as an operator's shell might give it.
    pub async fn start_with_open_files(soft: u64, hard: u64) -> Self {
        let mut server = Self::start().await;
        server.kill9();
        server.open_files = Some((soft, hard));
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        // After a kill -9 the previous server.json is still there: wait for the new server's own.
        let access = self.data_dir.join("server.json");
        let previous = std::mem::take(&mut self.local_token);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir.with_extension("log")).unwrap();
        let mut command = match self.open_files {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(env!("CARGO_BIN_EXE_pchat"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_pchat")),
        };
        let child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .env("PCHAT_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&access)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["token"].as_str() != Some(previous.as_str())
            {
                self.url = v["url"].as_str().unwrap().to_owned();
                self.local_token = v["token"].as_str().unwrap().to_owned();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited early with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "server did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server process's resident memory, in KiB (from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// Waits for the server process to end by itself (e.g. at a failpoint).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the pchat CLI against this server's data directory and configuration; returns its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pchat"))
            .args(args)
            .env("PCHAT_DATA_DIR", &self.data_dir)
            .env("PCHAT_CONFIG", &self.config)
            .output()
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status().unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    pub fn api(&self, token: Option<&str>) -> Api {
        Api { http: reqwest::Client::new(), base: self.url.clone(), token: token.map(str::to_owned) }
    }

    pub async fn admin(&self) -> Api {
        self.api(None).signed_in(ADMIN, ADMIN_PASSWORD).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// A response: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
    /// The Retry-After header, in seconds.
    pub retry_after: Option<u64>,
    /// The ETag header.
    pub etag: Option<String>,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts a problem document with this status, code and (if given) field.
    #[track_caller]
    pub fn problem(self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        for key in ["type", "title", "detail"] {
            assert!(self.body[key].is_string(), "problem lacks {key}: {}", self.body);
        }
        if let Some(field) = field {
            assert_eq!(self.body["field"], field, "body: {}", self.body);
        }
    }
}

impl Api {
    pub async fn signed_in(mut self, user: &str, password: &str) -> Self {
        let body = self
            .call(Method::POST, "/api/v1/sessions", Some(json!({ "user": user, "password": password })))
            .await
            .expect(201);
        self.token = Some(body["token"].as_str().unwrap().to_owned());
        self
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.try_call(method, path, body).await.expect("the server could not be reached")
    }

    /// As [`Api::call`], or `None` when the server cannot be reached or the response is cut off.
    pub async fn try_call(&self, method: Method, path: &str, body: Option<Value>) -> Option<Reply> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.ok()?).await
    }

    /// Sends a request with extra headers.
    pub async fn call_with(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.unwrap()).await.unwrap()
    }

    /// A sign-in attempt, optionally as a client a trusted proxy names in `X-Forwarded-For`.
    pub async fn try_sign_in(&self, user: &str, password: &str, forwarded_for: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = forwarded_for.map(|f| ("x-forwarded-for", f)).into_iter().collect();
        let body = json!({ "user": user, "password": password });
        self.call_with(Method::POST, "/api/v1/sessions", Some(body), &headers).await
    }

    /// Sends raw bytes with a content type (for malformed input).
    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>, content_type: &str) -> Reply {
        let mut req =
            self.http.request(method, format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.unwrap()).await.unwrap()
    }

    async fn reply(resp: reqwest::Response) -> Option<Reply> {
        let status = resp.status();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = resp.bytes().await.ok()?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Some(Reply { status, body, content_type, retry_after, etag })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Every message of a room, paging with `after_seq`.
    pub async fn all_messages(&self, room: &str) -> Vec<Value> {
        let mut out = vec![];
        let mut after = 0;
        loop {
            let page =
                self.get(&format!("/api/v1/rooms/{room}/messages?after_seq={after}&limit=500")).await.expect(200);
            let items = page["items"].as_array().unwrap().clone();
            let Some(last) = items.last() else { return out };
            after = last["seq"].as_i64().unwrap();
            out.extend(items);
        }
    }
}

/// A small world most tests start from: policy on, users alice, bob and carol in example.com and eve outside it.
pub struct World {
    pub server: Server,
    pub admin: Api,
}

impl World {
    pub async fn new() -> Self {
        Self::with_config("").await
    }

    pub async fn with_config(extra: &str) -> Self {
        let server = Server::start_with(extra).await;
        let admin = server.admin().await;
        admin.put("/api/v1/policies/global", json!({ "enable_persistent_chat": true })).await.expect(200);
        for (address, name) in [
            ("alice@example.com", "Alice"),
            ("bob@example.com", "Bob"),
            ("carol@example.com", "Carol"),
            ("eve@other.org", "Eve"),
        ] {
            admin
                .post("/api/v1/users", json!({ "address": address, "display_name": name, "password": PASSWORD }))
                .await
                .expect(201);
        }
        Self { server, admin }
    }

    pub async fn user(&self, address: &str) -> Api {
        self.server.api(None).signed_in(address, PASSWORD).await
    }

    /// A category whose scope is example.com, and returns its id.
    pub async fn category(&self, name: &str) -> String {
        let body =
            json!({ "name": name, "allowed_members": ["domain:example.com"], "creators": ["alice@example.com"] });
        self.admin.post("/api/v1/categories", body).await.expect(201)["id"].as_str().unwrap().to_owned()
    }

    pub async fn room(&self, category: &str, name: &str, extra: Value) -> String {
        let mut body = json!({ "name": name, "category": category });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        self.admin.post("/api/v1/rooms", body).await.expect(201)["id"].as_str().unwrap().to_owned()
    }

    pub async fn ws(&self, api: &Api) -> Ws {
        Ws::connect(&self.server.url, api.token.as_deref().unwrap()).await
    }
}

pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

pub const WAIT: Duration = Duration::from_secs(15);

impl Ws {
    /// A stream connection, or `None` when the server closes it before or during the handshake.
    pub async fn try_connect(base: &str, token: &str) -> Option<Self> {
        let url = format!("{}/api/v1/stream?token={token}", base.replacen("http://", "ws://", 1));
        tokio_tungstenite::connect_async(url).await.ok().map(|(socket, _)| Self { socket })
    }

    pub async fn connect(base: &str, token: &str) -> Self {
        let url = format!("{}/api/v1/stream?token={token}", base.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self { socket }
    }

    pub async fn send(&mut self, v: Value) {
        self.socket.send(Message::text(v.to_string())).await.unwrap();
    }

    /// The next JSON frame; `None` when the server closed the stream (the close frame's code is returned too).
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        self.next_or_closed().await.map_err(|close| close.map(|(code, _)| code))
    }

    /// The next JSON frame, or the close frame's code and reason when the server closed the stream.
    pub async fn next_or_closed(&mut self) -> Result<Value, Option<(u16, String)>> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await.expect("timed out waiting for a frame") {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Every frame until the server closes the stream, and the close frame's code and reason.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut frames = vec![];
        loop {
            match self.next_or_closed().await {
                Ok(frame) => frames.push(frame),
                Err(close) => return (frames, close),
            }
        }
    }

    /// Every frame up to and including the first for which `last` holds.
    pub async fn until(&mut self, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut frames = vec![];
        loop {
            let frame = self.next().await;
            let done = last(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_or_close().await.expect("stream closed")
    }

    /// Skips frames until one of type `kind`.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Joins and returns (joined frame, the history messages that followed it).
    pub async fn join(&mut self, room: &str, after_seq: Option<i64>) -> (Value, Vec<Value>) {
        let mut op = json!({ "op": "join", "room": room });
        if let Some(a) = after_seq {
            op["after_seq"] = json!(a);
        }
        self.send(op).await;
        let joined = self.next().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        let mut history = vec![];
        let last = joined["last_seq"].as_i64().unwrap();
        let first_expected = after_seq.unwrap_or(0);
        if last > first_expected {
            // Collect history until the last seq announced (or the latest page when not resuming).
            loop {
                let v = self.next().await;
                if v["type"] == "message" {
                    let seq = v["message"]["seq"].as_i64().unwrap();
                    history.push(v);
                    if seq >= last {
                        break;
                    }
                }
            }
        }
        (joined, history)
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Sends a close frame and returns whether the server answered with its own (within the wait).
    pub async fn close_answered(mut self) -> bool {
        if self.socket.send(Message::Close(None)).await.is_err() {
            return false;
        }
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => return false,
            }
        }
    }
}

impl Api {
    /// Posts and returns only the status, or `None` if the server could not be reached.
    pub async fn post_raw(&self, path: &str, body: Value) -> Option<u16> {
        // The body must arrive too: a 201 whose body was cut off was not seen by the client.
        self.try_call(Method::POST, path, Some(body)).await.map(|r| r.status.as_u16())
    }
}
