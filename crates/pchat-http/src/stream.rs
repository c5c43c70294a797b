//! The WebSocket stream `GET /api/v1/stream`: one task per connection owns the socket. It handles client
//! operations in order, writes queued live frames (skipping any `seq` it already sent for that room, so a join's
//! history and the live feed never duplicate or reorder), reports rooms dropped for slowness with `resync`, and
//! closes with a close frame on shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pchat_api_types::{ClientFrame, PostMessage, ServerFrame, close_codes, codes};
use pchat_service::records::{NEVER, SessionRecord};
use pchat_service::{CloseReason, Conn, Frame, FrameKind, LiveEvent, ServiceError};

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::{AppState, wire};

/// Close code for "going away" (server shutdown).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a peer that stopped answering pings (policy violation is the closest standard code).
const CLOSE_PING_TIMEOUT: u16 = 1008;
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// The WebSocket read buffer of a connection. tungstenite allocates (and zero-fills) it whole for every
/// connection, 128 KiB by default, which was most of an idle connection's memory; client frames are small, and a
/// larger one is read into a buffer grown for it.
const READ_BUFFER: usize = 1024;
/// Frames are gathered up to this many bytes before being written to the socket (and always at a flush).
const WRITE_BUFFER: usize = 8 * 1024;

/// The live stream. Send `ClientFrame`s, receive `ServerFrame`s (JSON text frames); authenticate with the bearer
/// header or `?token=` (accepted on this endpoint only, for clients that cannot set headers).
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    summary = "Live events over WebSocket (ClientFrame in, ServerFrame out)",
    params(("token" = Option<String>, Query, description = "Bearer token, for clients that cannot set headers")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Not signed in", body = pchat_api_types::Problem),
        (status = 403, description = "Chat disabled by policy", body = pchat_api_types::Problem),
        (status = 503, description = "Too many connections", body = pchat_api_types::Problem)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upgrade(State(state): State<AppState>, auth: StreamAuth, ws: WebSocketUpgrade) -> Response {
    let StreamAuth { caller, session, token, marks_seen } = auth;
    if state.service.hub().connection_count() >= state.limits.max_connections {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, "too many connections")
            .into_response();
    }
    if !caller.chat_enabled {
        return ApiError::from(ServiceError::ChatDisabled).into_response();
    }
    if !state.service.is_active() {
        let detail = "this server accepts no new connections (inactive in its pool)";
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, detail).into_response();
    }
    let max = state.limits.max_ws_message_bytes;
    // The connection joins the hub (with the rooms it follows) before the handshake is answered, so that whatever
    // happens after the client sees 101 reaches it; a handshake that then fails takes it out again.
    let conn = match state.service.connect(caller, &token, marks_seen).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (failed_conn, failed_state) = (Arc::clone(&conn), state.clone());
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_failed_upgrade(move |_| failed_state.service.hub().disconnect(&failed_conn))
        .on_upgrade(move |socket| async move {
            let domain = state.service.settings().domain.clone();
            let expires_at = session.expires_at;
            let mut session = Session { state, conn, delivered: HashMap::new(), domain, expires_at };
            session.run(socket).await;
            session.state.service.hub().disconnect(&session.conn);
        })
}

/// The stream's caller: its bearer token comes from the `Authorization` header, or from `?token=` for browsers'
/// WebSocket API (accepted on this endpoint only).
pub(crate) struct StreamAuth {
    caller: pchat_service::Caller,
    session: SessionRecord,
    token: String,
    /// [`pchat_service::Hub::marks`] before the caller was resolved: a change marked in between makes the
    /// connection review itself first.
    marks_seen: u64,
}

impl axum::extract::FromRequestParts<AppState> for StreamAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match crate::extract::bearer(&parts.headers) {
            Some(t) => Some(t),
            None => crate::extract::QueryMap::parse(parts.uri.query().unwrap_or(""))?.str("token").map(str::to_owned),
        };
        let token = token.filter(|t| !t.is_empty()).ok_or_else(ApiError::unauthenticated)?;
        let marks_seen = state.service.hub().marks();
        let (caller, session) = crate::extract::authenticate(state, parts, &token).await?;
        Ok(Self { caller, session, token, marks_seen })
    }
}

