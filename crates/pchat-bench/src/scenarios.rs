//! The scenarios. Each provisions what it needs through the API, drives its load, and returns its figures; with
//! `--smoke` each runs at a tiny scale, so that CI proves the harness works without timing anything.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::api::{self, ADMIN, Api};
use crate::clients::{self, ClientPlan, Swarm};
use crate::report::Run;
use crate::target::{Backend, Target, Usage, proc_stats};
use crate::writers;

pub(crate) struct Context {
    pub(crate) server: PathBuf,
    pub(crate) backend: Backend,
    pub(crate) smoke: bool,
    /// Keep the servers' directory after the run (`--keep`).
    pub(crate) keep: bool,
}

impl Context {
    /// `full` normally, `smoke` with --smoke, or what the flag says.
    pub(crate) fn scale(&self, flag: Option<usize>, full: usize, smoke: usize) -> usize {
        flag.unwrap_or(if self.smoke { smoke } else { full })
    }

    pub(crate) async fn start(&self, servers: usize, extra: &str) -> anyhow::Result<(Target, Api)> {
        let t = Target::start(&self.server, self.backend, servers, extra, self.keep).await?;
        let admin = Api::sign_in(&t.servers[0].url, ADMIN).await?;
        Ok((t, admin))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A closed room in category `category` with these members; its id.
async fn room(admin: &Api, category: &str, name: &str, members: &[usize]) -> anyhow::Result<String> {
    let members: Vec<String> = members.iter().map(|m| api::user(*m)).collect();
    let body = json!({ "name": name, "category": category, "privacy": "closed", "members": members });
    Ok(admin.post("/api/v1/rooms", body).await?["id"].as_str().unwrap_or_default().to_owned())
}

async fn category(admin: &Api, name: &str) -> anyhow::Result<String> {
    let body = json!({ "name": name, "allowed_members": ["*"], "creators": [ADMIN] });
    Ok(admin.post("/api/v1/categories", body).await?["id"].as_str().unwrap_or_default().to_owned())
}

#[derive(Debug, clap::Args)]
pub(crate) struct IdleArgs {
    /// Users who sign in (default 1,000).
    #[arg(long)]
    users: Option<usize>,
}

/// Idle: the server's resident memory after `users` sign-ins, with nothing connected.
pub(crate) async fn idle(ctx: &Context, a: IdleArgs) -> anyhow::Result<Run> {
    let users = ctx.scale(a.users, 1000, 50);
    let mut run = Run::new("idle", ctx.backend.name());
    let (t, admin) = ctx.start(1, "").await?;
    let pid = t.pids()[0];
    let at_start = proc_stats(pid).map_or(0, |s| s.rss_kib);
    api::provision_users(&admin, users).await?;
    let started = Instant::now();
    let apis = api::sign_in_all(&t.urls(), &(0..users).collect::<Vec<_>>(), 4).await?;
    let secs = started.elapsed().as_secs_f64();
    drop(apis);
    // Let the server settle (connections close, buffers return).
    tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 5 })).await;
    let after = proc_stats(pid).unwrap_or_default();
    run.figure("users signed in", users as f64, "count");
    run.figure("sign-ins per second", users as f64 / secs, "1/s");
    run.figure("server RSS at start", mib(at_start), "MiB");
    run.at_most("server RSS after the sign-ins, nothing connected", mib(after.rss_kib), "MiB", 150.0);
    run.figure("server peak RSS", mib(after.hwm_kib), "MiB");
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// Connections to hold (default: 19,000, about what one server may hold under a 20,000 open-files limit).
    #[arg(long)]
    connections: Option<usize>,
    /// Members per room (each connection's user is in one room).
    #[arg(long, default_value_t = 30)]
    room_size: usize,
    /// Connections per client process.
    #[arg(long, default_value_t = 5000)]
    per_worker: usize,
}

