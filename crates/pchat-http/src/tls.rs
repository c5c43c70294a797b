//! The accept loop, for plain HTTP and for HTTPS/WSS (rustls): one connection task per socket, with connection
//! upgrades for the stream and a graceful stop that lets in-flight requests finish.
//!
//! Hostile clients are bounded here: a connection must send its request headers within
//! [`HttpLimits::header_timeout`] (which also closes keep-alive connections left idle that long: hyper starts the
//! same timer while waiting for the next request), a TLS handshake must finish within ten seconds, and at most
//! [`HttpLimits::max_unauthenticated`] connections may be open that have not yet made an authenticated request;
//! further sockets are closed as soon as they are accepted.
//!
//! [`HttpLimits::header_timeout`]: crate::HttpLimits::header_timeout
//! [`HttpLimits::max_unauthenticated`]: crate::HttpLimits::max_unauthenticated

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::{debug, warn};

use crate::{AppState, router};

/// A TLS handshake that takes longer than this is dropped, so that idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's requests learn about the connection: its peer, and its place among the connections that
/// have not authenticated yet, given up at the first authenticated request.
#[derive(Clone)]
pub(crate) struct ConnectionState {
    unauthenticated: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl ConnectionState {
    /// The connection made an authenticated request: it no longer counts against the bound.
    pub(crate) fn authenticated(&self) {
        if let Ok(mut permit) = self.unauthenticated.lock() {
            permit.take();
        }
    }
}

/// Serves plain HTTP (`tls` absent) or HTTPS/WSS until `shutdown` resolves, then stops accepting and waits for
/// requests in flight.
pub async fn serve_connections(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    let service = Arc::clone(&state.service);
    // Live streams look at the shutdown signal whenever they wake (they do not each wait on it: see
    // `stream::Session::run`); this wakes them all when it comes.
    let mut streams_stop = state.shutdown.clone();
    let streams = Arc::clone(&service);
    tokio::spawn(async move {
        let _ = streams_stop.changed().await;
        streams.hub().wake_all();
    });
    let app = router(state);
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    // Connections finish their requests in flight when told to stop; each holds a sender, so the receiver ends
    // once they all have.
    let (stop, stopping) = watch::channel(false);
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated.max(1)));
    let sockets = Arc::new(Semaphore::new(limits.max_sockets.max(1)));
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors (the reserve is spent too, or another process holds the system's): let
                    // some close before trying again rather than spinning.
                    service.metrics().connection_refused();
                    refusals.note(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Every socket holds a descriptor: over the budget, close at once (the client sees the connection end)
        // rather than fail later, somewhere, for want of a descriptor.
        let Ok(socket) = Arc::clone(&sockets).try_acquire_owned() else {
            drop(tcp);
            service.metrics().connection_refused();
            refusals.note(&format!(
                "{} connections are open, the most this server's open-files limit allows",
                limits.max_sockets
            ));
            continue;
        };
        let Ok(permit) = Arc::clone(&unauthenticated).try_acquire_owned() else {
            debug!(%peer, "too many connections that have not authenticated; closing");
            drop(tcp);
            continue;
        };
        // Chat frames are small and latency-bound: without TCP_NODELAY a frame can wait ~40 ms for a delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let tcp = Counted { io: tcp, _descriptor: socket };
        let connection = ConnectionState { unauthenticated: Arc::new(Mutex::new(Some(permit))) };
        let one =
            Connection { peer, state: connection, app: app.clone(), builder: builder.clone(), stop: stopping.clone() };
        let (acceptor, alive) = (acceptor.clone(), alive.clone());
        tokio::spawn(async move {
            let result = match acceptor {
                None => one.serve(tcp).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => one.serve(stream).await,
                    Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return debug!(%peer, "TLS handshake timed out"),
                },
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

/// A socket with its place in the descriptor budget, given back when the socket closes: after a WebSocket
/// upgrade the socket outlives the task that accepted it, so the place travels with the socket itself.
struct Counted<I> {
    io: I,
    _descriptor: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connections refused for want of descriptors: logged at most once every ten seconds, with how many since.
#[derive(Default)]
struct Refusals {
    last: Option<std::time::Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, why: &str) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            warn!(refused = self.since, "refusing connections: {why}");
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    state: ConnectionState,
    app: axum::Router,
    builder: http1::Builder,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection's requests, each carrying the peer address and the connection's state; on shutdown,
    /// lets the request in flight finish and closes.
    async fn serve<I>(mut self, io: I) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, state, app) = (self.peer, self.state, self.app);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(state.clone());
            app.clone().call(request)
        });
        let connection = self.builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(connection);
        let stopping = async move {
            let _ = self.stop.wait_for(|stop| *stop).await;
        };
        tokio::select! {
            result = connection.as_mut() => return result,
            () = stopping => {}
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }
}

/// The peer of a request served by [`serve_connections`].
pub(crate) fn peer(parts: &axum::http::request::Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
