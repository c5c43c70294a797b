//! The pchat HTTP API and WebSocket stream (API.md) on axum. Errors become `application/problem+json` in one
//! place ([`error`]); request bodies are parsed strictly ([`extract`]); domain records become wire shapes in
//! [`wire`]. The crate receives a bound listener and a shutdown signal; it never handles signals itself.

mod account;
mod audit;
mod error;
mod extract;
mod feeds;
mod files;
mod handlers;
mod openapi;
mod search;
mod stream;
mod tls;
mod web;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use pchat_service::Service;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use tls::serve_connections;

/// Limits the HTTP front end enforces.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest WebSocket message (and frame), in bytes.
    pub max_ws_message_bytes: usize,
    /// Most concurrent WebSocket connections.
    pub max_connections: usize,
    /// Most open TCP connections (the open-files limit less what the server keeps for its files): one over it is
    /// closed as soon as it is accepted, with a warning and `pchat_connections_refused`.
    pub max_sockets: usize,
    /// A connection must send a request's headers within this time (idle keep-alive connections close after it).
    pub header_timeout: std::time::Duration,
    /// Most open connections that have not made an authenticated request yet.
    pub max_unauthenticated: usize,
    /// Peers (load balancers) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How often the stream pings a connection; one that has not answered by the next ping is closed.
    pub ping_interval: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_connections: 20_000,
            max_sockets: 1_000_000,
            header_timeout: std::time::Duration::from_secs(20),
            max_unauthenticated: 1024,
            trusted_proxies: vec![],
            ping_interval: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub limits: HttpLimits,
    /// Becomes true when the server is shutting down: live connections close with a close frame.
    pub shutdown: watch::Receiver<bool>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    handlers::routes()
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(error::as_problem))
        .with_state(state)
}

/// The frame encoder the hub uses: each live event is serialized once into a JSON text frame.
pub fn encoder(domain: String) -> pchat_service::hub::Encoder {
    Box::new(move |event| wire::encode_event(&domain, event))
}

/// Serves plain HTTP until `shutdown` resolves, then stops accepting and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_connections(listener, None, state, shutdown).await
}

/// Serves HTTPS and WSS only until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_connections(listener, Some(tls), state, shutdown).await
}