/// Connections: idle WebSocket connections joined to 30-member rooms, as many as one server may hold; the
/// server's memory per connection; then one message per room, which every connection must receive.
pub(crate) async fn connections(ctx: &Context, a: ConnectionsArgs) -> anyhow::Result<Run> {
    let n = ctx.scale(a.connections, 19_000, 60);
    let mut run = Run::new("connections", ctx.backend.name());
    let (t, admin) = ctx.start(1, "").await?;
    let pid = t.pids()[0];
    // Users 0..n hold the connections; users n.. are the writers, one of them a member of each room.
    let room_count = n.div_ceil(a.room_size.max(1));
    let writer_count = room_count.min(8);
    api::provision_users(&admin, n + writer_count).await?;
    let cat = category(&admin, "Bench").await?;
    let rooms: Vec<Vec<usize>> = (0..room_count)
        .map(|r| {
            let mut members: Vec<usize> = (r * a.room_size..((r + 1) * a.room_size).min(n)).collect();
            members.push(n + r % writer_count);
            members
        })
        .collect();
    let ids = api::each("rooms created", rooms.into_iter().enumerate().collect(), 8, |(i, members)| {
        let admin = admin.clone();
        let cat = cat.clone();
        async move { room(&admin, &cat, &format!("room {i}"), &members).await }
    })
    .await?;
    let apis = api::sign_in_all(&t.urls(), &(0..n).collect::<Vec<_>>(), 4).await?;
    tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 5 })).await;
    let before = proc_stats(pid).unwrap_or_default();
    let clients: Vec<ClientPlan> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| ClientPlan {
            url: api.base.clone(),
            token: api.token.clone(),
            rooms: vec![ids[i / a.room_size].clone()],
        })
        .collect();
    let started = Instant::now();
    let mut swarm =
        Swarm::start(clients::plans(clients, a.per_worker, false, false, 200), Duration::from_secs(600)).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let joined = swarm.reset().await?;
    if !joined.errors.is_empty() {
        run.note(format!("client errors while connecting: {:?}", joined.errors));
    }
    tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 10 })).await;
    let held = proc_stats(pid).unwrap_or_default();
    run.figure("connections attempted", n as f64, "count");
    run.at_least("connections held", joined.connected as f64, "count", n as f64);
    run.figure("connect and join rate", n as f64 / connect_secs, "1/s");
    run.latency("join", &joined.join, None);
    run.figure("server RSS before connecting", mib(before.rss_kib), "MiB");
    run.at_most("server RSS holding the connections", mib(held.rss_kib), "MiB", 400.0);
    let per = (held.rss_kib.saturating_sub(before.rss_kib)) as f64 / joined.connected.max(1) as f64;
    run.at_most("server memory per idle connection", per, "KiB", 16.0);
    // One message per room, from a few writers, at a modest pace; every connection must get its room's.
    let usage = Usage::start(vec![pid]);
    let writer_apis = api::sign_in_all(&t.urls(), &(n..n + writer_count).collect::<Vec<_>>(), 4).await?;
    let mut writers_list: Vec<(Api, Vec<String>)> = writer_apis.into_iter().map(|w| (w, vec![])).collect();
    for (i, id) in ids.iter().enumerate() {
        writers_list[i % writer_count].1.push(id.clone());
    }
    let rate = if ctx.smoke { 20.0 } else { 200.0 };
    let posted = writers::at_rate(writers_list, rate, Duration::from_secs_f64(ids.len() as f64 / rate), 'r').await?;
    let got = swarm.until(Duration::from_secs(60), |r| r.messages >= n as u64).await?;
    let used = usage.finish();
    run.figure("messages posted (one per room)", posted.acked as f64, "count");
    run.at_least(
        "connections that received their room's message",
        (n as u64 - got.silent_clients) as f64,
        "count",
        n as f64,
    );
    run.latency("post→delivery", &got.delivery, Some(1000.0));
    run.at_most("gaps and duplicates", (got.gaps + got.duplicates) as f64, "count", 0.0);
    run.figure("server CPU while posting", used.cpu_percent, "%");
    run.figure("server peak RSS while posting", mib(used.rss_peak_kib), "MiB");
    if !got.errors.is_empty() {
        run.note(format!("client errors: {:?}", got.errors));
    }
    swarm.stop().await;
    drop(t);
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// Concurrent writers (default 256).
    #[arg(long)]
    writers: Option<usize>,
    /// Rooms posted into (default 1,000); each writer posts into its share in turn.
    #[arg(long)]
    rooms: Option<usize>,
    /// Members per room.
    #[arg(long, default_value_t = 30)]
    room_size: usize,
    /// Rooms whose members are all connected, receiving (the sample delivery latency is measured in).
    #[arg(long)]
    sampled_rooms: Option<usize>,
    /// Seconds of each phase.
    #[arg(long)]
    seconds: Option<u64>,
    /// Writers join the rooms they post into (and receive everything posted there).
    #[arg(long)]
    join_writers: bool,
    /// Servers (a pool on PostgreSQL): writers and receivers spread over them, so delivery crosses servers.
    #[arg(long, default_value_t = 1)]
    servers: usize,
}

