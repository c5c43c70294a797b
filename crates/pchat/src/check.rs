//! `pchat check` (Lync `Test-CsPersistentChatMessage`): two users sign in, join a room over the live stream and
//! exchange a pair of messages; reports pass or fail with the round-trip times. Without explicit users it
//! provisions two test users, a category and a room named `pchat-check` (needs administrator rights).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, segment};

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Room to use (id or name:NAME); default: the provisioned `pchat-check` room.
    #[arg(long)]
    room: Option<String>,
    /// Sender and receiver; default: provisioned test users.
    #[arg(long, requires = "receiver")]
    sender: Option<String>,
    #[arg(long, env = "PCHAT_CHECK_SENDER_PASSWORD", hide_env_values = true)]
    sender_password: Option<String>,
    #[arg(long, requires = "sender")]
    receiver: Option<String>,
    #[arg(long, env = "PCHAT_CHECK_RECEIVER_PASSWORD", hide_env_values = true)]
    receiver_password: Option<String>,
    /// Seconds to wait for each message.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn run(admin: &Client, args: CheckArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let result = exchange(admin, &args).await;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (ok, report) = match &result {
        Ok((there, back)) => (true, json!({ "result": "pass", "round_trip_ms": [there, back], "total_ms": total_ms })),
        Err(e) => (false, json!({ "result": "fail", "error": format!("{e:#}"), "total_ms": total_ms })),
    };
    if json_out {
        println!("{report}");
    } else if let Ok((there, back)) = &result {
        println!("PASS: message round trip {there:.1} ms and {back:.1} ms (check took {total_ms:.0} ms)");
    } else if let Err(e) = &result {
        println!("FAIL: {e:#}");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn exchange(admin: &Client, args: &CheckArgs) -> anyhow::Result<(f64, f64)> {
    let ((sender, sender_password), (receiver, receiver_password), room) = match (&args.sender, &args.receiver) {
        (Some(s), Some(r)) => {
            let sp =
                args.sender_password.clone().ok_or_else(|| anyhow!("--sender-password is required with --sender"))?;
            let rp = args
                .receiver_password
                .clone()
                .ok_or_else(|| anyhow!("--receiver-password is required with --receiver"))?;
            let room = args.room.clone().ok_or_else(|| anyhow!("--room is required with explicit users"))?;
            ((s.clone(), sp), (r.clone(), rp), room)
        }
        _ => provision(admin, args.room.as_deref()).await?,
    };
    let a = sign_in(admin, &sender, &sender_password).await.context("sender cannot sign in")?;
    let b = sign_in(admin, &receiver, &receiver_password).await.context("receiver cannot sign in")?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut ws_a = connect(admin, &a).await?;
    let mut ws_b = connect(admin, &b).await?;
    join(&mut ws_a, &room, timeout).await.context("sender cannot join the room")?;
    join(&mut ws_b, &room, timeout).await.context("receiver cannot join the room")?;
    let there = send_and_receive(&mut ws_a, &mut ws_b, &room, timeout).await.context("sender → receiver")?;
    let back = send_and_receive(&mut ws_b, &mut ws_a, &room, timeout).await.context("receiver → sender")?;
    for token in [a, b] {
        let _ = admin.with_token(token).call(Method::DELETE, "/api/v1/sessions/current", None).await;
    }
    Ok((there, back))
}

/// Creates (afresh) two test users with random passwords, a category and a room for them.
async fn provision(admin: &Client, room: Option<&str>) -> anyhow::Result<((String, String), (String, String), String)> {
    let me = admin.get("/api/v1/me").await.context("provisioning test users needs administrator rights")?;
    let domain =
        me.pointer("/user/address").and_then(Value::as_str).and_then(|a| a.split_once('@')).map(|(_, d)| d.to_owned());
    let domain = domain.ok_or_else(|| anyhow!("cannot tell this deployment's domain"))?;
    let users: Vec<(String, String)> = ["sender", "receiver"]
        .iter()
        .map(|r| (format!("pchat-check-{r}@{domain}"), format!("pc-{}", uuid_like())))
        .collect();
    for (address, password) in &users {
        let _ = admin.call(Method::DELETE, &format!("/api/v1/users/{}", segment(address)), None).await;
        let body = json!({ "address": address, "display_name": "pchat check", "password": password });
        admin.call(Method::POST, "/api/v1/users", Some(body)).await?;
        let policy = json!({ "enable_persistent_chat": true });
        admin
            .call(Method::PUT, &format!("/api/v1/policies/{}", segment(&format!("user:{address}"))), Some(policy))
            .await?;
    }
    let addresses: Vec<&str> = users.iter().map(|(a, _)| a.as_str()).collect();
    let room = match room {
        Some(r) => r.to_owned(),
        None => {
            let category =
                json!({ "name": "pchat-check", "allowed_members": addresses, "description": "used by pchat check" });
            match admin.call(Method::POST, "/api/v1/categories", Some(category)).await {
                Ok(_) => {}
                Err(e) if e.to_string().starts_with("name_taken") => {
                    let patch = json!({ "allowed_members": { "add": addresses } });
                    admin.call(Method::PATCH, "/api/v1/categories/name:pchat-check", Some(patch)).await?;
                }
                Err(e) => return Err(e),
            }
            let new_room = json!({ "name": "pchat-check", "category": "name:pchat-check", "members": addresses });
            match admin.call(Method::POST, "/api/v1/rooms", Some(new_room)).await {
                Ok(_) => {}
                Err(e) if e.to_string().starts_with("name_taken") => {
                    let patch = json!({ "members": { "add": addresses }, "disabled": false });
                    admin.call(Method::PATCH, "/api/v1/rooms/name:pchat-check", Some(patch)).await?;
                }
                Err(e) => return Err(e),
            }
            "name:pchat-check".to_owned()
        }
    };
    let mut users = users.into_iter();
    let (Some(a), Some(b)) = (users.next(), users.next()) else { bail!("provisioning failed") };
    Ok((a, b, room))
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..24).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)])).collect()
}

