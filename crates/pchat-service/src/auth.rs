//! Sign-in, sessions and passwords; the caller's identity; the first-start administrator.
//!
//! Passwords are hashed with Argon2id on [`SecuritySettings::hash_concurrency`] dedicated threads with a bounded
//! queue behind them ([`crate::hasher`]), so a flood of sign-ins can neither exhaust memory nor take every core. Failed sign-ins are throttled before any hashing ([`crate::throttle`]). Bearer
//! tokens are random; only their SHA-256 is stored, in a session that ends after an idle timeout, after an
//! absolute lifetime, at sign-out, when a user administrator ends it, or when the password changes.

use std::net::IpAddr;

use pchat_core::{Address, Identity, PolicyScope};
use pchat_store::sessions::NEVER;
use pchat_store::{AccessScope, AdminRole, SessionRecord, UserRecord};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::directory::require_user_admin;
use crate::throttle::{SignInThrottle, ThrottleSettings};
use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Verified against when the user does not exist, so that unknown users and wrong passwords take the same time.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4Dq3HSd6u8fW1lDJTgVX6Y9fW1yQ6Q6VOPb8S5H8dUo";
/// Longest user name accepted at sign-in (an address is at most 320 characters).
const MAX_SIGN_IN_USER: usize = 320;
/// Longest password accepted anywhere, in characters: hashing cost is bounded by it.
const MAX_PASSWORD_CHARS: usize = 1024;
/// A session's last use is recorded at most this often (µs), or a quarter of the idle timeout when that is less.
const TOUCH_EVERY: i64 = 60_000_000;
/// Longest client description kept with a session.
const MAX_CLIENT: usize = 200;

/// Sign-in, session and password settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    /// A session unused this long ends (an open stream keeps it in use).
    pub session_idle_timeout_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub session_lifetime_secs: i64,
    /// Shortest new password, in characters.
    pub min_password_chars: usize,
    /// Password hashes computed at once.
    pub hash_concurrency: usize,
    /// Password checks waiting for a hashing slot before more are refused (503 with Retry-After).
    pub hash_queue: usize,
    pub sign_in: ThrottleSettings,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            session_idle_timeout_secs: 8 * 3600,
            session_lifetime_secs: 7 * 24 * 3600,
            min_password_chars: 8,
            hash_concurrency: 1,
            hash_queue: 64,
            sign_in: ThrottleSettings::default(),
        }
    }
}

/// Where a request comes from, for throttling and for describing sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub address: Option<IpAddr>,
    pub user_agent: String,
}

impl ClientInfo {
    fn describe(&self) -> String {
        let address = self.address.map(|a| a.to_string()).unwrap_or_else(|| "unknown address".into());
        let agent: String = self.user_agent.chars().filter(|c| !c.is_control()).take(MAX_CLIENT).collect();
        if agent.is_empty() { address } else { format!("{address} {agent}") }
    }
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// A signed-in session as its user sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub record: SessionRecord,
    /// The session of the request that asked.
    pub current: bool,
}

impl Service {
    /// Checks a new password: at least the configured length, at most 1,024 characters.
    pub(crate) fn validate_password(&self, field: &str, password: &str) -> ServiceResult<()> {
        let n = password.chars().count();
        let min = self.settings.security.min_password_chars;
        if n < min || n > MAX_PASSWORD_CHARS {
            return Err(ServiceError::validation(field, format!("must be {min} to {MAX_PASSWORD_CHARS} characters")));
        }
        Ok(())
    }

    pub(crate) async fn hash_password(&self, password: String) -> ServiceResult<String> {
        self.hashes.hash(password).await
    }

