//! The HTTP client the administration verbs use: finds the server (flags, or `server.json` in the data
//! directory), sends JSON, and turns problem documents into readable errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use pchat_api_types::Problem;
use reqwest::Method;
use serde_json::Value;

use crate::serve::{LOCAL_ACCESS_FILE, LocalAccess};

pub(crate) struct Client {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    base: String,
    token: Option<String>,
}

/// Percent-encodes one path segment.
pub(crate) fn segment(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `base`, trusting the web PKI and, if given, the certificates in `ca_cert`.
    pub(crate) fn new(base: &str, token: Option<String>, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        let tls = crate::tls::client_config(ca_cert)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, tls, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// From `--url`/`--token`, or else the local server's `server.json` in the data directory.
    pub(crate) fn locate(
        url: Option<String>,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        if let Some(url) = url {
            return Self::new(&url, token, ca_cert.as_deref());
        }
        let dir = data_dir.unwrap_or_else(|| PathBuf::from("./pchat-data"));
        let path = dir.join(LOCAL_ACCESS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no local server found ({} unreadable); start `pchat serve` here or pass --url and --token",
                path.display()
            )
        })?;
        let access: LocalAccess =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        let ca_cert = ca_cert.or(access.ca_cert);
        Self::new(&access.url, Some(token.unwrap_or(access.token)), ca_cert.as_deref())
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn with_token(&self, token: String) -> Self {
        Self { http: self.http.clone(), tls: Arc::clone(&self.tls), base: self.base.clone(), token: Some(token) }
    }

    /// The TLS settings, for WebSocket connections to the same server.
    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| anyhow!("unexpected response: {e}"));
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => match p.field {
                Some(field) => bail!("{} ({}): {} [field: {field}]", p.code, p.status, p.detail),
                None => bail!("{} ({}): {}", p.code, p.status, p.detail),
            },
            Err(_) => bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }
}
