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
use pchat_api_types::{ClientFrame, PostMessage, ServerFrame, codes};
use pchat_service::{Caller, Conn, Frame, ServiceError};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::extract::{Auth, parse_json};
use crate::{AppState, wire};

/// Close code for "going away" (server shutdown).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

/// The live stream. Send `ClientFrame`s, receive `ServerFrame`s (JSON text frames); authenticate with the bearer
/// header or `?token=`.
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
pub(crate) async fn upgrade(State(state): State<AppState>, Auth(caller, _): Auth, ws: WebSocketUpgrade) -> Response {
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
    // The connection joins the hub only once the upgrade has happened, so a failed upgrade leaves nothing behind.
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |mut socket| async move {
        let (conn, frames) = match state.service.connect(caller).await {
            Ok(c) => c,
            Err(e) => {
                let _ = socket.send(service_error_frame(e, "connect")).await;
                return;
            }
        };
        let mut session = Session { state, conn, delivered: HashMap::new(), caller: None };
        session.run(socket, frames).await;
        session.state.service.hub().disconnect(&session.conn);
    })
}

struct Session {
    state: AppState,
    conn: Arc<Conn>,
    /// Highest `seq` sent per joined room.
    delivered: HashMap<String, i64>,
    /// The connection's user as last resolved, with the directory generation it was resolved at.
    caller: Option<(u64, Caller)>,
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

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

impl Session {
    async fn run(&mut self, socket: WebSocket, mut frames: mpsc::Receiver<Frame>) {
        let (mut sink, mut incoming) = socket.split();
        let mut shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                message = incoming.next() => {
                    let Some(Ok(message)) = message else { return };
                    let keep_going = match message {
                        Message::Text(t) => self.on_text(&mut sink, t.as_bytes()).await,
                        Message::Binary(_) => sink.send(error_frame(codes::VALIDATION_FAILED, "binary frames are not supported", "")).await.is_ok(),
                        Message::Close(_) => false,
                        Message::Ping(_) | Message::Pong(_) => true,
                    };
                    if !keep_going {
                        return;
                    }
                }
                frame = frames.recv() => {
                    let Some(frame) = frame else { return };
                    if self.write_frames(&mut sink, frame, &mut frames).await.is_err() {
                        return;
                    }
                }
                () = self.conn.overflow.notified() => {
                    for room in self.conn.take_overflowed() {
                        self.delivered.remove(&room);
                        let resync = ServerFrame::Resync { room, reason: "slow_consumer".into() };
                        if sink.send(text(wire::frame(&resync))).await.is_err() {
                            return;
                        }
                    }
                }
                _ = shutdown.changed() => {
                    let close = CloseFrame { code: CLOSE_GOING_AWAY, reason: Utf8Bytes::from_static("server shutting down") };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    return;
                }
            }
        }
    }

    /// Writes one queued frame and whatever else is already queued, then flushes once.
    async fn write_frames(
        &mut self,
        sink: &mut Sink,
        first: Frame,
        frames: &mut mpsc::Receiver<Frame>,
    ) -> Result<(), axum::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next.take() {
            if self.accept(&frame) {
                sink.feed(text(frame.bytes)).await?;
                written += 1;
            }
            if written < WRITE_BATCH {
                next = frames.try_recv().ok();
            }
        }
        sink.flush().await
    }

    /// Whether a queued frame should go out: message frames only for joined rooms and only past what was sent.
    fn accept(&mut self, frame: &Frame) -> bool {
        if let Some(room) = &frame.unsubscribed {
            self.delivered.remove(room.as_ref());
        }
        let Some(meta) = &frame.message else { return true };
        match self.delivered.get_mut(meta.room.as_ref()) {
            Some(last) if meta.seq > *last => {
                *last = meta.seq;
                self.state.service.metrics().delivered(meta.ts);
                true
            }
            _ => false,
        }
    }

    /// Handles one client operation; false ends the connection.
    async fn on_text(&mut self, sink: &mut Sink, raw: &[u8]) -> bool {
        let op = match parse_json::<ClientFrame>(raw) {
            Ok(op) => op,
            Err(e) => return sink.send(error_frame(e.code, e.detail, "")).await.is_ok(),
        };
        let reply = match op {
            ClientFrame::Ping => text(wire::frame(&ServerFrame::Pong)),
            ClientFrame::Part { room } => {
                let room_id = self.state.service.resolve_room(&room).await.map(|r| r.id).unwrap_or(room);
                self.state.service.part(&self.conn, &room_id);
                self.delivered.remove(&room_id);
                text(wire::frame(&ServerFrame::Parted { room: room_id }))
            }
            ClientFrame::Join { room, after_seq } => {
                let Some(caller) = self.current_caller(sink, "join").await else { return false };
                return self.join(sink, &caller, &room, after_seq).await;
            }
            ClientFrame::Post { room, text: body, story_title, alert, client_id } => {
                let Some(caller) = self.current_caller(sink, "post").await else { return false };
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

    /// The connection's user as they are now: a policy or role change applies to open connections at their next
    /// operation. `None` (after telling the client) when the user no longer exists: the connection ends.
    async fn current_caller(&mut self, sink: &mut Sink, op: &str) -> Option<Caller> {
        let generation = self.state.service.generation();
        if let Some((at, caller)) = &self.caller
            && *at == generation
        {
            return Some(caller.clone());
        }
        match self.state.service.caller_for(self.conn.caller.address()).await {
            Ok(Some(caller)) => {
                self.caller = Some((generation, caller.clone()));
                Some(caller)
            }
            Ok(None) => {
                let _ = sink.send(service_error_frame(ServiceError::Unauthenticated, op)).await;
                None
            }
            Err(e) => {
                let _ = sink.send(service_error_frame(e, op)).await;
                None
            }
        }
    }

    /// Joins: `joined`, then history (all of it after `after_seq`, in pages), then live frames.
    async fn join(&mut self, sink: &mut Sink, caller: &Caller, room: &str, after_seq: Option<i64>) -> bool {
        let service = Arc::clone(&self.state.service);
        let (joined, mut history) = match service.join(caller, &self.conn, room, after_seq).await {
            Ok(j) => j,
            Err(e) => return sink.send(service_error_frame(e, "join")).await.is_ok(),
        };
        let mut last = after_seq.unwrap_or(0).max(0);
        let joined_frame = ServerFrame::Joined { room: joined.room_id.clone(), last_seq: joined.last_seq };
        if sink.feed(text(wire::frame(&joined_frame))).await.is_err() {
            return false;
        }
        loop {
            let full_page = after_seq.is_some() && history.len() >= pchat_service::MAX_PAGE as usize;
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
        }
        self.delivered.insert(joined.room_id, last);
        sink.flush().await.is_ok()
    }
}
