//! Posting load from the coordinator: writers, each on its own WebSocket, either as fast as their acks come back
//! (one post in flight each: the durable rate) or at a fixed total rate (sent on a clock whatever the acks do, so
//! a slow server shows as ack latency rather than as a slower load). Every post carries its send time for the
//! receivers, and an ack is counted only once the server has durably committed the post.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::api::Api;
use crate::clients::stamped;
use crate::hist::{Histogram, Recorder};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a posting phase did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Posted {
    pub(crate) acked: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) ack: Histogram,
    pub(crate) first_error: Option<String>,
}

impl Posted {
    pub(crate) fn rate(&self) -> f64 {
        self.acked as f64 / self.seconds.max(1e-9)
    }
}

async fn open(api: &Api) -> anyhow::Result<Socket> {
    let url = format!("{}/api/v1/stream?token={}", api.base.replacen("http://", "ws://", 1), api.token);
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

fn post_op(room: &str, client_id: &str) -> Message {
    Message::text(json!({ "op": "post", "room": room, "text": stamped(client_id), "client_id": client_id }).to_string())
}

/// Each writer posts into its rooms (in turn) as fast as its acks come back, for `duration`. With `join`, each
/// writer first joins its rooms, so that it also receives everything posted there (as a chatting user does).
pub(crate) async fn as_fast_as_acked(
    writers: Vec<(Api, Vec<String>)>,
    duration: Duration,
    join: bool,
) -> anyhow::Result<Posted> {
    let stop = Arc::new(AtomicBool::new(false));
    let ack = Arc::new(Recorder::default());
    let (acked, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut sockets = vec![];
    for (api, rooms) in &writers {
        if rooms.is_empty() {
            bail!("a writer without rooms");
        }
        let mut ws = open(api).await?;
        if join {
            for room in rooms {
                let op = json!({ "op": "join", "room": room, "after_seq": i64::MAX / 4 });
                ws.send(Message::text(op.to_string())).await?;
                while next_json(&mut ws).await?["type"] != "joined" {}
            }
        }
        sockets.push((ws, rooms.clone()));
    }
    let started = Instant::now();
    let mut tasks = vec![];
    for (w, (mut ws, rooms)) in sockets.into_iter().enumerate() {
        let (stop, ack, acked, errors) = (Arc::clone(&stop), Arc::clone(&ack), Arc::clone(&acked), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let client_id = format!("f{w}-{n}");
                let sent = Instant::now();
                ws.send(post_op(&rooms[n % rooms.len()], &client_id)).await?;
                loop {
                    let v = next_json(&mut ws).await?;
                    match v["type"].as_str() {
                        Some("ack") => {
                            ack.record_us(sent.elapsed().as_micros() as u64);
                            acked.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some("error") => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| v.to_string());
                            break;
                        }
                        _ => {}
                    }
                }
                n += 1;
            }
            anyhow::Ok(first_error)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    posted(tasks, started, &acked, &errors, &ack).await
}

/// Posts `rate` messages per second in total for `duration`, spread over the writers (each posting into its rooms
/// in turn) on a clock; waits up to 30 s for the last acks. Client ids start with `tag`, which receivers read as
/// the kind of room (`clients::ROOM_KINDS`; `'r'` for none).
pub(crate) async fn at_rate(
    writers: Vec<(Api, Vec<String>)>,
    rate: f64,
    duration: Duration,
    tag: char,
) -> anyhow::Result<Posted> {
    if writers.is_empty() || rate <= 0.0 {
        bail!("posting at a rate needs writers and a positive rate");
    }
    let per_writer = rate / writers.len() as f64;
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let ack = Arc::new(Recorder::default());
    let (acked, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = vec![];
    let count = writers.len() as u64;
    for (w, (api, rooms)) in writers.into_iter().enumerate() {
        let ws = open(&api).await?;
        let (ack, acked, errors) = (Arc::clone(&ack), Arc::clone(&acked), Arc::clone(&errors));
        // Writer w sends posts w, w+W, w+2W, ... of the total.
        let mine = total / count + u64::from((w as u64) < total % count);
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let trace_acks = std::env::var_os("PCHAT_BENCH_TRACE_ACKS").is_some();
            let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
            let pending = Arc::clone(&sent);
            let reader = tokio::spawn(async move {
                let mut got = 0u64;
                let mut first_error = None;
                while got < mine {
                    let frame = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        _ => break,
                    };
                    let v: Value = serde_json::from_str(frame.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("ack") => {
                            let id = v["client_id"].as_str().unwrap_or_default().to_owned();
                            if let Some(at) = pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                                let took = at.elapsed();
                                ack.record_us(took.as_micros() as u64);
                                if trace_acks {
                                    // PCHAT_BENCH_TRACE_ACKS=1: each ack with its post's send time, to line up
                                    // slow acks with what else was posted then.
                                    let sent_ms = (crate::clients::unix_us() - took.as_micros() as u64) / 1000;
                                    println!("  ack {id} sent {sent_ms} ms took {:.1} ms", took.as_secs_f64() * 1e3);
                                }
                            }
                            acked.fetch_add(1, Ordering::Relaxed);
                            got += 1;
                        }
                        Some("error") if v["op"] == "post" => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| v.to_string());
                            got += 1;
                        }
                        _ => {}
                    }
                }
                first_error
            });
            let interval = Duration::from_secs_f64(1.0 / per_writer.max(1e-6));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            // Writers start spread over one interval, not all at once.
            tokio::time::sleep(interval.mul_f64(w as f64 / count as f64)).await;
            for n in 0..mine {
                tick.tick().await;
                let client_id = format!("{tag}{w}-{n}");
                if let Ok(mut p) = sent.lock() {
                    p.insert(client_id.clone(), Instant::now());
                }
                sink.send(post_op(&rooms[n as usize % rooms.len()], &client_id)).await?;
            }
            anyhow::Ok(reader.await?)
        }));
    }
    posted(tasks, started, &acked, &errors, &ack).await
}