async fn sign_in(client: &Client, user: &str, password: &str) -> anyhow::Result<String> {
    let session =
        client.call(Method::POST, "/api/v1/sessions", Some(json!({ "user": user, "password": password }))).await?;
    session.get("token").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| anyhow!("no token in the session"))
}

async fn connect(client: &Client, token: &str) -> anyhow::Result<Socket> {
    let base = client.base().replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    let url = format!("{base}/api/v1/stream?token={token}");
    let connector = tokio_tungstenite::Connector::Rustls(client.tls());
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
        .await
        .context("cannot open the live stream")?;
    Ok(socket)
}

async fn next_json(ws: &mut Socket, timeout: Duration) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(timeout, ws.next()).await.map_err(|_| anyhow!("timed out"))?;
        match message {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(Message::Close(_))) | None => bail!("the server closed the stream"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

async fn join(ws: &mut Socket, room: &str, timeout: Duration) -> anyhow::Result<()> {
    ws.send(Message::text(json!({ "op": "join", "room": room }).to_string())).await?;
    loop {
        let frame = next_json(ws, timeout).await?;
        match frame.get("type").and_then(Value::as_str) {
            Some("joined") => return Ok(()),
            Some("error") => bail!("{}", frame),
            _ => {}
        }
    }
}

/// Posts from `from` and waits until `to` receives it; returns the milliseconds taken.
async fn send_and_receive(from: &mut Socket, to: &mut Socket, room: &str, timeout: Duration) -> anyhow::Result<f64> {
    let client_id = format!("check-{}", uuid_like());
    let started = Instant::now();
    let post =
        json!({ "op": "post", "room": room, "text": format!("pchat check {client_id}"), "client_id": client_id });
    from.send(Message::text(post.to_string())).await?;
    loop {
        let frame = next_json(to, timeout).await?;
        if frame.get("type").and_then(Value::as_str) == Some("message")
            && frame.pointer("/message/client_id").and_then(Value::as_str) == Some(client_id.as_str())
        {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
}