/// Ingest: the most durable posts per second that many writers over many rooms get acknowledged, then the ack
/// and delivery latency at fractions of it (80 % is the target point), with the server's CPU and memory.
pub(crate) async fn ingest(ctx: &Context, a: IngestArgs) -> anyhow::Result<Run> {
    let writers = ctx.scale(a.writers, 256, 8);
    let rooms = ctx.scale(a.rooms, 1000, 10).max(1);
    let sampled = ctx.scale(a.sampled_rooms, 20, 2).min(rooms);
    let secs = a.seconds.unwrap_or(if ctx.smoke { 2 } else { 20 });
    let size = a.room_size.max(1);
    let mut run = Run::new(if a.servers > 1 { "ingest-pool" } else { "ingest" }, ctx.backend.name());
    let (t, admin) = ctx.start(a.servers, "").await?;
    let pids = t.pids();
    // Users 0..writers write; then `size` receivers per sampled room.
    let receivers = sampled * size;
    api::provision_users(&admin, writers + receivers).await?;
    let cat = category(&admin, "Ingest").await?;
    let specs: Vec<(usize, Vec<usize>)> = (0..rooms)
        .map(|r| {
            let mut members: Vec<usize> =
                (0..writers).filter(|w| w % rooms == r % writers.min(rooms) || r % writers == *w).collect();
            if r < sampled {
                members.extend(writers + r * size..writers + (r + 1) * size);
            } else {
                // Members who are never connected, so that every room has its size.
                members.extend((writers..writers + receivers).take(size.saturating_sub(members.len())));
            }
            members.sort_unstable();
            members.dedup();
            (r, members)
        })
        .collect();
    let ids = api::each("rooms created", specs, 8, |(r, members)| {
        let (admin, cat) = (admin.clone(), cat.clone());
        async move { room(&admin, &cat, &format!("ingest {r}"), &members).await }
    })
    .await?;
    let writer_apis = api::sign_in_all(&t.urls(), &(0..writers).collect::<Vec<_>>(), 4).await?;
    let assignment: Vec<(Api, Vec<String>)> = writer_apis
        .into_iter()
        .enumerate()
        .map(|(w, api)| {
            let mine: Vec<String> = ids
                .iter()
                .enumerate()
                .filter(|(r, _)| r % writers == w || (rooms < writers && w % rooms == *r))
                .map(|(_, id)| id.clone())
                .collect();
            (api, mine)
        })
        .collect();
    let receiver_apis = api::sign_in_all(&t.urls(), &(writers..writers + receivers).collect::<Vec<_>>(), 4).await?;
    let plans: Vec<ClientPlan> = receiver_apis
        .iter()
        .enumerate()
        .map(|(i, api)| ClientPlan {
            url: api.base.clone(),
            token: api.token.clone(),
            rooms: vec![ids[i / size].clone()],
        })
        .collect();
    let mut swarm = Swarm::start(clients::plans(plans, 5000, false, false, 200), Duration::from_secs(300)).await?;
    swarm.reset().await?;
    let rss_before: u64 = pids.iter().filter_map(|p| proc_stats(*p)).map(|s| s.rss_kib).sum();

    let usage = Usage::start(pids.clone());
    let max = writers::as_fast_as_acked(assignment.clone(), Duration::from_secs(secs), a.join_writers).await?;
    let used = usage.finish();
    let seen = swarm.reset().await?;
    run.figure("writers", writers as f64, "count");
    run.figure("rooms", rooms as f64, "count");
    if a.servers > 1 {
        run.figure("durable posts per second (maximum, as fast as acked)", max.rate(), "1/s");
        run.note(
            "the pool target (at least 1.5 times one server's rate) compares this with `ingest --backend postgres`"
                .into(),
        );
    } else {
        run.at_least("durable posts per second (maximum, as fast as acked)", max.rate(), "1/s", 20_000.0);
    }
    run.latency("ack at the maximum", &max.ack, None);
    run.figure("post errors", max.errors as f64, "count");
    run.figure("server CPU at the maximum", used.cpu_percent, "%");
    run.cpu_split("at the maximum", "durable post", &used, max.acked);
    if ctx.backend == Backend::Sqlite && max.acked > 0 {
        // What a durable post costs the disk: the WAL frames of the pages it dirtied, and the checkpoints'
        // copies of them into the database file (PostgreSQL's writes are its own processes', not counted).
        let per_post = used.storage_written as f64 / max.acked as f64 / 1024.0;
        run.figure("written to storage per durable post at the maximum", per_post, "KiB");
    }
    run.figure("server RSS before", mib(rss_before), "MiB");
    run.figure("server peak RSS during the maximum", mib(used.rss_peak_kib), "MiB");
    run.figure("server RSS after the maximum", mib(used.rss_end_kib), "MiB");
    run.latency("delivery in the sampled rooms at the maximum", &seen.delivery, None);
    if let Some(e) = &max.first_error {
        run.note(format!("first post error: {e}"));
    }
    tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 10 })).await;
    let rss_after: u64 = pids.iter().filter_map(|p| proc_stats(*p)).map(|s| s.rss_kib).sum();
    run.figure("servers", pids.len() as f64, "count");
    run.figure("server RSS 10 s after the maximum", mib(rss_after), "MiB");

    // The load curve: fractions of the maximum, on a clock; 80 % is the target point.
    let mut points = vec![];
    for fraction in [0.2, 0.4, 0.6, 0.8] {
        let rate = max.rate() * fraction;
        if rate < 1.0 {
            continue;
        }
        let phase = Duration::from_secs((secs / 2).max(1));
        let usage = Usage::start(pids.clone());
        let posted = writers::at_rate(assignment.clone(), rate, phase, 'r').await?;
        let used = usage.finish();
        let seen = swarm.reset().await?;
        points.push(crate::report::Point {
            load: rate.round(),
            p50: posted.ack.percentile_ms(50.0),
            p90: posted.ack.percentile_ms(90.0),
            p99: posted.ack.percentile_ms(99.0),
        });
        if fraction == 0.8 {
            run.figure("offered posts per second at 80 %", rate, "1/s");
            run.latency("ack at 80 % of the maximum", &posted.ack, Some(50.0));
            run.latency("delivery in the sampled rooms at 80 %", &seen.delivery, None);
            run.at_most("gaps and duplicates", (seen.gaps + seen.duplicates) as f64, "count", 0.0);
            run.figure("server CPU at 80 %", used.cpu_percent, "%");
        }
    }
    run.curve = Some(("offered durable posts per second".into(), "ack latency".into(), points));
    swarm.stop().await;
    drop(t);
    Ok(run)
}

/// A group of users, created and filled 1,000 at a time.
async fn group(admin: &Api, name: &str, members: impl Iterator<Item = usize>) -> anyhow::Result<()> {
    admin.post("/api/v1/groups", json!({ "name": name })).await?;
    let members: Vec<String> = members.map(api::user).collect();
    for chunk in members.chunks(1000) {
        let body = json!({ "members": { "add": chunk } });
        admin.call(reqwest::Method::PATCH, &format!("/api/v1/groups/{name}"), body).await?;
    }
    Ok(())
}

