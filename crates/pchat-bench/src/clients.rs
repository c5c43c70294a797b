//! Connected clients, in worker processes of their own (`pchat-bench worker`), so that one process's open-files
//! limit does not cap a run: each worker connects its clients from its own loopback address (127.0.0.x, so
//! ephemeral ports never run out), joins their rooms, and measures what a user would see: join time, post→delivery
//! latency of every message (the send time travels in the text), `seq` continuity per room (gaps, duplicates),
//! and with `reconnect` the time to resume after the server goes away (rejoining with `after_seq`).
//!
//! The coordinator talks to a worker over its stdin and stdout, one JSON object per line: the plan, then the
//! commands `report`, `reset` and `stop`; the worker answers `ready` once every client has connected and joined
//! (or failed to), and a report per `report`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hist::{Histogram, Recorder};

/// Microseconds since the Unix epoch (the clock every process of the run shares).
pub(crate) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The text of a measured post: receivers take the send time from it.
pub(crate) fn stamped(tag: &str) -> String {
    format!("bench {} {tag}", unix_us())
}

fn sent_at(text: &str) -> Option<u64> {
    text.strip_prefix("bench ")?.split(' ').next()?.parse().ok()
}

/// Kinds of room a scenario may tell apart in delivery latency: a post's tag (its client id) starting with the
/// letter is counted in that kind's histogram too ([`Report::delivery_by_kind`], in this order).
pub(crate) const ROOM_KINDS: [(char, &str); 3] = [('s', "small"), ('m', "medium"), ('l', "large")];

/// The kind of room a tag's letter names (an index into [`ROOM_KINDS`]).
pub(crate) fn kind_named(letter: char) -> Option<usize> {
    ROOM_KINDS.iter().position(|(l, _)| *l == letter)
}

/// The kind of room a measured post's text says it went to (an index into [`ROOM_KINDS`]).
fn kind_of(text: &str) -> Option<usize> {
    let tag = text.strip_prefix("bench ")?.split(' ').nth(1)?;
    kind_named(tag.chars().next()?)
}

/// The fields of a server frame a client looks at (the rest is skipped unparsed into values).
#[derive(Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    room: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    last_seq: Option<i64>,
    #[serde(borrow, default)]
    message: Option<MessageFields<'a>>,
    #[serde(borrow, default)]
    op: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow)]
    room: std::borrow::Cow<'a, str>,
    seq: i64,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// What one worker process does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// The loopback address its connections come from.
    pub(crate) source: String,
    pub(crate) clients: Vec<ClientPlan>,
    /// Reconnect (and rejoin with `after_seq`) when the server goes away, as a real client does.
    pub(crate) reconnect: bool,
    /// Clients connecting and joining at once while the worker starts.
    pub(crate) concurrency: usize,
    /// Join with the room's default history (`false`: from the room's last `seq`, no history).
    pub(crate) history: bool,
    /// Clients started per second (0: as fast as `concurrency` allows).
    #[serde(default)]
    pub(crate) start_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientPlan {
    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) rooms: Vec<String>,
}

/// What a worker saw (since its start or the last `reset`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    /// Clients connected now.
    pub(crate) connected: u64,
    pub(crate) connect_failures: u64,
    pub(crate) join_errors: u64,
    /// Measured messages delivered.
    pub(crate) messages: u64,
    /// Messages missing in a room's `seq` sequence, and messages received twice or out of order.
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    /// Rooms the server dropped for slowness (`resync`).
    pub(crate) resyncs: u64,
    /// Connections the server closed (or that failed) while the plan did not expect it.
    pub(crate) closed: u64,
    /// Reconnections that resumed every room.
    pub(crate) resumed: u64,
    /// The last time a client finished resuming (µs since the epoch).
    pub(crate) last_resumed_us: u64,
    /// Clients that received no measured message.
    pub(crate) silent_clients: u64,
    pub(crate) delivery: Histogram,
    /// Post→delivery of the posts tagged with a kind of room ([`ROOM_KINDS`]); empty where none was tagged.
    pub(crate) delivery_by_kind: Vec<Histogram>,
    pub(crate) join: Histogram,
    /// From noticing the connection was gone to every room joined again.
    pub(crate) resume: Histogram,
    /// The first few errors, for the log.
    pub(crate) errors: Vec<String>,
}

