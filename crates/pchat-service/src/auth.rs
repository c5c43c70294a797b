//! Sign-in, bearer tokens and the caller's identity; the first-start administrator.
//! Passwords are hashed with Argon2id on blocking threads; tokens are random and stored only as SHA-256 hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pchat_core::{Address, Identity, PolicyScope};
use pchat_store::{AdminRole, UserRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Verified against when the user does not exist, so that unknown users and wrong passwords take the same time.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4Dq3HSd6u8fW1lDJTgVX6Y9fW1yQ6Q6VOPb8S5H8dUo";

pub(crate) async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ServiceError::Unavailable(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ServiceError::Unavailable(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Checks a new password: long enough to matter, short enough to hash cheaply.
pub(crate) fn validate_password(password: &str) -> ServiceResult<()> {
    let n = password.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(ServiceError::validation("password", "must be 8 to 1024 characters"));
    }
    Ok(())
}

impl Service {
    /// Signs in; the same error for an unknown user and a wrong password.
    pub async fn sign_in(&self, user: &str, password: &str) -> ServiceResult<(String, UserRecord)> {
        let record = match Address::parse("user", user) {
            Ok(address) => self.store.get_user(address.as_str()).await?,
            Err(_) => None,
        };
        let hash = record.as_ref().map_or(DUMMY_HASH.to_owned(), |r| r.password_hash.clone());
        let ok = verify_password(password.to_owned(), hash).await;
        let Some(record) = record.filter(|_| ok) else {
            // A failed sign-in writes nothing but is captured; the name tried is kept as given.
            self.record(|| vec![self.event("SIGN_IN_FAILED", None, user, "", serde_json::json!({ "user": user }))])
                .await?;
            return Err(ServiceError::Unauthenticated);
        };
        let token = random_secret("pct_");
        let events = || vec![self.event("SIGN_IN", None, &record.address, "", serde_json::json!({}))];
        self.audited(events, self.store.create_token(&token_hash(&token), &record.address, now_micros())).await?;
        Ok((token, record))
    }

    pub async fn sign_out(&self, token: &str) -> ServiceResult<()> {
        Ok(self.store.delete_token(&token_hash(token)).await?)
    }

    /// Resolves a bearer token to the caller it acts for.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Caller> {
        let address = self.store.token_user(&token_hash(token)).await?.ok_or(ServiceError::Unauthenticated)?;
        self.caller_for(&address).await?.ok_or(ServiceError::Unauthenticated)
    }

    /// The caller for a user address: groups, roles and effective policy, read fresh.
    pub async fn caller_for(&self, address: &str) -> ServiceResult<Option<Caller>> {
        let Some(user) = self.store.get_user(address).await? else {
            return Ok(None);
        };
        let address = Address::parse("user", &user.address)?;
        let groups = self.store.user_groups(address.as_str()).await?;
        let roles: Vec<AdminRole> =
            self.store.list_roles().await?.into_iter().filter(|(a, _)| *a == user.address).map(|(_, r)| r).collect();
        let (chat_enabled, _) = self.effective_policy_of(&address).await?;
        Ok(Some(Caller {
            identity: Identity::new(address, groups),
            display_name: user.display_name,
            admin: roles.contains(&AdminRole::Admin),
            user_admin: roles.contains(&AdminRole::UserAdmin),
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
        Ok(chain
            .iter()
            .zip(values)
            .find_map(|(s, v)| v.map(|v| (v, s.clone())))
            .unwrap_or((false, PolicyScope::Global)))
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
        validate_password(&password)?;
        let hash = hash_password(password.clone()).await?;
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
}

impl Service {
    /// A fresh token for the first administrator, for local commands on the server's host
    /// (`server.json` in the data directory). `None` when no administrator exists.
    pub async fn local_admin_token(&self) -> ServiceResult<Option<String>> {
        let admins = self.store.list_roles().await?;
        let Some((address, _)) = admins.into_iter().find(|(_, r)| *r == AdminRole::Admin) else {
            return Ok(None);
        };
        let token = random_secret("pct_");
        self.store.create_token(&token_hash(&token), &address, now_micros()).await?;
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        // If it did not parse, unknown users would be answered faster than wrong passwords.
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(Argon2::default().verify_password(b"anything", &parsed).is_err());
    }

    #[test]
    fn password_rules() {
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }
}
