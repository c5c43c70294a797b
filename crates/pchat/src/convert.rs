//! `pchat db convert --from sqlite:PATH --to postgres://…`: moves an installation between backends (an embedded
//! server into a pool's database), offline. It refuses a target that already holds data, copies everything through
//! the storage port (users with their password hashes, roles, groups, policies, configuration, add-ins, categories,
//! rooms with their history and counters, follows, read marks, invitations with their ids), then verifies: counts
//! per kind and a SHA-256 over every record, computed the same way on both sides. Sessions are not copied: users
//! sign in again.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pchat_core::{ConfigScope, PolicyScope};
use pchat_store::{MessageRange, RoomQuery, RoomRecord, Store, UserRecord};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The source: sqlite:PATH (or postgres://…).
    #[arg(long)]
    from: String,
    /// The target: postgres://… (or sqlite:PATH); must hold no data.
    #[arg(long)]
    to: String,
}

/// What a store holds, for comparison: counts per kind and a digest per kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct Inventory {
    kinds: BTreeMap<&'static str, (u64, Sha256Hex)>,
}

#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Sha256Hex(String);

/// Feeds records into per-kind counts and digests.
#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, (u64, Sha256)>,
}

impl Tally {
    fn add(&mut self, kind: &'static str, record: &str) {
        let entry = self.kinds.entry(kind).or_insert_with(|| (0, Sha256::new()));
        entry.0 += 1;
        // Length-prefixed, so that record boundaries cannot shift between records.
        entry.1.update((record.len() as u64).to_le_bytes());
        entry.1.update(record.as_bytes());
    }

    fn finish(self) -> Inventory {
        Inventory {
            kinds: self.kinds.into_iter().map(|(k, (n, h))| (k, (n, Sha256Hex(hex::encode(h.finalize()))))).collect(),
        }
    }
}