impl Report {
    pub(crate) fn merge(&mut self, o: &Report) {
        self.connected += o.connected;
        self.connect_failures += o.connect_failures;
        self.join_errors += o.join_errors;
        self.messages += o.messages;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.resyncs += o.resyncs;
        self.closed += o.closed;
        self.resumed += o.resumed;
        self.last_resumed_us = self.last_resumed_us.max(o.last_resumed_us);
        self.silent_clients += o.silent_clients;
        self.delivery.merge(&o.delivery);
        self.delivery_by_kind.resize_with(self.delivery_by_kind.len().max(o.delivery_by_kind.len()), Default::default);
        for (mine, theirs) in self.delivery_by_kind.iter_mut().zip(&o.delivery_by_kind) {
            mine.merge(theirs);
        }
        self.join.merge(&o.join);
        self.resume.merge(&o.resume);
        for e in &o.errors {
            if self.errors.len() < 10 {
                self.errors.push(e.clone());
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_failures: AtomicU64,
    join_errors: AtomicU64,
    messages: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    resyncs: AtomicU64,
    closed: AtomicU64,
    resumed: AtomicU64,
    last_resumed_us: AtomicU64,
    delivery: Recorder,
    delivery_by_kind: [Recorder; ROOM_KINDS.len()],
    join: Recorder,
    resume: Recorder,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, e: String) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < 10
        {
            errors.push(e);
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Small buffers: a worker holds thousands of connections.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

async fn connect(source: &str, plan: &ClientPlan) -> anyhow::Result<Socket> {
    let addr: std::net::SocketAddr = plan.url.trim_start_matches("http://").parse().context("server address")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source.parse()?, 0))?;
    let tcp =
        tokio::time::timeout(Duration::from_secs(30), socket.connect(addr)).await.context("connect timed out")??;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/api/v1/stream");
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {}", plan.token).parse()?);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config())),
    )
    .await
    .context("handshake timed out")??;
    Ok(ws)
}

/// Where a room's sequence stands for one client.
#[derive(Default, Clone, Copy)]
struct RoomState {
    /// The last `seq` received; `None` until known.
    last: Option<i64>,
    /// The room's last `seq` when joined without `after_seq` (history follows up to it).
    joined_at: Option<i64>,
}

/// One client: connects, joins, reads until told to stop; reconnects when the plan says so.
#[allow(clippy::too_many_arguments)]
async fn client(
    source: String,
    plan: ClientPlan,
    reconnect: bool,
    history: bool,
    counters: Arc<Counters>,
    received: Arc<AtomicU64>,
    start_gate: Arc<Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let mut rooms: HashMap<String, RoomState> = plan.rooms.iter().map(|r| (r.clone(), RoomState::default())).collect();
    let mut first = true;
    let mut permit = start_gate.acquire_owned().await.ok();
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let ws = match connect(&source, &plan).await {
            Ok(ws) => ws,
            Err(e) => {
                if first && !reconnect {
                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                    counters.error(format!("connect: {e:#}"));
                    drop(permit.take());
                    let _ = ready.send(());
                    return;
                }
                tokio::time::sleep(backoff + Duration::from_millis(rand::random::<u64>() % 50)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        counters.connected.fetch_add(1, Ordering::Relaxed);
        let outcome =
            session(ws, &mut rooms, history, &counters, &received, &mut first, &mut permit, &ready, down_since).await;
        counters.connected.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => return,
            Err(e) => {
                if !reconnect {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    counters.error(format!("connection: {e:#}"));
                    if first {
                        drop(permit.take());
                        let _ = ready.send(());
                    }
                    return;
                }
                down_since = Some(Instant::now());
            }
        }
    }
}

/// One connection's life: joins every room (with `after_seq` where the sequence is known), then reads.
#[allow(clippy::too_many_arguments)]
async fn session(
    mut ws: Socket,
    rooms: &mut HashMap<String, RoomState>,
    history: bool,
    counters: &Counters,
    received: &AtomicU64,
    first: &mut bool,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ready: &tokio::sync::mpsc::UnboundedSender<()>,
    down_since: Option<Instant>,
) -> anyhow::Result<()> {
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut awaiting: HashMap<String, (Instant, i64)> = HashMap::new();
    for (room, state) in rooms.iter() {
        let op = match (state.last, history) {
            (Some(last), _) => json!({ "op": "join", "room": room, "after_seq": last }),
            (None, true) => json!({ "op": "join", "room": room }),
            // No history: start from the room's last seq (any seq beyond it is served from it).
            (None, false) => json!({ "op": "join", "room": room, "after_seq": i64::MAX / 4 }),
        };
        ws.send(Message::text(op.to_string())).await?;
        pending.insert(room.clone(), Instant::now());
    }
    if pending.is_empty() {
        finish_start(first, permit, ready);
    }
    while let Some(frame) = ws.next().await {
        let text = match frame? {
            Message::Text(t) => t,
            Message::Close(c) => bail!("closed by the server: {c:?}"),
            _ => continue,
        };
        // The arrival time first: what follows is the client's own work.
        let now_us = unix_us();
        let f: ServerFrame<'_> = serde_json::from_str(text.as_str())?;
        match f.kind.as_ref() {
            "joined" => {
                let room = f.room.as_deref().unwrap_or_default().to_owned();
                if let Some(sent) = pending.remove(&room) {
                    // With history, the join is done when its last message has arrived.
                    match f.last_seq {
                        Some(last) if history && last > 0 && rooms.get(&room).is_some_and(|s| s.last.is_none()) => {
                            awaiting.insert(room.clone(), (sent, last));
                        }
                        _ => counters.join.record_us(sent.elapsed().as_micros() as u64),
                    }
                }
                if let Some(state) = rooms.get_mut(&room)
                    && state.last.is_none()
                {
                    state.joined_at = f.last_seq;
                    if !history {
                        state.last = state.joined_at;
                    }
                }
                if pending.is_empty() {
                    if let Some(down) = down_since.filter(|_| !*first) {
                        counters.resume.record_us(down.elapsed().as_micros() as u64);
                        counters.resumed.fetch_add(1, Ordering::Relaxed);
                        counters.last_resumed_us.fetch_max(unix_us(), Ordering::Relaxed);
                    }
                    finish_start(first, permit, ready);
                }
            }
            "message" => {
                let Some(m) = &f.message else { continue };
                let (room, seq) = (m.room.as_ref(), m.seq);
                if let Some(state) = rooms.get_mut(room) {
                    let last = match state.last {
                        Some(l) => l,
                        // The first message after a join without after_seq: history up to the join, or live after.
                        None => match state.joined_at {
                            Some(at) if seq > at => at,
                            _ => seq - 1,
                        },
                    };
                    if seq <= last {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if seq > last + 1 {
                            counters.gaps.fetch_add((seq - last - 1) as u64, Ordering::Relaxed);
                        }
                        state.last = Some(seq);
                    }
                }
                if let Some((sent, last)) = awaiting.get(room).copied()
                    && seq >= last
                {
                    counters.join.record_us(sent.elapsed().as_micros() as u64);
                    awaiting.remove(room);
                }
                if let Some(sent) = sent_at(&m.text) {
                    counters.delivery.record_us(now_us.saturating_sub(sent));
                    if let Some(kind) = kind_of(&m.text) {
                        counters.delivery_by_kind[kind].record_us(now_us.saturating_sub(sent));
                    }
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            "resync" => {
                counters.resyncs.fetch_add(1, Ordering::Relaxed);
                if let Some(room) = f.room.as_deref()
                    && let Some(state) = rooms.get(room)
                {
                    let op = json!({ "op": "join", "room": room, "after_seq": state.last.unwrap_or(0) });
                    ws.send(Message::text(op.to_string())).await?;
                }
            }
            "error" => {
                counters.join_errors.fetch_add(1, Ordering::Relaxed);
                counters.error(format!("error frame: {}", text.as_str()));
                if f.op.as_deref() == Some("join") && !pending.is_empty() {
                    // The room stays unjoined; the client carries on with the others.
                    let first_pending = pending.keys().next().cloned();
                    if let Some(r) = first_pending {
                        pending.remove(&r);
                    }
                    if pending.is_empty() {
                        finish_start(first, permit, ready);
                    }
                }
            }
            _ => {}
        }
    }
    bail!("the connection ended")
}

fn finish_start(
    first: &mut bool,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ready: &tokio::sync::mpsc::UnboundedSender<()>,
) {
    if *first {
        *first = false;
        drop(permit.take());
        let _ = ready.send(());
    }
}

/// `pchat-bench worker`: reads its plan and commands on stdin, answers on stdout.
pub(crate) async fn worker() -> anyhow::Result<()> {
    crate::target::raise_open_files();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let plan: Plan = serde_json::from_str(&lines.next_line().await?.ok_or_else(|| anyhow!("no plan"))?)?;
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut received = vec![];
    let started = Instant::now();
    for (i, c) in plan.clients.iter().cloned().enumerate() {
        if plan.start_rate > 0.0 {
            let at = started + Duration::from_secs_f64(i as f64 / plan.start_rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let count = Arc::new(AtomicU64::new(0));
        received.push(Arc::clone(&count));
        tokio::spawn(client(
            plan.source.clone(),
            c,
            plan.reconnect,
            plan.history,
            Arc::clone(&counters),
            count,
            Arc::clone(&gate),
            ready_tx.clone(),
        ));
    }
    let mut out = tokio::io::stdout();
    for _ in 0..plan.clients.len() {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let ready = json!({ "ready": { "connected": counters.connected.load(Ordering::Relaxed) } });
    out.write_all(format!("{ready}\n").as_bytes()).await?;
    out.flush().await?;
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "report" | "reset" => {
                let take = line.trim() == "reset";
                let load = |a: &AtomicU64| if take { a.swap(0, Ordering::Relaxed) } else { a.load(Ordering::Relaxed) };
                let hist = |r: &Recorder| if take { r.take() } else { r.snapshot() };
                let report = Report {
                    connected: counters.connected.load(Ordering::Relaxed),
                    connect_failures: load(&counters.connect_failures),
                    join_errors: load(&counters.join_errors),
                    messages: load(&counters.messages),
                    gaps: load(&counters.gaps),
                    duplicates: load(&counters.duplicates),
                    resyncs: load(&counters.resyncs),
                    closed: load(&counters.closed),
                    resumed: load(&counters.resumed),
                    last_resumed_us: load(&counters.last_resumed_us),
                    silent_clients: received.iter().filter(|r| r.load(Ordering::Relaxed) == 0).count() as u64,
                    delivery: hist(&counters.delivery),
                    delivery_by_kind: counters.delivery_by_kind.iter().map(hist).collect(),
                    join: hist(&counters.join),
                    resume: hist(&counters.resume),
                    errors: counters.errors.lock().map(|e| e.clone()).unwrap_or_default(),
                };
                if take {
                    for r in &received {
                        r.store(0, Ordering::Relaxed);
                    }
                    if let Ok(mut e) = counters.errors.lock() {
                        e.clear();
                    }
                }
                out.write_all(format!("{}\n", json!({ "report": report })).as_bytes()).await?;
                out.flush().await?;
            }
            "stop" => break,
            _ => {}
        }
    }
    Ok(())
}

/// The coordinator's side: worker processes holding clients.
pub(crate) struct Swarm {
    workers: Vec<Worker>,
}

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn answer(&mut self, key: &str, wait: Duration) -> anyhow::Result<Value> {
        loop {
            let line = tokio::time::timeout(wait, self.lines.next_line())
                .await
                .with_context(|| format!("a worker did not answer `{key}` within {wait:?}"))??
                .ok_or_else(|| anyhow!("a worker exited"))?;
            let v: Value = serde_json::from_str(&line)?;
            if let Some(answer) = v.get(key) {
                return Ok(answer.clone());
            }
        }
    }
}

impl Swarm {
    /// Starts one worker per plan and waits until every client has connected and joined (or failed).
    pub(crate) async fn start(plans: Vec<Plan>, wait: Duration) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut workers = vec![];
        for plan in &plans {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            let mut w = Worker { child, stdin, lines: BufReader::new(stdout).lines() };
            w.send(&serde_json::to_string(plan)?).await?;
            workers.push(w);
        }
        for w in &mut workers {
            w.answer("ready", wait).await?;
        }
        Ok(Self { workers })
    }

    async fn gather(&mut self, command: &str) -> anyhow::Result<Report> {
        let mut all = Report::default();
        for w in &mut self.workers {
            w.send(command).await?;
        }
        for w in &mut self.workers {
            let r: Report = serde_json::from_value(w.answer("report", Duration::from_secs(60)).await?)?;
            all.merge(&r);
        }
        Ok(all)
    }

    /// Everything seen so far.
    pub(crate) async fn report(&mut self) -> anyhow::Result<Report> {
        self.gather("report").await
    }

    /// Everything seen so far, and the counts started afresh.
    pub(crate) async fn reset(&mut self) -> anyhow::Result<Report> {
        self.gather("reset").await
    }

    /// Waits until `pred` holds for the merged report (checked every 200 ms) or `wait` passes; the last report.
    pub(crate) async fn until(&mut self, wait: Duration, pred: impl Fn(&Report) -> bool) -> anyhow::Result<Report> {
        let deadline = Instant::now() + wait;
        loop {
            let r = self.report().await?;
            if pred(&r) || Instant::now() > deadline {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn stop(mut self) {
        for w in &mut self.workers {
            let _ = w.send("stop").await;
        }
        for w in &mut self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
        }
    }
}

/// Spreads clients over workers of at most `per_worker` each, worker k connecting from 127.0.0.(k+2).
pub(crate) fn plans(
    clients: Vec<ClientPlan>,
    per_worker: usize,
    reconnect: bool,
    history: bool,
    concurrency: usize,
) -> Vec<Plan> {
    paced(clients, per_worker, reconnect, history, concurrency, 0.0)
}

/// As [`plans`], the clients started at `rate` per second in all (0: at once).
pub(crate) fn paced(
    clients: Vec<ClientPlan>,
    per_worker: usize,
    reconnect: bool,
    history: bool,
    concurrency: usize,
    rate: f64,
) -> Vec<Plan> {
    let workers = clients.len().div_ceil(per_worker.max(1)).max(1);
    clients
        .chunks(per_worker.max(1))
        .enumerate()
        .map(|(k, chunk)| Plan {
            source: format!("127.0.{}.{}", (k + 2) / 250, (k + 2) % 250),
            clients: chunk.to_vec(),
            reconnect,
            concurrency,
            history,
            start_rate: rate / workers as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posts_tag_names_its_kind_of_room_and_untagged_posts_have_none() {
        assert_eq!(kind_of("bench 1764300000000000 s12-3"), Some(0));
        assert_eq!(kind_of("bench 1764300000000000 m0-0"), Some(1));
        assert_eq!(kind_of("bench 1764300000000000 l1-20"), Some(2));
        assert_eq!(kind_of("bench 1764300000000000 r4-1"), None);
        assert_eq!(kind_of("bench 1764300000000000"), None);
        assert_eq!(kind_of("small talk"), None);
        assert_eq!(sent_at("bench 1764300000000000 s12-3"), Some(1_764_300_000_000_000));
    }

    #[test]
    fn reports_merge_their_latency_by_kind_of_room() {
        let recorded = |us: &[u64]| {
            let r = Recorder::default();
            us.iter().for_each(|u| r.record_us(*u));
            r.take()
        };
        let mut total = Report::default();
        let one = Report {
            delivery_by_kind: vec![recorded(&[1_000]), recorded(&[]), recorded(&[9_000])],
            ..Report::default()
        };
        let other = Report { delivery_by_kind: vec![recorded(&[2_000, 3_000])], ..Report::default() };
        total.merge(&one);
        total.merge(&other);
        let counts: Vec<u64> = total.delivery_by_kind.iter().map(Histogram::count).collect();
        assert_eq!(counts, vec![3, 0, 1]);
        assert_eq!(total.delivery_by_kind[2].max_us, 9_000);
    }
}
