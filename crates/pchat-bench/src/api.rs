//! The HTTP API as the harness uses it: sign-in, calls, and provisioning in bulk (users imported with a password
//! hash made once, rooms created concurrently, sign-ins as fast as the server hashes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::target::PASSWORD;

pub(crate) const ADMIN: &str = "admin@example.com";

/// A signed-in user of the HTTP API.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Api {
    /// Signs in, waiting out the server's `503 Retry-After` while its password hashing is busy.
    pub(crate) async fn sign_in(base: &str, user: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(4).build()?;
        for _ in 0..600 {
            let resp = http
                .post(format!("{base}/api/v1/sessions"))
                .json(&json!({ "user": user, "password": PASSWORD }))
                .send()
                .await?;
            let status = resp.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let text = resp.text().await?;
            if !status.is_success() {
                bail!("sign-in of {user}: {status} {text}");
            }
            let v: Value = serde_json::from_str(&text)?;
            let token = v["token"].as_str().ok_or_else(|| anyhow!("no token"))?.to_owned();
            return Ok(Self { http, base: base.to_owned(), token });
        }
        bail!("sign-in of {user}: the server stayed busy")
    }

    /// `method path` with `body` (none for `null`): the answer's JSON, or an error with the status and text.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
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

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, body).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, body).await
    }
}

/// The Argon2id hash of [`PASSWORD`] that every imported user gets (made once, here).
pub(crate) fn password_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt =
        SaltString::from_b64("cGNoYXRiZW5jaHNhbHQxMg").unwrap_or_else(|_| SaltString::generate(&mut rand::rngs::OsRng));
    argon2::Argon2::default().hash_password(PASSWORD.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// `bench-N@example.com`.
pub(crate) fn user(n: usize) -> String {
    format!("bench-{n}@example.com")
}

/// Progress of a long step on stderr, at most every two seconds.
pub(crate) struct Progress {
    what: String,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    last: std::sync::Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(what: &str, total: usize) -> Arc<Self> {
        Arc::new(Self {
            what: what.to_owned(),
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
            last: std::sync::Mutex::new(Instant::now()),
        })
    }

    pub(crate) fn add(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = self.last.lock() else { return };
        if last.elapsed() >= Duration::from_secs(2) || done == self.total {
            *last = Instant::now();
            eprintln!("  {}: {done}/{} ({:.0} s)", self.what, self.total, self.started.elapsed().as_secs_f64());
        }
    }
}

/// Creates users `bench-0 .. bench-(n-1)` through the import endpoint, 1,000 per request, with chat enabled.
pub(crate) async fn provision_users(admin: &Api, n: usize) -> anyhow::Result<()> {
    admin.put("/api/v1/policies/global", json!({ "enable_persistent_chat": true })).await?;
    let hash = password_hash();
    let progress = Progress::new("users imported", n);
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        let users: Vec<Value> = (start..end)
            .map(|i| json!({ "address": user(i), "display_name": format!("Bench user {i}"), "password_hash": hash }))
            .collect();
        match admin.post("/api/v1/users/import", json!({ "users": users })).await {
            Ok(_) => {}
            // A build from before the import endpoint (a baseline): one user at a time, each password hashed.
            Err(e) if start == 0 && (e.to_string().contains(" 404 ") || e.to_string().contains(" 405 ")) => {
                each("users created one by one", (0..n).collect(), 4, |i| {
                    let admin = admin.clone();
                    async move {
                        let body = json!({ "address": user(i), "display_name": format!("Bench user {i}"), "password": PASSWORD });
                        admin.post("/api/v1/users", body).await
                    }
                })
                .await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        progress.add(end - start);
        start = end;
    }
    Ok(())
}

/// Signs users in (round-robin over `bases`), `concurrency` at a time; their APIs in the order given.
pub(crate) async fn sign_in_all(bases: &[String], users: &[usize], concurrency: usize) -> anyhow::Result<Vec<Api>> {
    let progress = Progress::new("users signed in", users.len());
    let bases = bases.to_vec();
    let results: Vec<anyhow::Result<Api>> = futures_util::stream::iter(users.iter().copied().enumerate())
        .map(|(i, u)| {
            let base = bases[i % bases.len()].clone();
            let progress = Arc::clone(&progress);
            async move {
                let api = Api::sign_in(&base, &user(u)).await;
                progress.add(1);
                api
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Runs `f` over `items`, `concurrency` at a time, with progress; the results in order.
pub(crate) async fn each<T, R, F, Fut>(what: &str, items: Vec<T>, concurrency: usize, f: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let progress = Progress::new(what, items.len());
    let results: Vec<anyhow::Result<R>> = futures_util::stream::iter(items)
        .map(|item| {
            let progress = Arc::clone(&progress);
            let fut = f(item);
            async move {
                let r = fut.await;
                progress.add(1);
                r
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
