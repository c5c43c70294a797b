//! Compliance (PRODUCT.md §5): the configuration per scope, the helpers every capture point uses, the worker that
//! moves captured events from the chat database's outbox into the archive, the chain check and investigators'
//! queries. How capture stays transactional: `pchat_store::compliance`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pchat_api_types as api;
use pchat_core::Name;
use pchat_store::compliance::{Captured, ChainCheck, ChainKey, capture, is_keyed};
use pchat_store::{Archive, ArchivedEvent, EventQuery, NewEvent, StoreResult};
use serde_json::{Value, json};
use tracing::{error, warn};

use crate::directory::require_admin;
use crate::time::now_micros;
use crate::witness::Witness;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Lync's RunInterval range: 1 minute to 30 days.
pub const RUN_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 60..=30 * 24 * 3600;
/// Most events moved from the outbox in one go.
const BATCH: u32 = 500;
/// How often the worker looks whether an export is due (the pool's cursor decides).
const EXPORT_CHECK: Duration = Duration::from_secs(1);
/// How often retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Most days an archive may be kept for (retention; 0 = forever).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Most events one query returns.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// Exponential back-off between retries.
struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, current: first }
    }

    fn next(&mut self) -> Duration {
        let pause = self.current;
        self.current = (self.current * 2).min(self.max);
        pause
    }

    fn reset(&mut self) {
        self.current = self.first;
    }
}

/// `global` or `pool:NAME`.
fn scope_key(raw: &str) -> ServiceResult<String> {
    if raw == "global" {
        return Ok(raw.to_owned());
    }
    match raw.strip_prefix("pool:") {
        Some(name) => Ok(format!("pool:{}", Name::parse("scope", name)?)),
        None => Err(ServiceError::validation("scope", "must be global or pool:NAME")),
    }
}

fn validate(c: &api::ComplianceConfiguration) -> ServiceResult<()> {
    if !matches!(c.adapter.as_str(), "xml" | "csv" | "jsonl") {
        return Err(ServiceError::validation("adapter", "must be one of: xml, csv, jsonl"));
    }
    if !RUN_INTERVAL_SECS.contains(&c.run_interval_secs) {
        return Err(ServiceError::validation(
            "run_interval_secs",
            format!(
                "must be between {} (1 minute) and {} (30 days)",
                RUN_INTERVAL_SECS.start(),
                RUN_INTERVAL_SECS.end()
            ),
        ));
    }
    if c.retention_days > MAX_RETENTION_DAYS {
        return Err(ServiceError::validation(
            "retention_days",
            format!("must be between 0 (keep forever) and {MAX_RETENTION_DAYS}"),
        ));
    }
    if !c.output_dir.is_empty() {
        let dir = std::path::Path::new(&c.output_dir);
        if !dir.is_absolute() {
            return Err(ServiceError::validation("output_dir", "must be an absolute path"));
        }
        writable(dir).map_err(|e| ServiceError::validation("output_dir", format!("is not writable: {e}")))?;
    }
    Ok(())
}

/// Creates the directory if needed and proves that a file can be written there.
pub fn writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".pchat-write-test-{}", uuid::Uuid::new_v4()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

/// The chain key and where this server records the chain's head.
#[derive(Debug, Default)]
pub(crate) struct ChainSeal {
    key: Option<ChainKey>,
    witness_file: Option<PathBuf>,
}

/// Whether an event kind records an administrative action (kept in the audit trail whatever the compliance
/// setting): everything but what users do in rooms (Lync's six kinds) and signing in.
pub(crate) fn is_administrative(kind: &str) -> bool {
    !matches!(
        kind,
        "JOIN" | "PART" | "CHAT" | "BACKCHAT" | "FILEUPLOAD" | "FILEDOWNLOAD" | "SIGN_IN" | "SIGN_IN_FAILED"
    )
}

impl Service {
    /// The compliance configuration stored at a scope, or the defaults.
    pub async fn compliance_config(&self, caller: &Caller, scope: &str) -> ServiceResult<api::ComplianceConfiguration> {
        require_admin(caller)?;
        let key = scope_key(scope)?;
        self.stored_compliance_config(&key).await
    }

    async fn stored_compliance_config(&self, key: &str) -> ServiceResult<api::ComplianceConfiguration> {
        Ok(self.stored_compliance_config_opt(key).await?.unwrap_or_default())
    }