/// Signs in `users` and gives each a client joined to `rooms_of(user)`.
async fn client_plans(
    t: &Target,
    users: &[usize],
    rooms_of: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<Vec<ClientPlan>> {
    let apis = api::sign_in_all(&t.urls(), users, 4).await?;
    Ok(apis
        .into_iter()
        .zip(users)
        .map(|(api, u)| ClientPlan { url: api.base, token: api.token, rooms: rooms_of(*u) })
        .collect())
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditoriumArgs {
    /// Members connected (default 16,000).
    #[arg(long)]
    members: Option<usize>,
    #[arg(long, default_value_t = 4)]
    presenters: usize,
    /// Messages per second from the presenters together.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long, default_value_t = 5000)]
    per_worker: usize,
}

/// Auditorium: one auditorium whose members (a group, as Lync's large rooms are) are all connected; presenters
/// post 10 messages per second; the delivery latency to every member.
pub(crate) async fn auditorium(ctx: &Context, a: AuditoriumArgs) -> anyhow::Result<Run> {
    let members = ctx.scale(a.members, 16_000, 50);
    let secs = a.seconds.unwrap_or(if ctx.smoke { 2 } else { 30 });
    let presenters = a.presenters.max(1);
    let mut run = Run::new("auditorium", ctx.backend.name());
    let (t, admin) = ctx.start(1, "").await?;
    let pid = t.pids()[0];
    api::provision_users(&admin, members + presenters).await?;
    let cat = category(&admin, "Auditoriums").await?;
    group(&admin, "audience", 0..members).await?;
    let presenter_names: Vec<String> = (members..members + presenters).map(api::user).collect();
    let body = json!({ "name": "Town hall", "category": cat, "privacy": "closed", "type": "auditorium",
                       "members": ["group:audience"], "presenters": presenter_names });
    let room_id = admin.post("/api/v1/rooms", body).await?["id"].as_str().unwrap_or_default().to_owned();
    let users: Vec<usize> = (0..members).collect();
    let plans = client_plans(&t, &users, |_| vec![room_id.clone()]).await?;
    let mut swarm =
        Swarm::start(clients::plans(plans, a.per_worker, false, false, 200), Duration::from_secs(900)).await?;
    let joined = swarm.reset().await?;
    if !joined.errors.is_empty() {
        run.note(format!("client errors while connecting: {:?}", joined.errors));
    }
    run.at_least("members connected and joined", joined.connected as f64, "count", members as f64);
    let rss = proc_stats(pid).map_or(0, |s| s.rss_kib);
    let stage = api::sign_in_all(&t.urls(), &(members..members + presenters).collect::<Vec<_>>(), 4).await?;
    let usage = Usage::start(vec![pid]);
    let posted = writers::at_rate(
        stage.into_iter().map(|p| (p, vec![room_id.clone()])).collect(),
        a.rate,
        Duration::from_secs(secs),
        'r',
    )
    .await?;
    let expected = posted.acked * members as u64;
    let got = swarm.until(Duration::from_secs(60), |r| r.messages >= expected).await?;
    let used = usage.finish();
    run.figure("messages posted", posted.acked as f64, "count");
    run.at_least("deliveries", got.messages as f64, "count", expected as f64);
    run.latency("post→delivery to every member", &got.delivery, Some(250.0));
    run.at_most("gaps and duplicates", (got.gaps + got.duplicates) as f64, "count", 0.0);
    run.figure("server RSS with everyone joined", mib(rss), "MiB");
    run.figure("server peak RSS while posting", mib(used.rss_peak_kib), "MiB");
    run.figure("server CPU while posting", used.cpu_percent, "%");
    run.cpu_split("while posting", "delivered frame", &used, got.messages);
    swarm.stop().await;
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct JoinStormArgs {
    /// Clients joining (default 10,000).
    #[arg(long)]
    clients: Option<usize>,
    /// Seconds over which they all connect and join (default 10).
    #[arg(long)]
    over: Option<f64>,
    #[arg(long, default_value_t = 30)]
    room_size: usize,
    /// Messages in each room before the storm (joins get the latest 30 of them).
    #[arg(long, default_value_t = 40)]
    history: usize,
    #[arg(long, default_value_t = 5000)]
    per_worker: usize,
}

/// Join storm: many clients connect and join their room with its default history within a few seconds; the time
/// from each join to the last message of its history.
pub(crate) async fn join_storm(ctx: &Context, a: JoinStormArgs) -> anyhow::Result<Run> {
    let n = ctx.scale(a.clients, 10_000, 60);
    let size = a.room_size.max(1);
    let mut run = Run::new("join-storm", ctx.backend.name());
    let (t, admin) = ctx.start(1, "").await?;
    let pid = t.pids()[0];
    api::provision_users(&admin, n).await?;
    let cat = category(&admin, "Storm").await?;
    let rooms = n.div_ceil(size);
    let ids = api::each("rooms created", (0..rooms).collect(), 8, |r| {
        let (admin, cat) = (admin.clone(), cat.clone());
        async move {
            room(&admin, &cat, &format!("storm {r}"), &(r * size..((r + 1) * size).min(n)).collect::<Vec<_>>()).await
        }
    })
    .await?;
    let plans = client_plans(&t, &(0..n).collect::<Vec<_>>(), |u| vec![ids[u / size].clone()]).await?;
    // History: one member per room posts it (as fast as acked, many rooms at once).
    let fillers: Vec<(Api, Vec<String>)> =
        api::sign_in_all(&t.urls(), &(0..rooms).map(|r| r * size).collect::<Vec<_>>(), 4)
            .await?
            .into_iter()
            .zip(&ids)
            .map(|(api, id)| (api, vec![id.clone()]))
            .collect();
    let per_room = a.history;
    api::each("rooms filled", fillers, 16, |(api, rooms)| async move {
        for i in 0..per_room {
            let body = json!({ "text": format!("history {i}"), "client_id": format!("h{i}") });
            api.post(&format!("/api/v1/rooms/{}/messages", rooms[0]), body).await?;
        }
        anyhow::Ok(())
    })
    .await?;
    let usage = Usage::start(vec![pid]);
    let started = Instant::now();
    let mut swarm = Swarm::start(
        clients::paced(
            plans,
            a.per_worker,
            false,
            true,
            1000,
            n as f64 / a.over.unwrap_or(if ctx.smoke { 1.0 } else { 10.0 }),
        ),
        Duration::from_secs(600),
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    let used = usage.finish();
    let seen = swarm.report().await?;
    run.figure("clients", n as f64, "count");
    run.at_least("clients joined", seen.connected as f64, "count", n as f64);
    run.figure("seconds until every client had joined", took, "s");
    run.latency("join with history (join sent → last history message)", &seen.join, Some(200.0));
    run.at_most("join errors and failed connections", (seen.join_errors + seen.connect_failures) as f64, "count", 0.0);
    run.figure("server CPU during the storm", used.cpu_percent, "%");
    run.figure("server peak RSS during the storm", mib(used.rss_peak_kib), "MiB");
    if !seen.errors.is_empty() {
        run.note(format!("client errors: {:?}", seen.errors));
    }
    swarm.stop().await;
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReconnectStormArgs {
    /// Clients connected (default 10,000).
    #[arg(long)]
    clients: Option<usize>,
    #[arg(long, default_value_t = 30)]
    room_size: usize,
    #[arg(long, default_value_t = 5000)]
    per_worker: usize,
}

/// Reconnect storm: every client connected and joined; the server is killed (SIGKILL) and started again, and
/// messages are posted in every room meanwhile; the time until all have resumed, and every message once.
pub(crate) async fn reconnect_storm(ctx: &Context, a: ReconnectStormArgs) -> anyhow::Result<Run> {
    let n = ctx.scale(a.clients, 10_000, 60);
    let size = a.room_size.max(1);
    let mut run = Run::new("reconnect-storm", ctx.backend.name());
    let (mut t, admin) = ctx.start(1, "").await?;
    api::provision_users(&admin, n).await?;
    let cat = category(&admin, "Reconnect").await?;
    let rooms = n.div_ceil(size);
    let ids =
        api::each("rooms created", (0..rooms).collect(), 8, |r| {
            let (admin, cat) = (admin.clone(), cat.clone());
            async move {
                room(&admin, &cat, &format!("rc {r}"), &(r * size..((r + 1) * size).min(n)).collect::<Vec<_>>()).await
            }
        })
        .await?;
    let plans = client_plans(&t, &(0..n).collect::<Vec<_>>(), |u| vec![ids[u / size].clone()]).await?;
    let posters = api::sign_in_all(&t.urls(), &(0..rooms).map(|r| r * size).collect::<Vec<_>>(), 4).await?;
    let mut swarm =
        Swarm::start(clients::plans(plans, a.per_worker, true, false, 200), Duration::from_secs(600)).await?;
    // One message per room before: everyone has it.
    let post_round = |tag: &'static str| {
        let work: Vec<(Api, String)> = posters.iter().cloned().zip(ids.iter().cloned()).collect();
        api::each(tag, work, 16, move |(api, room)| async move {
            let body = json!({ "text": crate::clients::stamped(tag), "client_id": format!("{tag}-{room}") });
            api.post(&format!("/api/v1/rooms/{room}/messages"), body).await
        })
    };
    post_round("before").await?;
    let before = swarm.until(Duration::from_secs(60), |r| r.messages >= n as u64).await?;
    run.at_least("clients connected", before.connected as f64, "count", n as f64);
    let killed_us = crate::clients::unix_us();
    let server = &mut t.servers[0];
    server.kill();
    let down = Instant::now();
    server.restart()?;
    run.figure("server restart (kill to listening)", down.elapsed().as_secs_f64(), "s");
    // Posted while the clients come back: each must get it once, after what they had.
    post_round("during").await?;
    let all = swarm.until(Duration::from_secs(120), |r| r.resumed >= n as u64 && r.messages >= 2 * n as u64).await?;
    let resumed_in = all.last_resumed_us.saturating_sub(killed_us) as f64 / 1e6;
    run.at_least("clients resumed", all.resumed as f64, "count", n as f64);
    run.at_most("seconds from the kill until every client had resumed", resumed_in, "s", 30.0);
    run.latency("resume (connection lost → every room joined again)", &all.resume, None);
    run.at_least(
        "messages received (one before and one during, per client)",
        all.messages as f64,
        "count",
        2.0 * n as f64,
    );
    run.at_most("gaps", all.gaps as f64, "count", 0.0);
    run.at_most("duplicates", all.duplicates as f64, "count", 0.0);
    swarm.stop().await;
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct LyncServerArgs {
    /// Connected users (default 19,000: Lync's 20,000 per server less the descriptor headroom here).
    #[arg(long)]
    users: Option<usize>,
    /// Multiple of Lync's per-server chat and join rates.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long, default_value_t = 5000)]
    per_worker: usize,
    /// Servers (a pool on PostgreSQL); users spread over them.
    #[arg(long, default_value_t = 1)]
    servers: usize,
}

/// Lync's user model for one server (reference §7.2–7.3, one quarter of the 80,000-user pool): every user in 12
/// small rooms (30 members), 2 medium (150) and 2 large (a quarter of the large rooms, members through groups),
/// every user connected and joined to their 16 rooms; posts at `factor` × Lync's per-server chat rate (24/s per
/// pool of four: 22.2 small, 1.67 medium, 0.15 large) and room joins at `factor` × its join rate (10/s per pool).
pub(crate) async fn lync_server(ctx: &Context, a: LyncServerArgs) -> anyhow::Result<Run> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let users = ctx.scale(a.users, 19_000, 150);
    let secs = a.seconds.unwrap_or(if ctx.smoke { 3 } else { 60 });
    let mut run = Run::new(if a.servers > 1 { "lync-pool" } else { "lync-server" }, ctx.backend.name());
    let (t, admin) = ctx.start(a.servers, "").await?;
    api::provision_users(&admin, users).await?;
    let cat = category(&admin, "Lync model").await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    // Small and medium rooms: for each of a user's 12 (resp. 2) memberships, one shuffled pass over all users.
    let mut specs: Vec<(String, Vec<usize>)> = vec![];
    for (kind, size, passes) in [("small", 30usize, 12usize), ("medium", 150, 2)] {
        for pass in 0..passes {
            let mut order: Vec<usize> = (0..users).collect();
            order.shuffle(&mut rng);
            for (i, chunk) in order.chunks(size).enumerate() {
                specs.push((format!("{kind} {pass}-{i}"), chunk.to_vec()));
            }
        }
    }
    let (small_and_medium, large) = (specs.len(), 3usize);
    let ids = api::each("rooms created", specs.clone(), 8, |(name, members)| {
        let (admin, cat) = (admin.clone(), cat.clone());
        async move { room(&admin, &cat, &name, &members).await }
    })
    .await?;
    // Large rooms: 3, each user in 2 of them, through one group per room.
    let mut large_ids = vec![];
    for l in 0..large {
        let members = (0..users).filter(|u| u % large != l);
        group(&admin, &format!("large-{l}"), members).await?;
        let mut body = json!({ "name": format!("large {l}"), "category": cat, "privacy": "closed",
                               "type": if l == 0 { "auditorium" } else { "normal" },
                               "members": [format!("group:large-{l}")] });
        if l == 0 {
            // The auditorium's presenter: a member of it (user 1 is in every large room but large-1).
            body["presenters"] = json!([api::user(1)]);
        }
        large_ids.push(admin.post("/api/v1/rooms", body).await?["id"].as_str().unwrap_or_default().to_owned());
    }
    let mut rooms_of: Vec<Vec<String>> = vec![vec![]; users];
    for ((_, members), id) in specs.iter().zip(&ids) {
        for m in members {
            rooms_of[*m].push(id.clone());
        }
    }
    for (l, id) in large_ids.iter().enumerate() {
        for (u, rooms) in rooms_of.iter_mut().enumerate() {
            if u % large != l {
                rooms.push(id.clone());
            }
        }
    }
    let plans = client_plans(&t, &(0..users).collect::<Vec<_>>(), |u| rooms_of[u].clone()).await?;
    let pids = t.pids();
    let before = Usage::start(pids.clone()).finish();
    let started = Instant::now();
    let mut swarm =
        Swarm::start(clients::plans(plans, a.per_worker, false, false, 200), Duration::from_secs(1800)).await?;
    let joined = swarm.reset().await?;
    if !joined.errors.is_empty() {
        run.note(format!("client errors while connecting: {:?}", joined.errors));
    }
    run.at_least("users connected", joined.connected as f64, "count", users as f64);
    run.figure("room subscriptions", rooms_of.iter().map(Vec::len).sum::<usize>() as f64, "count");
    run.figure("rooms", (small_and_medium + large) as f64, "count");
    run.figure("seconds to connect and join everyone", started.elapsed().as_secs_f64(), "s");
    let connected = Usage::start(pids.clone()).finish();
    run.figure("server RSS before connections", mib(before.rss_end_kib), "MiB");
    run.figure("server RSS with everyone joined", mib(connected.rss_end_kib), "MiB");
    // Posting: per-server Lync rates × factor, split by room kind; writers are members of the rooms they post in.
    // At smoke scale the rates are raised so that every stream posts several times.
    let factor = if ctx.smoke { a.factor.max(400.0) } else { a.factor };
    let scale = users as f64 / 20_000.0 * factor;
    let (small_rate, medium_rate, large_rate) = (22.22 / 4.0 * scale, 1.67 / 4.0 * scale, 0.15 / 4.0 * scale);
    let small_ids: Vec<usize> =
        specs.iter().enumerate().filter(|(_, (n, _))| n.starts_with("small")).map(|(i, _)| i).collect();
    let medium_ids: Vec<usize> =
        specs.iter().enumerate().filter(|(_, (n, _))| n.starts_with("medium")).map(|(i, _)| i).collect();
    // Writers: the first member of each room posted in (a member may post).
    let mut pick = |indices: &[usize], count: usize| -> Vec<(usize, String)> {
        let mut chosen: Vec<usize> = indices.to_vec();
        chosen.shuffle(&mut rng);
        chosen.truncate(count.max(1));
        chosen.into_iter().map(|i| (specs[i].1[0], ids[i].clone())).collect()
    };
    let mut streams = vec![];
    for (rooms, rate, tag) in [(pick(&small_ids, 400), small_rate, 's'), (pick(&medium_ids, 50), medium_rate, 'm')] {
        let mut by_writer: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
        for (w, id) in rooms {
            by_writer.entry(w).or_default().push(id);
        }
        streams.push((by_writer, rate, tag));
    }
    let mut large_writers = std::collections::BTreeMap::new();
    for (l, id) in large_ids.iter().enumerate() {
        // The auditorium's presenter posts there; members post in the others.
        let writer = if l == 0 { 1 } else { (0..users).find(|u| u % large != l).unwrap_or(0) };
        large_writers.entry(writer).or_insert_with(Vec::new).push(id.clone());
    }
    streams.push((large_writers, large_rate, 'l'));
    let mut phases = vec![];
    for (by_writer, rate, tag) in streams {
        let writer_users: Vec<usize> = by_writer.keys().copied().collect();
        let apis = api::sign_in_all(&t.urls(), &writer_users, 4).await?;
        let list: Vec<(Api, Vec<String>)> = apis.into_iter().zip(by_writer.into_values()).collect();
        phases.push((list, rate, tag));
    }
    // Joins: extra sessions of some users join one of their rooms (with history) and part again, paced.
    let join_rate = 10.0 / 4.0 * scale;
    let joiners = api::sign_in_all(&t.urls(), &(0..users.min(50)).collect::<Vec<_>>(), 4).await?;
    let join_plan: Vec<(Api, Vec<String>)> =
        joiners.into_iter().enumerate().map(|(u, api)| (api, rooms_of[u].clone())).collect();
    let usage = Usage::start(pids.clone());
    let duration = Duration::from_secs(secs);
    let join_task = tokio::spawn(crate::writers::join_churn(join_plan, join_rate, duration));
    let mut posting = vec![];
    for (list, rate, tag) in phases {
        posting.push((tag, tokio::spawn(writers::at_rate(list, rate.max(0.05), duration, tag))));
    }
    let mut acked = 0;
    let mut ack = crate::hist::Histogram::default();
    let mut ack_by_kind = vec![];
    for (tag, p) in posting {
        let posted = p.await?.context("posting")?;
        acked += posted.acked;
        ack.merge(&posted.ack);
        let kind = crate::clients::kind_named(tag).map_or("other", |k| crate::clients::ROOM_KINDS[k].1);
        ack_by_kind.push((kind, posted.ack));
    }
    let joins = join_task.await?.context("joining")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = swarm.reset().await?;
    let used = usage.finish();
    run.figure("posts per second offered", small_rate + medium_rate + large_rate, "1/s");
    run.figure("posts acknowledged", acked as f64, "count");
    run.latency("ack", &ack, None);
    for (kind, got) in ack_by_kind.iter().filter(|(_, got)| got.count() > 0) {
        run.latency(&format!("ack in {kind} rooms"), got, None);
    }
    run.figure("room joins per second offered", join_rate, "1/s");
    run.latency("room join with history", &joins.latency, None);
    run.at_most("room joins refused", joins.failures as f64, "count", 0.0);
    if let Some(f) = &joins.first_failure {
        run.note(format!("first refused join: {f}"));
    }
    run.figure("deliveries", seen.messages as f64, "count");
    run.latency("post→delivery", &seen.delivery, Some(100.0));
    // Apart by kind of room: a post to a large room is thousands of frames at once, one to a small room 30.
    for ((_, kind), got) in crate::clients::ROOM_KINDS.iter().zip(&seen.delivery_by_kind) {
        if got.count() > 0 {
            run.latency(&format!("post→delivery in {kind} rooms"), got, None);
        }
    }
    run.at_most("gaps and duplicates", (seen.gaps + seen.duplicates) as f64, "count", 0.0);
    run.figure("server CPU under load", used.cpu_percent, "%");
    run.cpu_split("under load", "delivered frame", &used, seen.messages);
    run.at_most("server peak RSS under load", mib(used.rss_peak_kib), "MiB", 1024.0 * a.servers as f64);
    if !seen.errors.is_empty() {
        run.note(format!("client errors: {:?}", seen.errors));
    }
    swarm.stop().await;
    Ok(run)
}

#[derive(Debug, clap::Args)]
pub(crate) struct DirectoryArgs {
    /// Users in the directory (default 100,000).
    #[arg(long)]
    users: Option<usize>,
    /// Rooms (default 100,000), 30 members each, over 10 categories.
    #[arg(long)]
    rooms: Option<usize>,
    /// Requests timed per kind.
    #[arg(long, default_value_t = 200)]
    samples: usize,
}

/// Times one request kind: `samples` calls of `path(i)` by `apis[i % n]`.
pub(crate) async fn timed(
    apis: &[Api],
    samples: usize,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<crate::hist::Histogram> {
    let r = crate::hist::Recorder::default();
    // PCHAT_BENCH_SLOW_MS=n prints each request that took longer than n ms (to find what makes a tail).
    let slow = std::env::var("PCHAT_BENCH_SLOW_MS").ok().and_then(|v| v.parse::<u64>().ok());
    for i in 0..samples {
        let api = &apis[i % apis.len()];
        let started = Instant::now();
        let path = path(i);
        api.call(reqwest::Method::GET, &path, serde_json::Value::Null).await?;
        let us = started.elapsed().as_micros() as u64;
        if slow.is_some_and(|ms| us > ms * 1000) {
            println!("  slow: {:.1} ms GET {path}", us as f64 / 1000.0);
        }
        r.record_us(us);
    }
    Ok(r.take())
}

/// Directory: a large directory and many rooms; the latency of my rooms, the room listing (first page, a
/// category, a name search) and of creating a room that invites a whole domain.
pub(crate) async fn directory(ctx: &Context, a: DirectoryArgs) -> anyhow::Result<Run> {
    use rand::{Rng, SeedableRng};
    let users = ctx.scale(a.users, 100_000, 300);
    let rooms = ctx.scale(a.rooms, 100_000, 300);
    let samples = if ctx.smoke { 20 } else { a.samples };
    let mut run = Run::new("directory", ctx.backend.name());
    let (t, admin) = ctx.start(1, "").await?;
    let pid = t.pids()[0];
    api::provision_users(&admin, users).await?;
    let mut categories = vec![];
    for c in 0..10 {
        let body = json!({ "name": format!("Division {c}"), "allowed_members": ["*"], "creators": [ADMIN], "invitations": true });
        categories.push(admin.post("/api/v1/categories", body).await?["id"].as_str().unwrap_or_default().to_owned());
    }
    let words = ["rates", "credit", "fx", "equities", "macro", "risk", "ops", "legal", "audit", "desk"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let specs: Vec<(usize, Vec<usize>)> =
        (0..rooms).map(|r| (r, (0..30).map(|_| rng.gen_range(0..users)).collect())).collect();
    let cats = categories.clone();
    api::each("rooms created", specs, 16, |(r, members)| {
        let (admin, cat) = (admin.clone(), cats[r % cats.len()].clone());
        let name = format!("{} {r}", words[r % words.len()]);
        async move {
            let mut members: Vec<usize> = members;
            members.sort_unstable();
            members.dedup();
            room(&admin, &cat, &name, &members).await
        }
    })
    .await?;
    let sample_users: Vec<usize> = (0..50.min(users)).map(|i| i * (users / 50.min(users)).max(1)).collect();
    let apis = api::sign_in_all(&t.urls(), &sample_users, 4).await?;
    let usage = Usage::start(vec![pid]);
    let mine = timed(&apis, samples, |_| "/api/v1/me/rooms".into()).await?;
    let first_page = timed(&apis, samples, |_| "/api/v1/rooms?limit=50".into()).await?;
    let by_category =
        timed(&apis, samples, |i| format!("/api/v1/rooms?limit=50&category={}", categories[i % 10])).await?;
    let search =
        timed(&apis, samples, |i| format!("/api/v1/rooms?limit=50&query={}%20{}", words[i % 10], (i * 7919) % rooms))
            .await?;
    let users_search =
        timed(&apis, samples, |i| format!("/api/v1/users?limit=20&query=user%20{}", (i * 104_729) % users)).await?;
    // Words that narrow little (in a tenth of the room names, in every user's): the server walks in order.
    let common = timed(&apis, samples, |i| format!("/api/v1/rooms?limit=50&query={}", words[i % 10])).await?;
    let users_common = timed(&apis, samples, |_| "/api/v1/users?limit=20&query=user".into()).await?;
    let used = usage.finish();
    run.figure("users", users as f64, "count");
    run.figure("rooms", rooms as f64, "count");
    run.latency("GET /me/rooms", &mine, Some(10.0));
    run.latency("GET /rooms (first page)", &first_page, Some(20.0));
    run.latency("GET /rooms?category=", &by_category, Some(20.0));
    run.latency("GET /rooms?query= (one room's name)", &search, Some(20.0));
    run.latency("GET /users?query=", &users_search, Some(20.0));
    run.latency("GET /rooms?query= (a word in 10 % of names)", &common, Some(20.0));
    run.latency("GET /users?query= (a word in every name)", &users_common, Some(20.0));
    run.figure("server CPU while timing", used.cpu_percent, "%");
    // A room inviting a whole domain: every user of it gets an invitation.
    let started = Instant::now();
    let body = json!({ "name": "Everyone at example.com", "category": categories[0], "privacy": "closed",
                       "members": ["domain:example.com"], "invitations": "inherit" });
    admin.post("/api/v1/rooms", body).await?;
    run.figure("creating a room that invites a whole domain", started.elapsed().as_secs_f64() * 1000.0, "ms");
    run.figure("server RSS", mib(proc_stats(pid).map_or(0, |s| s.rss_kib)), "MiB");
    Ok(run)
}