struct Session {
    state: AppState,
    conn: Arc<Conn>,
    /// Highest `seq` sent per joined room.
    delivered: HashMap<String, i64>,
    /// For encoding the frames a review produces.
    domain: String,
    /// When the connection's session ends by itself (µs).
    expires_at: i64,
}

/// The socket, written to by the handlers (read only by the connection's loop, between them).
type Sink = WebSocket;

fn text(bytes: Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default())
}

fn error_frame(code: &str, detail: impl Into<String>, op: &str) -> Message {
    text(wire::frame(&ServerFrame::Error { code: code.to_owned(), detail: detail.into(), op: Some(op.to_owned()) }))
}

fn service_error_frame(e: ServiceError, op: &str) -> Message {
    let api = ApiError::from(e);
    error_frame(api.code, api.detail, op)
}

/// Resolves when a session that ends at `expires_at` (µs since the epoch) has ended; never for one that does not.
async fn session_deadline(expires_at: i64) {
    if expires_at == NEVER {
        return std::future::pending().await;
    }
    let left = expires_at.saturating_sub(pchat_service::time::now_micros()).max(0);
    tokio::time::sleep(std::time::Duration::from_micros(left as u64)).await;
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

impl Session {
    /// The connection's loop. Everything it awaits while handling an event is boxed, so that the task an idle
    /// connection keeps is small (the work of a join or a review lives on the heap only while it runs).
    ///
    /// Delivery to a large room wakes every member's task once per message, so a wake-up is kept cheap: the socket
    /// is not split (a split puts a lock in front of every read and write); one signal ([`Conn::attention`]) stands
    /// for queued frames, a requested review and rooms dropped for overflow, and it, the session's end and the
    /// shutdown signal are futures that live across turns (registered once, not at every turn); the branches are
    /// polled in a fixed order, stopping at the first ready one. What a turn must never postpone (the session's
    /// end, shutdown, a review, overflow) is checked at the top of every turn, so a room that never goes quiet
    /// cannot hold it up.
    async fn run(&mut self, mut socket: WebSocket) {
        // Checked at every turn; the hub wakes every connection when it changes (`tls::serve_connections`).
        let shutdown = self.state.shutdown.clone();
        let conn = Arc::clone(&self.conn);
        // A ping every interval; a peer that has sent nothing since the previous ping is gone (half-open socket).
        let mut pings = tokio::time::interval(self.state.limits.ping_interval);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pings.tick().await;
        let mut heard_since_ping = true;
        // The session stays in use while the stream is open; record it well within the idle timeout.
        let mut touches = tokio::time::interval(self.state.service.session_touch_interval());
        touches.tick().await;
        let expires = session_deadline(self.expires_at);
        tokio::pin!(expires);
        let attention = conn.attention.notified();
        tokio::pin!(attention);
        loop {
            if !matches!(shutdown.has_changed(), Ok(false)) {
                let _ = socket.send(close_frame(CLOSE_GOING_AWAY, "server shutting down")).await;
                return;
            }
            if self.expires_at != NEVER && pchat_service::time::now_micros() >= self.expires_at {
                let _ = socket.send(close_frame(close_codes::SESSION_ENDED, "session_expired")).await;
                return;
            }
            if conn.review_pending() && !Box::pin(self.review(&mut socket)).await {
                return;
            }
            for room in conn.take_overflowed() {
                self.delivered.remove(&room);
                let resync = ServerFrame::Resync { room, reason: "slow_consumer".into() };
                if socket.send(text(wire::frame(&resync))).await.is_err() {
                    return;
                }
            }
            if let Some(frame) = conn.frames.try_pop() {
                if !Box::pin(self.write_frames(&mut socket, frame)).await {
                    return;
                }
                // More than a batch was waiting (their signal was taken): signal again, so that the next turn
                // writes the rest after looking at the client's side.
                if !conn.frames.is_empty() {
                    conn.attention.notify_one();
                }
            }
            tokio::select! {
                biased;
                message = socket.next() => {
                    let Some(Ok(message)) = message else { return };
                    heard_since_ping = true;
                    if !Box::pin(self.on_message(&mut socket, message)).await {
                        return;
                    }
                }
                () = &mut attention => {
                    // The next turn does what it was signalled for; the next signal needs a new waiter.
                    attention.set(conn.attention.notified());
                }
                _ = pings.tick() => {
                    if !heard_since_ping {
                        tracing::debug!(user = %self.conn.address(), "no answer to the last ping; closing");
                        let _ = socket.send(close_frame(CLOSE_PING_TIMEOUT, "ping_timeout")).await;
                        return;
                    }
                    heard_since_ping = false;
                    if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                        return;
                    }
                }
                _ = touches.tick() => {
                    if let Err(e) = Box::pin(self.state.service.keep_session_alive(&self.conn.session_hash())).await {
                        tracing::debug!(error = %e, "cannot record that a session is in use");
                    }
                }
                () = &mut expires => {
                    let _ = socket.send(close_frame(close_codes::SESSION_ENDED, "session_expired")).await;
                    return;
                }
            }
        }
    }

    /// Handles a frame the client sent; false ends the connection.
    async fn on_message(&mut self, socket: &mut Sink, message: Message) -> bool {
        match message {
            Message::Text(t) => self.on_text(socket, t.as_bytes()).await,
            Message::Binary(_) => {
                socket.send(error_frame(codes::VALIDATION_FAILED, "binary frames are not supported", "")).await.is_ok()
            }
            Message::Close(_) => {
                // The protocol layer has queued the answering close frame: send it before leaving.
                let _ = socket.close().await;
                false
            }
            Message::Ping(_) | Message::Pong(_) => true,
        }
    }

    /// Re-evaluates the connection's access while a review is pending, writing what it decided (rooms left,
    /// updated rooms, withdrawn invitations). False when the connection ends; the client was told why.
    async fn review(&mut self, sink: &mut Sink) -> bool {
        while self.conn.review_pending() {
            let outcome = match self.state.service.review(&self.conn).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Access cannot be confirmed, so nothing more is sent: the client reconnects later.
                    tracing::warn!(error = %e, "cannot re-evaluate a live connection's access; closing it");
                    let _ = sink.send(close_frame(close_codes::TRY_AGAIN_LATER, "unavailable")).await;
                    return false;
                }
            };
            if let Some(reason) = outcome.close {
                let code = match reason {
                    CloseReason::ChatDisabled => close_codes::CHAT_DISABLED,
                    CloseReason::UserDeleted | CloseReason::SessionEnded => close_codes::SESSION_ENDED,
                };
                let _ = sink.send(close_frame(code, reason.code())).await;
                return false;
            }
            for event in &outcome.events {
                if let LiveEvent::RemovedFromRoom { room }
                | LiveEvent::RoomDisabled { room }
                | LiveEvent::RoomDeleted { room } = event
                {
                    self.delivered.remove(room);
                }
                if sink.feed(text(wire::encode_event(&self.domain, event))).await.is_err() {
                    return false;
                }
            }
            if !outcome.events.is_empty() && sink.flush().await.is_err() {
                return false;
            }
        }
        true
    }

    /// Writes one queued frame and whatever else is already queued, then flushes once. Before each frame, a
    /// pending review runs first, so no frame goes out that the connection may no longer receive.
    async fn write_frames(&mut self, sink: &mut Sink, first: Frame) -> bool {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next.take() {
            if self.conn.review_pending() && !self.review(sink).await {
                return false;
            }
            let allowed = match &frame.kind {
                FrameKind::Feed(room) => self.state.service.may_send_feed_match(&self.conn, room).await,
                _ => self.accept(&frame),
            };
            if allowed {
                if sink.feed(text(frame.bytes)).await.is_err() {
                    return false;
                }
                written += 1;
            }
            if written < WRITE_BATCH {
                next = self.conn.frames.try_pop();
            }
        }
        sink.flush().await.is_ok()
    }

    /// Whether a queued frame may go out: frames of a room only while it is joined (messages only past what was
    /// sent), activity only while the room is followed and not joined.
    fn accept(&mut self, frame: &Frame) -> bool {
        match &frame.kind {
            FrameKind::Message(meta) => match self.delivered.get_mut(meta.room.as_ref()) {
                Some(last) if meta.seq > *last => {
                    *last = meta.seq;
                    self.state.service.metrics().delivered(meta.ts);
                    true
                }
                _ => false,
            },
            FrameKind::Room(room) => self.delivered.contains_key(room.as_ref()),
            FrameKind::Activity(room) => {
                !self.delivered.contains_key(room.as_ref()) && self.conn.is_watching(room.as_ref())
            }
            FrameKind::User => true,
            FrameKind::Feed(_) => false,
        }
    }

    /// Handles one client operation; false ends the connection.
    async fn on_text(&mut self, sink: &mut Sink, raw: &[u8]) -> bool {
        let op = match parse_json::<ClientFrame>(raw) {
            Ok(op) => op,
            Err(e) => return sink.send(error_frame(e.code, e.detail, "")).await.is_ok(),
        };
        // An operation acts as the user is now.
        if self.conn.review_pending() && !self.review(sink).await {
            return false;
        }
        let reply = match op {
            ClientFrame::Ping => text(wire::frame(&ServerFrame::Pong)),
            ClientFrame::Part { room } => self.part(&room).await,
            ClientFrame::Join { room, after_seq } => return self.join(sink, &room, after_seq).await,
            ClientFrame::Post { room, text: body, story_title, alert, client_id } => {
                let caller = self.conn.caller();
                let input = PostMessage { text: body, story_title, alert, client_id: Some(client_id.clone()) };
                match self.state.service.post(&caller, &room, input).await {
                    Ok(appended) => {
                        text(wire::frame(&ServerFrame::Ack { client_id, message: wire::message(&appended.message) }))
                    }
                    Err(e) => service_error_frame(e, "post"),
                }
            }
        };
        sink.send(reply).await.is_ok()
    }

    /// Leaves a joined room. A room the connection has not joined is `not_found`, whether or not it exists, so
    /// that parting a secret room's name tells an outsider nothing.
    async fn part(&mut self, reference: &str) -> Message {
        let room_id = match reference.strip_prefix("name:") {
            Some(_) => self.state.service.resolve_room(reference).await.map(|r| r.id).ok(),
            None => Some(reference.to_owned()),
        };
        match room_id.filter(|id| self.conn.is_joined(id)) {
            Some(room_id) => {
                self.state.service.part(&self.conn, &room_id);
                self.delivered.remove(&room_id);
                text(wire::frame(&ServerFrame::Parted { room: room_id }))
            }
            None => service_error_frame(ServiceError::not_found("room"), "part"),
        }
    }

    /// Joins: `joined`, then history (all of it after `after_seq`, in pages), then live frames. The user is
    /// resolved afresh first: in a pool, another server's change may be on its way to this one.
    async fn join(&mut self, sink: &mut Sink, room: &str, after_seq: Option<i64>) -> bool {
        let service = Arc::clone(&self.state.service);
        match service.caller_for(self.conn.address()).await {
            Ok(Some(fresh)) if fresh == *self.conn.caller() => {}
            Ok(_) => {
                self.conn.request_caller_review();
                if !self.review(sink).await {
                    return false;
                }
            }
            Err(e) => return sink.send(service_error_frame(e, "join")).await.is_ok(),
        }
        let caller = self.conn.caller();
        let (joined, mut history) = match service.join(&caller, &self.conn, room, after_seq).await {
            Ok(j) => j,
            Err(e) => return sink.send(service_error_frame(e, "join")).await.is_ok(),
        };
        // A change while reading history: settle it before sending any of it.
        if self.conn.review_pending() && !self.review(sink).await {
            return false;
        }
        if !self.conn.is_joined(&joined.room_id) {
            return sink.send(service_error_frame(ServiceError::not_found("room"), "join")).await.is_ok();
        }
        let mut last = joined.after_seq.unwrap_or(0).max(0);
        let joined_frame = ServerFrame::Joined { room: joined.room_id.clone(), last_seq: joined.last_seq };
        if sink.feed(text(wire::frame(&joined_frame))).await.is_err() {
            return false;
        }
        loop {
            let full_page = joined.after_seq.is_some() && history.len() >= pchat_service::MAX_PAGE as usize;
            for m in &history {
                last = last.max(m.seq);
                if sink.feed(text(wire::frame(&ServerFrame::Message { message: wire::message(m) }))).await.is_err() {
                    return false;
                }
            }
            if !full_page {
                break;
            }
            history = match service.resume_page(&joined, last).await {
                Ok(page) => page,
                Err(e) => return sink.send(service_error_frame(e, "join")).await.is_ok(),
            };
            if self.conn.review_pending() {
                if !self.review(sink).await {
                    return false;
                }
                if !self.conn.is_joined(&joined.room_id) {
                    return sink.flush().await.is_ok();
                }
            }
        }
        self.delivered.insert(joined.room_id, last);
        sink.flush().await.is_ok()
    }
}