    /// The configuration stored at a scope, if one is.
    async fn stored_compliance_config_opt(&self, key: &str) -> ServiceResult<Option<api::ComplianceConfiguration>> {
        self.store
            .get_compliance_config(key)
            .await?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| ServiceError::Unavailable(format!("stored compliance configuration is unreadable: {e}")))
    }

    /// Stores a whole compliance configuration; invalid input changes nothing.
    pub async fn put_compliance_config(
        &self,
        caller: &Caller,
        scope: &str,
        config: api::ComplianceConfiguration,
    ) -> ServiceResult<api::ComplianceConfiguration> {
        require_admin(caller)?;
        let key = scope_key(scope)?;
        validate(&config)?;
        let before = self.stored_compliance_config(&key).await?;
        let json = serde_json::to_string(&config).map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        // Switching capture on or off is itself captured, whichever way it goes.
        let event = self.event(
            "COMPLIANCE_CONFIG_CHANGED",
            None,
            caller.address(),
            key.clone(),
            json!({ "scope": key, "before": before, "after": config }),
        );
        let capturing = self.capturing().await || config.enabled;
        let write = self.store.put_compliance_config(&key, &json);
        let captured =
            Captured { compliance: if capturing { vec![event.clone()] } else { vec![] }, audit: vec![event] };
        self.directory_write(self.captured_write(captured, write)).await?;
        Ok(config)
    }

    /// The compliance configuration in force for this server's pool (`pool:NAME`, else `global`, else defaults).
    pub async fn compliance_in_force(&self) -> ServiceResult<api::ComplianceConfiguration> {
        let generation = self.generation();
        if let Ok(cache) = self.compliance_cache.read()
            && let Some((at, config)) = cache.as_ref()
            && *at == generation
        {
            return Ok(config.clone());
        }
        let pool = format!("pool:{}", self.settings.pool);
        let config = match self.stored_compliance_config_opt(&pool).await? {
            Some(config) => config,
            None => self.stored_compliance_config("global").await?,
        };
        if let Ok(mut cache) = self.compliance_cache.write() {
            *cache = Some((generation, config.clone()));
        }
        Ok(config)
    }

    /// Whether events are captured now. When the configuration cannot be read, capture: an extra event is
    /// better than a lost one.
    pub(crate) async fn capturing(&self) -> bool {
        self.compliance_in_force().await.map(|c| c.enabled).unwrap_or(true)
    }

    pub(crate) fn event(
        &self,
        kind: &str,
        room_id: Option<&str>,
        actor: &str,
        content: impl Into<String>,
        details: Value,
    ) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            ts: now_micros(),
            room_id: room_id.map(str::to_owned),
            actor: actor.to_owned(),
            content: content.into(),
            details: details.to_string(),
        }
    }

    /// Runs a store write with the events that describe it, in the write's own transaction: administrative
    /// actions always go to the audit trail, and every event to the compliance outbox while capture is on.
    pub(crate) async fn audited<T>(
        &self,
        events: impl FnOnce() -> Vec<NewEvent>,
        write: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let events = events();
        let audit = events.iter().filter(|e| is_administrative(&e.kind)).cloned().collect();
        let compliance = if self.capturing().await { events } else { vec![] };
        self.captured_write(Captured { compliance, audit }, write).await
    }

    async fn captured_write<T>(
        &self,
        captured: Captured,
        write: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if captured.is_empty() {
            return write.await;
        }
        let (result, left) = capture(captured, write).await;
        if result.is_ok() && !left.is_empty() {
            let kinds: Vec<&String> = left.compliance.iter().chain(&left.audit).map(|e| &e.kind).collect();
            error!(?kinds, "a write did not capture its compliance or audit events");
        }
        result
    }

    /// Captures the events of an action that writes nothing (a join, a history read, a failed sign-in) before its
    /// result is delivered: if they cannot be captured, the action fails.
    pub(crate) async fn record(&self, events: impl FnOnce() -> Vec<NewEvent>) -> ServiceResult<()> {
        if self.capturing().await {
            self.store.record_events(&events()).await?;
        }
        Ok(())
    }

    /// Records a PART for every connection that leaves a room, in order, batching what queued up meanwhile.
    pub(crate) fn start_part_capture(self: &Arc<Self>) {
        let mut parts = self.hub.part_events();
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while parts.recv_many(&mut batch, 256).await > 0 {
                let Some(s) = service.upgrade() else { return };
                let events =
                    || batch.iter().map(|(room, user)| s.event("PART", Some(room), user, "", json!({}))).collect();
                if let Err(e) = s.record(events).await {
                    warn!(error = %e, parts = batch.len(), "could not capture PART events");
                }
                batch.clear();
            }
        });
    }

    /// Gives the service its compliance archive (the worker's destination, read by verify and the events query).
    pub fn set_archive(&self, archive: Arc<dyn Archive>) {
        let _ = self.archive.set(archive);
    }

    pub(crate) fn archive(&self) -> ServiceResult<&Arc<dyn Archive>> {
        self.archive.get().ok_or_else(|| ServiceError::Unavailable("no compliance archive is configured".into()))
    }

    /// Gives the service the chain key (when `compliance.chain_key_file` is set) and the witness file it records
    /// the chain's head in after every append.
    pub fn set_chain_seal(&self, key: Option<ChainKey>, witness_file: Option<PathBuf>) {
        let _ = self.seal.set(ChainSeal { key, witness_file });
    }

    fn chain_key(&self) -> Option<&ChainKey> {
        self.seal.get().and_then(|s| s.key.as_ref())
    }

    pub(crate) fn chain_key_for_export(&self) -> Option<&ChainKey> {
        self.chain_key()
    }

    /// Moves one batch of captured events from the outbox into the archive; returns how many it moved. The
    /// archive skips what it already holds, and the outbox is cleared only after the archive committed, so a crash
    /// anywhere neither loses nor duplicates an event; servers of a pool may run this concurrently. Events are
    /// sealed with the chain key when one is configured; a server without the key refuses to extend a sealed
    /// chain. The new head is recorded in this server's witness file.
    pub async fn archive_outbox(&self) -> ServiceResult<usize> {
        let archive = self.archive()?;
        let batch = self.store.outbox(BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let pool = self.settings.pool.as_str();
        let key = self.chain_key();
        if key.is_none() && archive.chain_head(pool).await?.is_some_and(|(_, hash)| is_keyed(&hash)) {
            return Err(ServiceError::Unavailable(
                "the compliance archive is sealed with a chain key; configure compliance.chain_key_file on this server"
                    .into(),
            ));
        }
        archive.append(pool, &batch, key).await?;
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        self.store.outbox_done(&ids).await?;
        self.metrics.compliance_archived.inc_by(ids.len() as u64);
        self.record_witness(archive.as_ref(), pool).await;
        Ok(ids.len())
    }

    /// Writes the pool's chain head to this server's witness file; a failure is reported by /readyz, not fatal
    /// (the events are archived).
    async fn record_witness(&self, archive: &dyn Archive, pool: &str) {
        let Some(path) = self.seal.get().and_then(|s| s.witness_file.clone()) else { return };
        let result = match archive.chain_head(pool).await {
            Ok(Some((id, hash))) => {
                let witness = Witness::new(pool, id, &hash, self.chain_key());
                tokio::task::spawn_blocking(move || {
                    crate::witness::record_head(&path, witness).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut slot) = self.witness_problem.write() {
            *slot = result.err();
        }
    }

    /// With a chain key configured and capture on, makes sure the chain is sealed from now on even if nothing
    /// happens: when the pool's newest event is not sealed yet, captures a `COMPLIANCE_CHAIN_SEALED` event, which
    /// the worker archives sealed.
    /// Returns true once there is nothing (more) to do: no key, or the chain's newest event is sealed.
    pub async fn seal_chain(&self) -> ServiceResult<bool> {
        if self.chain_key().is_none() {
            return Ok(true);
        }
        if !self.capturing().await {
            return Ok(false);
        }
        let head = self.archive()?.chain_head(self.settings.pool.as_str()).await?;
        if head.as_ref().is_some_and(|(_, hash)| is_keyed(hash)) {
            return Ok(true);
        }
        let details = json!({ "previous_head": head.map(|(id, hash)| json!({ "id": id, "hash": hash })) });
        let event =
            self.event("COMPLIANCE_CHAIN_SEALED", None, "", "the chain is sealed with a key from here on", details);
        self.store.record_events(&[event]).await?;
        Ok(false)
    }

    /// Runs the compliance worker until the service goes: drains the outbox into the archive (retrying with
    /// back-off while the archive or the database is unavailable), runs the periodic export when it is due
    /// (retrying with its own back-off while the output directory cannot be written, reported by /readyz and the
    /// metrics; nothing is lost meanwhile, the events wait in the archive), and applies retention.
    pub fn start_compliance_worker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut sealed = false;
            let mut archive_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            let mut export_backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            let mut next_export = Instant::now();
            let mut next_purge = Instant::now();
            loop {
                let Some(s) = service.upgrade() else { return };
                if !sealed {
                    // With a chain key, the chain's newest event must be sealed, even when nothing else happens.
                    sealed = s.seal_chain().await.unwrap_or_else(|e| {
                        warn!(error = %e, "compliance worker: cannot mark the chain as sealed");
                        false
                    });
                }
                let pause = match s.archive_outbox().await {
                    Ok(n) if n as u32 == BATCH => Duration::ZERO,
                    Ok(_) => {
                        archive_backoff.reset();
                        Duration::from_millis(200)
                    }
                    Err(e) => {
                        let pause = archive_backoff.next();
                        warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "compliance worker: cannot archive");
                        pause
                    }
                };
                if Instant::now() >= next_export {
                    let result = s.run_export(false).await;
                    s.export_outcome(&result);
                    next_export = Instant::now()
                        + match result {
                            Ok(_) => {
                                export_backoff.reset();
                                EXPORT_CHECK
                            }
                            Err(e) => {
                                let pause = export_backoff.next();
                                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "compliance export failed");
                                pause
                            }
                        };
                }
                if Instant::now() >= next_purge {
                    if let Err(e) = s.apply_retention().await {
                        warn!(error = %e, "compliance retention could not purge");
                    }
                    next_purge = Instant::now() + PURGE_EVERY;
                }
                drop(s);
                tokio::time::sleep(pause).await;
            }
        })
    }

    /// Retention: deletes archived events older than `retention_days` (0 keeps them forever) that the periodic
    /// export has written (all old ones when no output directory is configured); the chain stays verifiable
    /// from the hash of the last purged event. Returns how many went.
    pub async fn apply_retention(&self) -> ServiceResult<u64> {
        let config = self.compliance_in_force().await?;
        if config.retention_days == 0 {
            return Ok(0);
        }
        let archive = self.archive()?;
        let pool = self.settings.pool.as_str();
        let before_ts = now_micros() - i64::from(config.retention_days) * 86_400_000_000;
        let max_id = if config.output_dir.is_empty() { i64::MAX } else { archive.export_cursor(pool).await?.done_id };
        let purged = archive.purge(pool, before_ts, max_id).await?;
        if purged > 0 {
            tracing::info!(purged, retention_days = config.retention_days, "compliance retention purged old events");
        }
        Ok(purged)
    }

    /// Recomputes every pool's hash chain and checks it against the witnesses kept outside the archive: this
    /// server's witness file, the export's `*.chain.json` files in the configured output directory, and any
    /// `extra` ones the caller brings (copies of exports kept elsewhere). Administrators.
    pub async fn verify_archive(&self, caller: &Caller, extra: Vec<Witness>) -> ServiceResult<api::VerifyReport> {
        require_admin(caller)?;
        let mut witnesses: Vec<(String, Witness)> = vec![];
        let mut problems = vec![];
        if let Some(path) = self.seal.get().and_then(|s| s.witness_file.clone()) {
            match crate::witness::read_witness_file(&path) {
                Ok(found) => witnesses.extend(found),
                Err(e) => problems.push(e),
            }
        }
        let output_dir = self.compliance_in_force().await?.output_dir;
        if !output_dir.is_empty() && Path::new(&output_dir).exists() {
            match crate::witness::read_export_witnesses(Path::new(&output_dir)) {
                Ok(found) => witnesses.extend(found),
                Err(e) => problems.push(e),
            }
        }
        witnesses.extend(extra.into_iter().map(|w| ("the request".to_owned(), w)));
        let mut report = verify(self.archive()?.as_ref(), self.chain_key(), &witnesses).await?;
        if !problems.is_empty() {
            problems.append(&mut report.problems);
            report.problems = problems;
            report.ok = false;
        }
        Ok(report)
    }

    /// Archived events matching the query, oldest first (administrators); at most one more than
    /// [`MAX_EVENTS_PAGE`], so that a caller can tell whether another page follows.
    /// The audit trail (administrators): administrative actions, oldest first.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        mut query: EventQuery,
    ) -> ServiceResult<Vec<pchat_store::AuditRecord>> {
        require_admin(caller)?;
        query.limit = query.limit.clamp(1, MAX_EVENTS_PAGE + 1);
        Ok(self.store.audit_events(&query).await?)
    }

    pub async fn compliance_events(&self, caller: &Caller, mut query: EventQuery) -> ServiceResult<Vec<ArchivedEvent>> {
        require_admin(caller)?;
        if query.limit == 0 {
            return Err(ServiceError::validation("limit", format!("must be between 1 and {MAX_EVENTS_PAGE}")));
        }
        query.limit = query.limit.min(MAX_EVENTS_PAGE + 1);
        Ok(self.archive()?.events(&query).await?)
    }
}