/// Waits for the writer tasks and sums up what they did (the first error any of them saw).
async fn posted(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Option<String>>>>,
    started: Instant,
    acked: &AtomicU64,
    errors: &AtomicU64,
    ack: &Recorder,
) -> anyhow::Result<Posted> {
    let mut first_error = None;
    for t in tasks {
        if let Some(e) = t.await?? {
            first_error.get_or_insert(e);
        }
    }
    Ok(Posted {
        acked: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        ack: ack.take(),
        first_error,
    })
}

async fn next_json(ws: &mut Socket) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(anyhow!("the stream closed")),
        }
    }
}

/// What a join churn did: the latency of the joins that succeeded (join sent → last history message, or
/// `joined` for an empty room), how many failed and the first failure.
pub(crate) struct Joins {
    pub(crate) latency: Histogram,
    pub(crate) failures: u64,
    pub(crate) first_failure: Option<String>,
}

/// Room joins at `rate` per second in total for `duration`: each session joins one of its rooms (with the room's
/// default history), waits for the history, and parts again.
pub(crate) async fn join_churn(
    sessions: Vec<(Api, Vec<String>)>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Joins> {
    let latency = Arc::new(Recorder::default());
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let per = rate / sessions.len().max(1) as f64;
    let mut tasks = vec![];
    for (i, (api, rooms)) in sessions.into_iter().enumerate() {
        if rooms.is_empty() {
            continue;
        }
        let mut ws = open(&api).await?;
        let (latency, failures, first_failure) =
            (Arc::clone(&latency), Arc::clone(&failures), Arc::clone(&first_failure));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let interval = Duration::from_secs_f64(1.0 / per.max(1e-3));
            let mut n = i;
            // Sessions start spread over one interval; a join past the end of the phase is not made.
            let mut next = started + interval.mul_f64(rand::random::<f64>());
            loop {
                if next.duration_since(started) >= duration {
                    break;
                }
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let room = &rooms[n % rooms.len()];
                n += 1;
                let failed_before = failures.load(Ordering::Relaxed);
                let sent = Instant::now();
                ws.send(Message::text(json!({ "op": "join", "room": room }).to_string())).await?;
                let mut last = None;
                loop {
                    let v = next_json(&mut ws).await?;
                    match v["type"].as_str() {
                        Some("joined") if v["room"] == room.as_str() => {
                            let l = v["last_seq"].as_i64().unwrap_or(0);
                            if l == 0 {
                                break;
                            }
                            last = Some(l);
                        }
                        Some("message")
                            if v["message"]["room"] == room.as_str()
                                && last.is_some_and(|l| v["message"]["seq"].as_i64().unwrap_or(0) >= l) =>
                        {
                            break;
                        }
                        Some("error") => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_failure.lock() {
                                first.get_or_insert_with(|| v.to_string());
                            }
                            break;
                        }
                        _ => {}
                    }
                }
                if failures.load(Ordering::Relaxed) == failed_before {
                    latency.record_us(sent.elapsed().as_micros() as u64);
                }
                ws.send(Message::text(json!({ "op": "part", "room": room }).to_string())).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let first_failure = first_failure.lock().ok().and_then(|f| f.clone());
    Ok(Joins { latency: latency.take(), failures: failures.load(Ordering::Relaxed), first_failure })
}