    /// Signs in: the same error for an unknown user and a wrong password. Refused without hashing while the
    /// account or the client address is locked out.
    pub async fn sign_in(
        &self,
        user: &str,
        password: &str,
        client: &ClientInfo,
    ) -> ServiceResult<(String, SessionRecord, UserRecord)> {
        if user.chars().count() > MAX_SIGN_IN_USER {
            return Err(ServiceError::validation("user", format!("must be at most {MAX_SIGN_IN_USER} characters")));
        }
        if password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(ServiceError::validation(
                "password",
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        // Sign-in takes a longer padded name (the document's limit) than other fields: the address is its trim.
        let address = Address::parse("user", user.trim())?;
        self.throttle
            .check(address.as_str(), client.address)
            .map_err(|retry_after_secs| ServiceError::RateLimited { retry_after_secs })?;
        let record = self.store.get_user(address.as_str()).await?;
        let hash = record.as_ref().map_or(DUMMY_HASH.to_owned(), |r| r.password_hash.clone());
        let ok = self.hashes.verify(password.to_owned(), hash).await?;
        let Some(record) = record.filter(|_| ok) else {
            self.throttle.failed(address.as_str(), client.address);
            // A failed sign-in writes nothing but is captured; the name tried is a valid, bounded address.
            let details = json!({ "user": address.as_str(), "client": client.describe() });
            self.record(|| vec![self.event("SIGN_IN_FAILED", None, address.as_str(), "", details)]).await?;
            return Err(ServiceError::Unauthenticated);
        };
        self.throttle.succeeded(address.as_str(), client.address);
        let (token, session) = self.new_session(&record.address, client.describe(), false);
        let events = || vec![self.event("SIGN_IN", None, &record.address, "", json!({ "session": session.id }))];
        self.audited(events, self.store.create_session(&session)).await?;
        Ok((token, session, record))
    }

    fn new_session(&self, address: &str, client: String, never_ends: bool) -> (String, SessionRecord) {
        let token = random_secret("pct_");
        let now = now_micros();
        let lifetime = self.settings.security.session_lifetime_secs.saturating_mul(1_000_000);
        let session = SessionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: token_hash(&token),
            address: address.to_owned(),
            created_at: now,
            last_used_at: now,
            expires_at: if never_ends { NEVER } else { now.saturating_add(lifetime) },
            client,
        };
        (token, session)
    }

    /// Ends the session of `token`; its live connections close.
    pub async fn sign_out(&self, token: &str) -> ServiceResult<()> {
        if let Some(session) = self.store.end_session(&token_hash(token)).await? {
            self.changed_access(AccessScope::users([session.address])).await;
        }
        Ok(())
    }

    /// The session behind a token hash, if it has neither expired nor idled out.
    pub(crate) async fn live_session(&self, session_hash: &str) -> ServiceResult<Option<SessionRecord>> {
        let Some(session) = self.store.session(session_hash).await? else { return Ok(None) };
        let now = now_micros();
        let idle = self.settings.security.session_idle_timeout_secs.saturating_mul(1_000_000);
        let ended = session.expires_at <= now
            || (session.expires_at != NEVER && session.last_used_at.saturating_add(idle) <= now);
        if ended {
            // Forget it now rather than at the next purge.
            self.store.end_session(session_hash).await?;
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Whether the session behind a token hash is still alive.
    pub(crate) async fn session_alive(&self, session_hash: &str) -> ServiceResult<bool> {
        Ok(self.live_session(session_hash).await?.is_some())
    }

    /// Resolves a bearer token to its session and the caller it acts for, recording the use.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<(Caller, SessionRecord)> {
        let hash = token_hash(token);
        let session = self.live_session(&hash).await?.ok_or(ServiceError::Unauthenticated)?;
        let now = now_micros();
        let idle = self.settings.security.session_idle_timeout_secs.saturating_mul(1_000_000);
        if now - session.last_used_at >= TOUCH_EVERY.min(idle / 4) {
            self.store.touch_session(&hash, now).await?;
        }
        let caller = self.caller_for(&session.address).await?.ok_or(ServiceError::Unauthenticated)?;
        Ok((caller, session))
    }

    /// Records that a live connection still uses its session (an open stream keeps the session from idling out).
    pub async fn keep_session_alive(&self, session_hash: &str) -> ServiceResult<()> {
        Ok(self.store.touch_session(session_hash, now_micros()).await?)
    }

    /// How often an open stream records that its session is in use: a quarter of the idle timeout, between a
    /// quarter of a second and an hour.
    pub fn session_touch_interval(&self) -> std::time::Duration {
        let idle_ms = self.settings.security.session_idle_timeout_secs.max(1) as u64 * 1000;
        std::time::Duration::from_millis((idle_ms / 4).clamp(250, 3_600_000))
    }

    /// The caller's own sessions, newest first.
    pub async fn my_sessions(&self, caller: &Caller, current: &SessionRecord) -> ServiceResult<Vec<SessionView>> {
        let sessions = self.store.sessions_of(caller.address()).await?;
        Ok(sessions.into_iter().map(|record| SessionView { current: record.id == current.id, record }).collect())
    }

    /// Ends one of the caller's own sessions by id.
    pub async fn end_my_session(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        let events =
            || vec![self.event("SESSION_ENDED", None, caller.address(), id, json!({ "user": caller.address() }))];
        self.audited(events, self.store.end_session_by_id(caller.address(), id)).await.map_err(|e| {
            match ServiceError::from(e) {
                ServiceError::NotFound(_) => ServiceError::not_found("session"),
                other => other,
            }
        })?;
        self.changed_access(AccessScope::users([caller.address().to_owned()])).await;
        Ok(())
    }

    /// Ends every session of a user (user administrators); their live connections close.
    pub async fn end_sessions_of(&self, caller: &Caller, address: &str) -> ServiceResult<u64> {
        require_user_admin(caller)?;
        let user = self.get_user(address).await?;
        let events = || {
            let details = json!({ "user": user.address });
            vec![self.event("SESSIONS_ENDED", None, caller.address(), user.address.clone(), details)]
        };
        let ended = self.audited(events, self.store.end_sessions(&user.address, None)).await?;
        self.changed_access(AccessScope::users([user.address.clone()])).await;
        Ok(ended)
    }

    /// Changes the caller's own password; the current one is required (and its guesses are throttled like
    /// sign-ins). Every other session of the caller ends.
    pub async fn change_my_password(
        &self,
        caller: &Caller,
        session: &SessionRecord,
        current: &str,
        new: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        if current.chars().count() > MAX_PASSWORD_CHARS {
            return Err(ServiceError::validation("current_password", "is not the current password"));
        }
        self.validate_password("new_password", new)?;
        self.throttle
            .check(caller.address(), client.address)
            .map_err(|retry_after_secs| ServiceError::RateLimited { retry_after_secs })?;
        let user = self.get_user(caller.address()).await?;
        if !self.hashes.verify(current.to_owned(), user.password_hash).await? {
            self.throttle.failed(caller.address(), client.address);
            return Err(ServiceError::validation("current_password", "is not the current password"));
        }
        let hash = self.hash_password(new.to_owned()).await?;
        let events = || {
            let details = json!({ "user": user.address, "by": "self" });
            vec![self.event("PASSWORD_CHANGED", None, caller.address(), user.address.clone(), details)]
        };
        self.audited(events, self.store.set_password(&user.address, &hash, Some(&session.token_hash))).await?;
        self.changed_access(AccessScope::users([user.address])).await;
        Ok(())
    }

    /// Sets a user's password (user administrators); every session of the user ends.
    pub async fn set_password(&self, caller: &Caller, address: &str, new: &str) -> ServiceResult<()> {
        require_user_admin(caller)?;
        let user = self.get_user(address).await?;
        self.validate_password("password", new)?;
        let hash = self.hash_password(new.to_owned()).await?;
        let events = || {
            let details = json!({ "user": user.address, "by": "user_admin" });
            vec![self.event("PASSWORD_CHANGED", None, caller.address(), user.address.clone(), details)]
        };
        self.audited(events, self.store.set_password(&user.address, &hash, None)).await?;
        self.changed_access(AccessScope::users([user.address])).await;
        Ok(())
    }

    /// Deletes sessions that have ended, so that the table does not grow without bound.
    pub async fn purge_sessions(&self) -> ServiceResult<u64> {
        let now = now_micros();
        let idle = self.settings.security.session_idle_timeout_secs.saturating_mul(1_000_000);
        Ok(self.store.purge_sessions(now, now.saturating_sub(idle)).await?)
    }

    /// The caller for a user address: groups, roles and effective policy, read fresh (in one read).
    pub async fn caller_for(&self, address: &str) -> ServiceResult<Option<Caller>> {
        let Ok(parsed) = Address::parse("user", address) else { return Ok(None) };
        let chain = PolicyScope::chain(&parsed, &self.settings.site, &self.settings.pool);
        let Some(facts) = self.store.caller_facts(address, &chain).await? else {
            return Ok(None);
        };
        let address = Address::parse("user", &facts.user.address)?;
        let (chat_enabled, _) = effective_policy(&chain, facts.policies);
        Ok(Some(Caller {
            identity: Identity::new(address, facts.groups),
            display_name: facts.user.display_name,
            admin: facts.roles.contains(&AdminRole::Admin),
            user_admin: facts.roles.contains(&AdminRole::UserAdmin),
            chat_enabled,
        }))
    }

    /// The effective `enable_persistent_chat` of a user and the scope it comes from (default: off, global).
    pub(crate) async fn effective_policy_of(&self, address: &Address) -> ServiceResult<(bool, PolicyScope)> {
        let chain = PolicyScope::chain(address, &self.settings.site, &self.settings.pool);
        let mut values = Vec::with_capacity(chain.len());
        for scope in &chain {
            values.push(self.store.get_policy(scope).await?);
        }
        Ok(effective_policy(&chain, values))
    }

    /// On first start with an empty directory, creates `admin@<domain>` with both administrative roles.
    /// Returns the password when it was generated (to print once).
    pub async fn bootstrap_admin(&self, password: Option<String>) -> ServiceResult<Option<(String, Option<String>)>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let address = Address::parse("domain", &format!("admin@{}", self.settings.domain))?;
        let generated = password.is_none();
        let password = password.unwrap_or_else(|| random_secret("")[..24].to_owned());
        self.validate_password("password", &password)?;
        let hash = self.hash_password(password.clone()).await?;
        let created = self
            .store
            .create_user(UserRecord {
                address: address.to_string(),
                display_name: "Administrator".into(),
                password_hash: hash,
                created_at: now_micros(),
            })
            .await;
        match created {
            Ok(()) => {}
            // Another server of the pool bootstrapped at the same moment.
            Err(pchat_store::StoreError::NameTaken) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.directory_write(self.store.set_role(address.as_str(), AdminRole::Admin, true)).await?;
        self.directory_write(self.store.set_role(address.as_str(), AdminRole::UserAdmin, true)).await?;
        Ok(Some((address.to_string(), generated.then_some(password))))
    }

    /// A fresh token for the first administrator, for local commands on the server's host (`server.json` in the
    /// data directory). Its session does not expire: the server revokes it when it stops. `None` when no
    /// administrator exists.
    pub async fn local_admin_token(&self) -> ServiceResult<Option<String>> {
        let admins = self.store.list_roles().await?;
        let Some((address, _)) = admins.into_iter().find(|(_, r)| *r == AdminRole::Admin) else {
            return Ok(None);
        };
        let (token, session) = self.new_session(&address, "local administration (server.json)".into(), true);
        self.store.create_session(&session).await?;
        Ok(Some(token))
    }
}

pub(crate) fn new_throttle(settings: &SecuritySettings) -> SignInThrottle {
    SignInThrottle::new(settings.sign_in.clone())
}

/// The first policy set along the chain (most specific first) and its scope; off, from the global scope, if none.
fn effective_policy(chain: &[PolicyScope], values: Vec<Option<bool>>) -> (bool, PolicyScope) {
    chain.iter().zip(values).find_map(|(s, v)| v.map(|v| (v, s.clone()))).unwrap_or((false, PolicyScope::Global))
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::Argon2;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        // If it did not parse, unknown users would be answered faster than wrong passwords.
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(Argon2::default().verify_password(b"anything", &parsed).is_err());
    }

    #[test]
    fn client_descriptions_are_bounded_and_clean() {
        let client =
            ClientInfo { address: Some([10, 1, 2, 3].into()), user_agent: format!("a\u{7}b{}", "x".repeat(500)) };
        let described = client.describe();
        assert!(described.starts_with("10.1.2.3 ab"));
        assert_eq!(described.chars().count(), "10.1.2.3 ".len() + MAX_CLIENT);
        assert_eq!(ClientInfo::default().describe(), "unknown address");
    }
}