/// Recomputes every pool's chain in an archive, naming the first event that does not match, and checks each
/// witness against it: the witnessed event must still be there with the witnessed hash (unless retention purged
/// it), and with a chain key the witness must carry a valid tag and every pool's newest event must be sealed.
pub async fn verify(
    archive: &dyn Archive,
    key: Option<&ChainKey>,
    witnesses: &[(String, Witness)],
) -> StoreResult<api::VerifyReport> {
    let mut checked = 0;
    let mut first_broken: Option<i64> = None;
    let mut problems = vec![];
    let mut anchors = std::collections::HashMap::new();
    for pool in archive.pools().await? {
        // Retention may have purged the oldest events: the first one left links to the anchor kept then.
        let anchor = archive.chain_anchor(&pool).await?;
        let mut check = ChainCheck::new(anchor.hash.clone(), key.cloned());
        anchors.insert(pool.clone(), anchor);
        let mut after_id = 0;
        loop {
            let query =
                EventQuery { pool: Some(pool.clone()), after_id, limit: MAX_EVENTS_PAGE, ..EventQuery::default() };
            let page = archive.events(&query).await?;
            let Some(last) = page.last() else { break };
            after_id = last.id;
            if !page.iter().all(|e| check.feed(e)) {
                break;
            }
        }
        checked += check.checked;
        if let Some(id) = check.first_broken {
            first_broken = Some(first_broken.map_or(id, |f| f.min(id)));
            problems.push(format!(
                "pool {pool}: event {id} breaks the chain: {}",
                check.problem.as_deref().unwrap_or("it does not match")
            ));
        } else if key.is_some() && check.head().is_some_and(|h| !is_keyed(h)) {
            // A chain rebuilt without the key verifies as plain; with a key in force its newest event must be sealed.
            problems.push(format!(
                "pool {pool}: the newest event is not sealed although a chain key is configured (the chain was \
                 rebuilt or extended without the key)"
            ));
        }
    }
    for (source, w) in witnesses {
        if let Some(key) = key
            && !w.tag_matches(key)
        {
            problems.push(format!(
                "{source}: the witness of pool {} event {} is not signed with the chain key",
                w.pool, w.id
            ));
            continue;
        }
        if anchors.get(&w.pool).is_some_and(|a| w.id <= a.purged_to) {
            continue; // Purged by retention, which the anchor records.
        }
        let query = EventQuery {
            pool: Some(w.pool.clone()),
            after_id: w.id.saturating_sub(1),
            limit: 1,
            ..EventQuery::default()
        };
        let found = archive.events(&query).await?.into_iter().next().filter(|e| e.id == w.id);
        match found {
            None => problems.push(format!(
                "{source}: pool {} event {} is missing from the archive (events were deleted)",
                w.pool, w.id
            )),
            Some(e) if e.hash != w.hash => problems.push(format!(
                "{source}: pool {} event {} has another hash in the archive (the chain was rewritten)",
                w.pool, w.id
            )),
            Some(_) => {}
        }
    }
    Ok(api::VerifyReport {
        ok: first_broken.is_none() && problems.is_empty(),
        events_checked: checked,
        first_broken,
        sealed: key.is_some(),
        witnesses_checked: witnesses.len() as u64,
        problems,
    })
}