pub(crate) async fn run(args: ConvertArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let source = crate::serve::open_url(&args.from).await.context("cannot open the source")?;
    let target = crate::serve::open_url(&args.to).await.context("cannot open the target")?;
    let before = inventory(source.as_ref()).await?;
    let existing = inventory(target.as_ref()).await?;
    let held: u64 = existing.kinds.values().map(|(n, _)| n).sum();
    if held > 0 {
        let what: Vec<String> =
            existing.kinds.iter().filter(|(_, (n, _))| *n > 0).map(|(k, (n, _))| format!("{n} {k}")).collect();
        bail!("the target already holds data ({}); convert only into an empty database", what.join(", "));
    }
    copy(source.as_ref(), target.as_ref()).await?;
    let (files, bytes) = file_totals(source.as_ref()).await?;
    let after = inventory(target.as_ref()).await?;
    let ok = after == before;
    let kinds: Vec<_> = before
        .kinds
        .iter()
        .map(|(kind, (n, digest))| {
            let (m, target_digest) = after.kinds.get(kind).cloned().unwrap_or_default();
            json!({ "kind": kind, "source": n, "target": m, "sha256": digest.0, "match": *n == m && *digest == target_digest })
        })
        .collect();
    let blobs = format!(
        "the records of {files} file(s) ({bytes} bytes) were copied, not their content: copy the source's file store \
         (by default the files directory in its data directory; objects under rooms/ROOM/FILE) into the target's \
         before starting servers on it, e.g. rsync -a DATA_DIR/files/ SHARED_DIR/ or aws s3 sync DATA_DIR/files \
         s3://BUCKET/"
    );
    if json_out {
        println!("{}", json!({ "ok": ok, "kinds": kinds, "files": { "count": files, "bytes": bytes, "note": blobs } }));
    } else {
        println!("{:<14} {:>9} {:>9}  {:<64}  match", "kind", "source", "target", "sha256 (source)");
        for k in &kinds {
            println!(
                "{:<14} {:>9} {:>9}  {:<64}  {}",
                k["kind"].as_str().unwrap_or(""),
                k["source"],
                k["target"],
                k["sha256"].as_str().unwrap_or(""),
                if k["match"] == true { "yes" } else { "NO" }
            );
        }
        println!(
            "{}",
            if ok { "converted and verified" } else { "VERIFICATION FAILED: the target differs from the source" }
        );
        if files > 0 {
            println!("{blobs}");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How many files the store's records name, and their total size.
async fn file_totals(store: &dyn Store) -> anyhow::Result<(u64, u64)> {
    let mut totals = (0, 0);
    for room in all_rooms(store).await? {
        for f in store.room_files(&room.id).await? {
            totals.0 += 1;
            totals.1 += f.size.max(0) as u64;
        }
    }
    Ok(totals)
}

async fn all_users(store: &dyn Store) -> anyhow::Result<Vec<UserRecord>> {
    let mut out: Vec<UserRecord> = vec![];
    loop {
        let page = store.search_users("", out.last().map(|u| u.address.as_str()), 500).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn all_rooms(store: &dyn Store) -> anyhow::Result<Vec<RoomRecord>> {
    let mut out: Vec<RoomRecord> = vec![];
    loop {
        let q = RoomQuery { category_id: None, after_name: out.last().map(|r| r.name.clone()), limit: 500 };
        let page = store.list_rooms(&q).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn all_messages(store: &dyn Store, room: &str) -> anyhow::Result<Vec<pchat_store::MessageRecord>> {
    let mut out: Vec<pchat_store::MessageRecord> = vec![];
    loop {
        let after = out.last().map_or(0, |m| m.seq);
        let page = store.messages(room, MessageRange::After { after, limit: 500 }).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn all_invitations(store: &dyn Store, address: &str) -> anyhow::Result<Vec<pchat_store::InvitationRecord>> {
    let mut out: Vec<pchat_store::InvitationRecord> = vec![];
    loop {
        let page = store.invitations(address, out.last().map_or(0, |i| i.id), 500).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// Everything a store holds that a conversion moves, as counts and digests per kind.
async fn inventory(store: &dyn Store) -> anyhow::Result<Inventory> {
    let mut t = Tally::default();
    let users = all_users(store).await?;
    for u in &users {
        t.add("users", &format!("{:?}", u));
        t.add_each("follows", store.follows(&u.address).await?.iter().map(|r| format!("{} {r}", u.address)));
        t.add_each(
            "read_marks",
            store.read_marks(&u.address).await?.iter().map(|(r, s)| format!("{} {r} {s}", u.address)),
        );
        t.add_each("invitations", all_invitations(store, &u.address).await?.iter().map(|i| format!("{i:?}")));
        t.add_each("feeds", store.list_feeds(&u.address).await?.iter().map(|f| format!("{f:?}")));
    }
    t.add_each("roles", store.list_roles().await?.iter().map(|(a, r)| format!("{a} {}", r.as_str())));
    for g in store.list_groups().await? {
        t.add("groups", &format!("{g} {:?}", store.get_group(&g).await?));
    }
    t.add_each("policies", store.list_policies().await?.iter().map(|p| format!("{p:?}")));
    t.add_each("configurations", store.list_configs().await?.iter().map(|c| format!("{c:?}")));
    t.add_each("addins", store.list_addins().await?.iter().map(|a| format!("{a:?}")));
    t.add_each("categories", store.list_categories().await?.iter().map(|c| format!("{c:?}")));
    for room in all_rooms(store).await? {
        t.add("rooms", &format!("{room:?} last_seq={}", store.last_seq(&room.id).await?));
        t.add_each("messages", all_messages(store, &room.id).await?.iter().map(|m| format!("{m:?}")));
        t.add_each("files", store.room_files(&room.id).await?.iter().map(|f| format!("{f:?}")));
    }
    Ok(t.finish())
}

impl Tally {
    fn add_each(&mut self, kind: &'static str, records: impl Iterator<Item = String>) {
        // Present even when empty, so that both sides list the same kinds.
        self.kinds.entry(kind).or_insert_with(|| (0, Sha256::new()));
        for r in records {
            self.add(kind, &r);
        }
    }
}

async fn copy(from: &dyn Store, to: &dyn Store) -> anyhow::Result<()> {
    let users = all_users(from).await?;
    for u in &users {
        to.create_user(u.clone()).await.with_context(|| format!("user {}", u.address))?;
    }
    for (address, role) in from.list_roles().await? {
        to.set_role(&address, role, true).await?;
    }
    let groups = from.list_groups().await?;
    for g in &groups {
        to.create_group(g).await.with_context(|| format!("group {g}"))?;
    }
    for g in &groups {
        let members = from.get_group(g).await?.unwrap_or_default();
        to.update_group(g, &members, &[]).await.with_context(|| format!("members of group {g}"))?;
    }
    for (scope, enabled) in from.list_policies().await? {
        to.put_policy(&PolicyScope::parse(&scope)?, enabled).await?;
    }
    for (scope, config) in from.list_configs().await? {
        to.put_config(&ConfigScope::parse(&scope)?, &config).await?;
    }
    for a in from.list_addins().await? {
        to.create_addin(&a).await.with_context(|| format!("add-in {}", a.name))?;
    }
    for c in from.list_categories().await? {
        to.create_category(&c).await.with_context(|| format!("category {}", c.name))?;
    }
    for room in all_rooms(from).await? {
        to.create_room(&room).await.with_context(|| format!("room {}", room.name))?;
        let messages = all_messages(from, &room.id).await?;
        to.import_messages(&room.id, &messages, from.last_seq(&room.id).await?)
            .await
            .with_context(|| format!("history of room {}", room.name))?;
        to.import_files(&from.room_files(&room.id).await?)
            .await
            .with_context(|| format!("files of room {}", room.name))?;
    }
    let mut invitations = vec![];
    for u in &users {
        for room in from.follows(&u.address).await? {
            to.set_follow(&u.address, &room, true).await?;
        }
        for (room, seq) in from.read_marks(&u.address).await? {
            to.mark_read(&u.address, &room, seq).await?;
        }
        invitations.extend(all_invitations(from, &u.address).await?);
        for feed in from.list_feeds(&u.address).await? {
            to.create_feed(&feed, u32::MAX)
                .await
                .with_context(|| format!("topic feed {} of {}", feed.name, u.address))?;
        }
    }
    invitations.sort_by_key(|i| i.id);
    to.import_invitations(&invitations).await?;
    Ok(())
}