fn principals(list: &[pchat_core::Principal]) -> Value {
    Value::from(list.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// A room's settings and role lists, for before/after values.
pub(crate) fn room_json(r: &pchat_store::RoomRecord) -> Value {
    json!({
        "id": r.id, "name": r.name, "description": r.description, "category_id": r.category_id,
        "privacy": r.privacy.as_str(), "type": r.room_type.as_str(), "invitations": r.invitations.as_str(),
        "disabled": r.disabled, "addin": r.addin, "members": principals(&r.members),
        "managers": principals(&r.managers), "presenters": principals(&r.presenters),
    })
}

pub(crate) fn category_json(c: &pchat_store::CategoryRecord) -> Value {
    json!({
        "id": c.id, "name": c.name, "description": c.description, "file_upload": c.file_upload,
        "chat_history": c.chat_history, "invitations": c.invitations,
        "allowed_members": principals(&c.allowed_members), "denied_members": principals(&c.denied_members),
        "creators": principals(&c.creators),
    })
}

pub(crate) fn addin_json(a: &pchat_store::AddinRecord) -> Value {
    json!({ "name": a.name, "url": a.url })
}

/// The kind of a room change: disabling and enabling, role lists alone, or anything else.
pub(crate) fn room_change_kind(before: &pchat_store::RoomRecord, after: &pchat_store::RoomRecord) -> &'static str {
    if before.disabled != after.disabled {
        return if after.disabled { "ROOM_DISABLED" } else { "ROOM_ENABLED" };
    }
    let roles = |r: &pchat_store::RoomRecord| (r.members.clone(), r.managers.clone(), r.presenters.clone());
    let mut same_but_roles = after.clone();
    (same_but_roles.members, same_but_roles.managers, same_but_roles.presenters) = roles(before);
    if &same_but_roles == before && roles(before) != roles(after) { "ROOM_ROLES_CHANGED" } else { "ROOM_CHANGED" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pchat_store::Store;
    use pchat_store_sqlite::SqliteArchive;

    fn open_service(dir: &std::path::Path) -> (Arc<Service>, Arc<dyn Store>) {
        let (service, store) = crate::testing::open_service(dir);
        service.set_archive(Arc::new(SqliteArchive::open(&dir.join("mgccomp.db")).unwrap()));
        (service, store)
    }

    fn old_event(days_ago: i64, n: i64) -> NewEvent {
        NewEvent {
            kind: "CHAT".into(),
            ts: now_micros() - days_ago * 86_400_000_000,
            room_id: Some("r".into()),
            actor: "a@example.com".into(),
            content: format!("m{n}"),
            details: "{}".into(),
        }
    }

    #[tokio::test]
    async fn retention_purges_only_old_exported_events_and_the_chain_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (service, store) = open_service(dir.path());
        let out = dir.path().join("out");
        let mut config = api::ComplianceConfiguration {
            enabled: true,
            output_dir: out.to_string_lossy().into_owned(),
            retention_days: 30,
            ..Default::default()
        };
        store.put_compliance_config("global", &serde_json::to_string(&config).unwrap()).await.unwrap();
        let events: Vec<NewEvent> =
            [40, 40, 35, 20, 1].iter().enumerate().map(|(n, d)| old_event(*d, n as i64)).collect();
        store.record_events(&events[..3]).await.unwrap();
        service.archive_outbox().await.unwrap();
        // Exported: the first three. Then two more arrive, not exported yet.
        assert_eq!(service.run_export(true).await.unwrap().events, 3);
        store.record_events(&events[3..]).await.unwrap();
        service.archive_outbox().await.unwrap();
        assert_eq!(service.apply_retention().await.unwrap(), 3, "the events older than 30 days go");
        assert_eq!(service.apply_retention().await.unwrap(), 0);
        let archive = service.archive().unwrap();
        let left = archive.events(&EventQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(left.iter().map(|e| e.event.content.as_str()).collect::<Vec<_>>(), ["m3", "m4"]);
        let report = verify(archive.as_ref(), None, &[]).await.unwrap();
        assert_eq!((report.ok, report.events_checked), (true, 2));

        // An old event not exported yet stays until it is.
        store.record_events(&[old_event(50, 5)]).await.unwrap();
        service.archive_outbox().await.unwrap();
        assert_eq!(service.apply_retention().await.unwrap(), 0, "not exported yet");
        // Retention 0 keeps everything forever.
        config.retention_days = 0;
        store.put_compliance_config("global", &serde_json::to_string(&config).unwrap()).await.unwrap();
        // (A new service: the configuration in force is cached until the directory generation moves.)
        let (service, _) = open_service(dir.path());
        assert_eq!(service.run_export(true).await.unwrap().events, 3);
        assert_eq!(service.apply_retention().await.unwrap(), 0, "kept forever");
    }
}
