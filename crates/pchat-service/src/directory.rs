//! The directory (users, groups, administrative roles), policies and configuration. Users, groups and policies
//! are for user administrators (and administrators); configuration and roles for administrators.

use std::collections::BTreeSet;

use pchat_api_types as api;
use pchat_core::text::{NameQuery, user_directory_text};
use pchat_core::{
    Address, ChatConfig, ConfigScope, Identity, Name, PolicyScope, Principal, Scope, ValidationError, config::resolve,
};
use pchat_store::{AccessScope, AdminRole, DirectoryField, UserRecord};
use serde_json::json;

use crate::time::now_micros;

use crate::{Caller, Service, ServiceError, ServiceResult};

pub(crate) fn require_user_admin(caller: &Caller) -> ServiceResult<()> {
    if caller.user_admin || caller.admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("requires the user_admin role".into()))
    }
}

pub(crate) fn require_admin(caller: &Caller) -> ServiceResult<()> {
    if caller.admin { Ok(()) } else { Err(ServiceError::Forbidden("requires the admin role".into())) }
}

/// Users one import creates at most.
pub(crate) const MAX_IMPORT: usize = 1000;

/// Users or rooms a directory listing examines per request at most when no word of a query narrows it (see
/// [`Service::search_users`] and [`Service::list_rooms`]).
pub(crate) const DIRECTORY_EXAMINED: usize = 1000;
/// Longest directory query (users and rooms), in characters.
const MAX_DIRECTORY_QUERY: usize = 256;

/// A directory query longer than [`MAX_DIRECTORY_QUERY`] is refused (`query`).
pub(crate) fn check_directory_query(query: &str) -> ServiceResult<()> {
    if query.chars().count() > MAX_DIRECTORY_QUERY {
        return Err(ServiceError::validation("query", format!("must be at most {MAX_DIRECTORY_QUERY} characters")));
    }
    Ok(())
}

/// Most keys one term of a directory query may select for the search to fetch them (see [`Service::candidates`]).
pub(crate) const DIRECTORY_CANDIDATES: u32 = 500;

/// A display name: 1–256 characters, no control characters.
fn display_name(raw: &str) -> ServiceResult<String> {
    Ok(Name::parse("display_name", raw)?.into_string())
}

impl Service {
    pub async fn create_user(&self, caller: &Caller, input: api::NewUser) -> ServiceResult<UserRecord> {
        require_user_admin(caller)?;
        let address = Address::parse("address", &input.address)?;
        let display_name = display_name(&input.display_name)?;
        self.validate_password("password", &input.password)?;
        let record = UserRecord {
            address: address.to_string(),
            display_name,
            password_hash: self.hash_password(input.password).await?,
            created_at: now_micros(),
        };
        let events = || {
            let details = json!({ "address": record.address, "display_name": record.display_name });
            vec![self.event("USER_CREATED", None, caller.address(), record.address.clone(), details)]
        };
        self.directory_write(self.audited(events, self.store.create_user(record.clone())))
            .await
            .map_err(|e| ServiceError::name_taken_as(e, "address"))?;
        Ok(record)
    }

    /// Creates up to [`MAX_IMPORT`] users at once with password hashes made elsewhere (a directory migrated from
    /// another system, or provisioning at scale), all or none: the first invalid entry is named (`users[i].field`),
    /// and an address taken already or repeated is `name_taken`. No password is hashed here, so an import costs a
    /// database write, not seconds of Argon2. Each user is captured as USER_CREATED like one created alone.
    pub async fn import_users(&self, caller: &Caller, input: api::UserImport) -> ServiceResult<u64> {
        require_user_admin(caller)?;
        if input.users.is_empty() || input.users.len() > MAX_IMPORT {
            return Err(ServiceError::validation("users", format!("must hold 1 to {MAX_IMPORT} users")));
        }
        let now = now_micros();
        let mut records = Vec::with_capacity(input.users.len());
        for (i, u) in input.users.into_iter().enumerate() {
            let at = |name: &str| {
                let field = format!("users[{i}].{name}");
                move |mut e: ValidationError| {
                    e.field = field;
                    e
                }
            };
            let address = Address::parse("address", &u.address).map_err(at("address"))?;
            let display_name = Name::parse("display_name", &u.display_name).map_err(at("display_name"))?.into_string();
            crate::hasher::importable(&u.password_hash)
                .map_err(|e| at("password_hash")(ValidationError::new("", e)))?;
            records.push(UserRecord {
                address: address.to_string(),
                display_name,
                password_hash: u.password_hash,
                created_at: now,
            });
        }
        let count = records.len() as u64;
        let events = || {
            records
                .iter()
                .map(|r| {
                    let details = json!({ "address": r.address, "display_name": r.display_name, "imported": true });
                    self.event("USER_CREATED", None, caller.address(), r.address.clone(), details)
                })
                .collect()
        };
        self.directory_write(self.audited(events, self.store.create_users(records.clone())))
            .await
            .map_err(|e| ServiceError::name_taken_as(e, "users"))?;
        Ok(count)
    }

    /// Any signed-in user may search the directory (to pick members); results page by address. A query finds
    /// people by the start of any word of their address or display name ([`NameQuery`]), through the name index.
    /// With `category`, only users in that category's scope (for the principal picker of room management; see
    /// [`Service::category_for_picking`] for who may ask). Returns the page and the address to continue after.
    /// When no word of the query narrows the search to a few hundred people (or for a scoped search), it walks the
    /// directory in address order and examines at most [`DIRECTORY_EXAMINED`] users per request, so a page can be
    /// short (even empty) and still have a continuation, as search pages do.
    pub async fn search_users(
        &self,
        caller: &Caller,
        query: &str,
        after: Option<&str>,
        limit: u32,
        category: Option<&str>,
    ) -> ServiceResult<(Vec<UserRecord>, Option<String>)> {
        check_directory_query(query)?;
        let scope = match category {
            Some(category) => Some(self.category_for_picking(caller, category).await?),
            None => None,
        };
        // Group membership matters only when the scope names groups.
        let needs_groups = scope.as_ref().is_some_and(Scope::names_groups);
        let query = NameQuery::parse(query);
        let candidates = if query.is_empty() { None } else { self.candidates(&[DirectoryField::User], &query).await? };
        let mut out: Vec<UserRecord> = vec![];
        let mut after = after.map(str::to_owned);
        let mut examined = 0;
        loop {
            let batch = match &candidates {
                Some(keys) => {
                    let keys: Vec<String> =
                        keys.iter().filter(|k| after.as_deref().is_none_or(|a| k.as_str() > a)).cloned().collect();
                    self.store.users_by_address(&keys).await?
                }
                None => self.store.search_users("", after.as_deref(), 200).await?,
            };
            let full = candidates.is_none() && batch.len() == 200;
            for user in batch {
                examined += 1;
                after = Some(user.address.clone());
                let wanted = query.matches(&user_directory_text(&user.address, &user.display_name))
                    && match &scope {
                        None => true,
                        Some(scope) => {
                            let Ok(address) = Address::parse("user", &user.address) else { continue };
                            let groups =
                                if needs_groups { self.store.user_groups(&user.address).await? } else { vec![] };
                            scope.contains(&Identity::new(address, groups))
                        }
                    };
                if wanted {
                    if out.len() == limit as usize {
                        let next = out.last().map(|u| u.address.clone());
                        return Ok((out, next));
                    }
                    out.push(user);
                }
                if candidates.is_none() && examined >= DIRECTORY_EXAMINED {
                    return Ok((out, after));
                }
            }
            if !full {
                return Ok((out, None));
            }
        }
    }

    /// The keys (user addresses, room ids) that can match `query` under `fields`: what the most selective of its
    /// terms select, intersected, from the name index. `None` when no term selects at most
    /// [`DIRECTORY_CANDIDATES`] (the query narrows too little for fetching them to beat walking in order).
    pub(crate) async fn candidates(
        &self,
        fields: &[DirectoryField],
        query: &NameQuery,
    ) -> ServiceResult<Option<BTreeSet<String>>> {
        let mut found: Option<BTreeSet<String>> = None;
        // The terms come longest first; a handful are enough to narrow the search.
        for term in query.terms().iter().take(8) {
            let Some(keys) = self.store.directory_keys(fields, term, DIRECTORY_CANDIDATES).await? else { continue };
            let keys: BTreeSet<String> = match found.take() {
                None => keys.into_iter().collect(),
                Some(so_far) => keys.into_iter().filter(|k| so_far.contains(k)).collect(),
            };
            let none_left = keys.is_empty();
            found = Some(keys);
            if none_left {
                break;
            }
        }
        Ok(found)
    }

    pub async fn delete_user(&self, caller: &Caller, address: &str) -> ServiceResult<()> {
        require_user_admin(caller)?;
        let address = Address::parse("address", address).map_err(|_| ServiceError::not_found("user"))?;
        let events = || vec![self.event("USER_DELETED", None, caller.address(), address.to_string(), json!({}))];
        let write = self.audited(events, self.store.delete_user(address.as_str()));
        self.directory_write(write).await.map_err(|e| match ServiceError::from(e) {
            ServiceError::NotFound(_) => ServiceError::not_found("user"),
            other => other,
        })?;
        self.changed_access(AccessScope::users([address.to_string()])).await;
        Ok(())
    }

    pub async fn get_user(&self, address: &str) -> ServiceResult<UserRecord> {
        let address = Address::parse("address", address).map_err(|_| ServiceError::not_found("user"))?;
        self.store.get_user(address.as_str()).await?.ok_or_else(|| ServiceError::not_found("user"))
    }

    pub async fn create_group(&self, caller: &Caller, input: api::NewGroup) -> ServiceResult<api::Group> {
        require_user_admin(caller)?;
        let name = Name::parse("name", &input.name)?;
        let events = || vec![self.event("GROUP_CREATED", None, caller.address(), name.to_string(), json!({}))];
        self.directory_write(self.audited(events, self.store.create_group(name.as_str()))).await?;
        Ok(api::Group { name: name.into_string(), members: vec![] })
    }

    /// Group membership is for user administrators and administrators: it says who is behind an ethical wall.
    pub async fn get_group(&self, caller: &Caller, name: &str) -> ServiceResult<api::Group> {
        require_user_admin(caller)?;
        let members = self.store.get_group(name).await?.ok_or_else(|| ServiceError::not_found("group"))?;
        Ok(api::Group { name: name.to_owned(), members })
    }

    pub async fn list_groups(&self, caller: &Caller) -> ServiceResult<Vec<String>> {
        require_user_admin(caller)?;
        Ok(self.store.list_groups().await?)
    }

    pub async fn delete_group(&self, caller: &Caller, name: &str) -> ServiceResult<()> {
        require_user_admin(caller)?;
        let events = || vec![self.event("GROUP_DELETED", None, caller.address(), name, json!({}))];
        self.directory_write(self.audited(events, self.store.delete_group(name))).await.map_err(|e| {
            match ServiceError::from(e) {
                ServiceError::NotFound(_) => ServiceError::not_found("group"),
                other => other,
            }
        })?;
        self.changed_access(AccessScope { groups: vec![name.to_owned()], ..AccessScope::default() }).await;
        Ok(())
    }

    /// Changes a group's members: users (who must exist) and other groups (which must exist).
    pub async fn update_group(&self, caller: &Caller, name: &str, patch: api::GroupPatch) -> ServiceResult<api::Group> {
        require_user_admin(caller)?;
        let current = self.store.get_group(name).await?.ok_or_else(|| ServiceError::not_found("group"))?;
        let change = patch.members;
        let (add, remove) = match change.replace {
            Some(replace) => {
                if !change.add.is_empty() || !change.remove.is_empty() {
                    return Err(ServiceError::validation("members", "use either replace or add/remove"));
                }
                let wanted = self.group_member_list(&replace).await?;
                let remove = current.iter().filter(|m| !wanted.contains(m)).cloned().collect();
                (wanted, remove)
            }
            None => (self.group_member_list(&change.add).await?, self.group_member_list_lenient(&change.remove)?),
        };
        let events = || {
            let details = json!({ "before": current, "add": add, "remove": remove });
            vec![self.event("GROUP_CHANGED", None, caller.address(), name, details)]
        };
        let members = self.directory_write(self.audited(events, self.store.update_group(name, &add, &remove))).await?;
        // Those who joined or left the group are concerned (a deny entry may name it), not its other members:
        // users directly, and through a nested group everyone whose groups include it.
        let mut scope = AccessScope::default();
        for member in add.iter().chain(&remove) {
            match member.strip_prefix("group:") {
                Some(group) => scope.groups.push(group.to_owned()),
                None => scope.users.push(member.clone()),
            }
        }
        self.changed_access(scope).await;
        Ok(api::Group { name: name.to_owned(), members })
    }

    /// Validates group members to add: users or groups that exist (not domains or `*`).
    async fn group_member_list(&self, raw: &[String]) -> ServiceResult<Vec<String>> {
        let mut out = vec![];
        for entry in raw {
            match Principal::parse("members", entry)? {
                Principal::User(a) => {
                    if self.store.get_user(a.as_str()).await?.is_none() {
                        return Err(ServiceError::validation("members", format!("no user {a}")));
                    }
                    out.push(a.to_string());
                }
                Principal::Group(g) => {
                    if self.store.get_group(g.as_str()).await?.is_none() {
                        return Err(ServiceError::validation("members", format!("no group {g}")));
                    }
                    out.push(format!("group:{g}"));
                }
                other => {
                    return Err(ServiceError::validation(
                        "members",
                        format!("{other}: a group holds users and groups only"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn group_member_list_lenient(&self, raw: &[String]) -> ServiceResult<Vec<String>> {
        raw.iter().map(|e| Principal::parse("members", e).map(|p| p.to_string()).map_err(Into::into)).collect()
    }

    pub async fn set_role(&self, caller: &Caller, address: &str, role: &str, granted: bool) -> ServiceResult<()> {
        require_admin(caller)?;
        let role =
            AdminRole::parse(role).ok_or_else(|| ServiceError::validation("role", "must be admin or user_admin"))?;
        let user =
            self.get_user(address).await.map_err(|_| ServiceError::validation("user", format!("no user {address}")))?;
        let events = || {
            let kind = if granted { "ROLE_GRANTED" } else { "ROLE_REVOKED" };
            vec![self.event(
                kind,
                None,
                caller.address(),
                role.as_str(),
                json!({ "user": user.address, "role": role.as_str() }),
            )]
        };
        self.directory_write(self.audited(events, self.store.set_role(&user.address, role, granted))).await?;
        self.changed_access(AccessScope::users([user.address])).await;
        Ok(())
    }

    /// Grants a role from the server's own host, without signing in (`pchat admin add` when no administrator can
    /// sign in: the documented recovery). Recorded with `host` as the actor.
    pub async fn grant_role_on_host(&self, host: &str, address: &str, role: &str) -> ServiceResult<()> {
        let role =
            AdminRole::parse(role).ok_or_else(|| ServiceError::validation("role", "must be admin or user_admin"))?;
        let user =
            self.get_user(address).await.map_err(|_| ServiceError::validation("user", format!("no user {address}")))?;
        let actor = format!("host:{host}");
        let events = || {
            let details = json!({ "user": user.address, "role": role.as_str(), "on_host": true });
            vec![self.event("ROLE_GRANTED", None, &actor, role.as_str(), details)]
        };
        self.directory_write(self.audited(events, self.store.set_role(&user.address, role, true))).await?;
        self.changed_access(AccessScope::users([user.address])).await;
        Ok(())
    }

    pub async fn list_roles(&self, caller: &Caller) -> ServiceResult<Vec<api::RoleGrant>> {
        require_admin(caller)?;
        Ok(self
            .store
            .list_roles()
            .await?
            .into_iter()
            .map(|(user, role)| api::RoleGrant { user, role: role.as_str().into() })
            .collect())
    }

    pub async fn get_policy(&self, caller: &Caller, scope: &str) -> ServiceResult<api::Policy> {
        require_user_admin(caller)?;
        let scope = PolicyScope::parse(scope)?;
        let value = match (self.store.get_policy(&scope).await?, &scope) {
            (Some(v), _) => v,
            (None, PolicyScope::Global) => false,
            (None, _) => return Err(ServiceError::not_found("policy")),
        };
        Ok(api::Policy { scope: scope.to_string(), enable_persistent_chat: value })
    }

    pub async fn put_policy(&self, caller: &Caller, scope: &str, input: api::PolicyPut) -> ServiceResult<api::Policy> {
        require_user_admin(caller)?;
        let scope = PolicyScope::parse(scope)?;
        if let PolicyScope::User(a) = &scope
            && self.store.get_user(a.as_str()).await?.is_none()
        {
            return Err(ServiceError::validation("scope", format!("no user {a}")));
        }
        let before = self.store.get_policy(&scope).await?;
        let events = || {
            let details =
                json!({ "scope": scope.to_string(), "before": before, "after": input.enable_persistent_chat });
            vec![self.event("POLICY_CHANGED", None, caller.address(), scope.to_string(), details)]
        };
        self.directory_write(self.audited(events, self.store.put_policy(&scope, input.enable_persistent_chat))).await?;
        self.changed_access(policy_access(&scope)).await;
        Ok(api::Policy { scope: scope.to_string(), enable_persistent_chat: input.enable_persistent_chat })
    }

    pub async fn delete_policy(&self, caller: &Caller, scope: &str) -> ServiceResult<()> {
        require_user_admin(caller)?;
        let scope = PolicyScope::parse(scope)?;
        let before = self.store.get_policy(&scope).await?;
        // Removing nothing is no change (and no event).
        let events = || {
            let details = json!({ "scope": scope.to_string(), "before": before, "after": null });
            let event = self.event("POLICY_REMOVED", None, caller.address(), scope.to_string(), details);
            before.is_some().then_some(event).into_iter().collect()
        };
        let removed = self.directory_write(self.audited(events, self.store.delete_policy(&scope))).await?;
        if removed || scope == PolicyScope::Global {
            self.changed_access(policy_access(&scope)).await;
        }
        if !removed && scope != PolicyScope::Global {
            return Err(ServiceError::not_found("policy"));
        }
        Ok(())
    }

    pub async fn effective_policy(&self, caller: &Caller, address: &str) -> ServiceResult<api::EffectivePolicy> {
        let user = self.get_user(address).await?;
        if user.address != caller.address() {
            require_user_admin(caller)?;
        }
        let (enabled, scope) = self.effective_policy_of(&Address::parse("address", &user.address)?).await?;
        Ok(api::EffectivePolicy { enable_persistent_chat: enabled, from_scope: scope.to_string() })
    }

    pub async fn get_configuration(&self, caller: &Caller, scope: &str) -> ServiceResult<api::Configuration> {
        require_admin(caller)?;
        let scope = ConfigScope::parse(scope)?;
        let config = match (self.store.get_config(&scope).await?, &scope) {
            (Some(c), _) => c,
            (None, ConfigScope::Global) => ChatConfig::default(),
            (None, _) => return Err(ServiceError::not_found("configuration")),
        };
        Ok(config_to_wire(&scope, &config))
    }

    pub async fn put_configuration(
        &self,
        caller: &Caller,
        scope: &str,
        input: api::ConfigurationPut,
    ) -> ServiceResult<api::Configuration> {
        require_admin(caller)?;
        let scope = ConfigScope::parse(scope)?;
        let d = ChatConfig::default();
        let config = ChatConfig::validate(
            input.default_chat_history.unwrap_or(i64::from(d.default_chat_history)),
            input.max_file_size_kb.unwrap_or(i64::from(d.max_file_size_kb)),
            input.participant_update_limit.unwrap_or(i64::from(d.participant_update_limit)),
            input.room_management_url.unwrap_or(d.room_management_url),
            input.max_message_bytes.unwrap_or(i64::from(d.max_message_bytes)),
        )?;
        let before = self.store.get_config(&scope).await?.map(|c| config_to_wire(&scope, &c));
        let events = || {
            let details =
                json!({ "scope": scope.to_string(), "before": before, "after": config_to_wire(&scope, &config) });
            vec![self.event("CONFIG_CHANGED", None, caller.address(), scope.to_string(), details)]
        };
        self.directory_write(self.audited(events, self.store.put_config(&scope, &config))).await?;
        Ok(config_to_wire(&scope, &config))
    }

    pub async fn delete_configuration(&self, caller: &Caller, scope: &str) -> ServiceResult<()> {
        require_admin(caller)?;
        let scope = ConfigScope::parse(scope)?;
        let before = self.store.get_config(&scope).await?.map(|c| config_to_wire(&scope, &c));
        let events = || {
            let details = json!({ "scope": scope.to_string(), "before": before, "after": null });
            let event = self.event("CONFIG_REMOVED", None, caller.address(), scope.to_string(), details);
            before.is_some().then_some(event).into_iter().collect()
        };
        if !self.directory_write(self.audited(events, self.store.delete_config(&scope))).await?
            && scope != ConfigScope::Global
        {
            return Err(ServiceError::not_found("configuration"));
        }
        Ok(())
    }

    /// The configuration in force on this server (pool, then site, then global, then defaults).
    pub(crate) async fn effective_config(&self) -> ServiceResult<ChatConfig> {
        let generation = self.generation();
        if let Ok(cache) = self.config_cache.read()
            && let Some((at, config)) = cache.as_ref()
            && *at == generation
        {
            return Ok(config.clone());
        }
        let chain = ConfigScope::chain(&self.settings.site, &self.settings.pool);
        let mut found = Vec::with_capacity(chain.len());
        for scope in &chain {
            found.push((scope.clone(), self.store.get_config(scope).await?));
        }
        let config = resolve(&chain, |s| found.iter().find(|(f, _)| f == s).and_then(|(_, c)| c.clone()))
            .map(|(_, c)| c)
            .unwrap_or_default();
        // Tagged with the generation read before the query: a write during it makes the next call read again.
        if let Ok(mut cache) = self.config_cache.write() {
            *cache = Some((generation, config.clone()));
        }
        Ok(config)
    }
}

/// Who a policy change concerns: the user of a user scope, everyone otherwise.
fn policy_access(scope: &PolicyScope) -> AccessScope {
    match scope {
        PolicyScope::User(address) => AccessScope::users([address.to_string()]),
        PolicyScope::Global | PolicyScope::Site(_) | PolicyScope::Pool(_) => AccessScope::everyone(),
    }
}

fn config_to_wire(scope: &ConfigScope, c: &ChatConfig) -> api::Configuration {
    api::Configuration {
        scope: scope.to_string(),
        default_chat_history: c.default_chat_history,
        max_file_size_kb: c.max_file_size_kb,
        participant_update_limit: c.participant_update_limit,
        room_management_url: c.room_management_url.clone(),
        max_message_bytes: c.max_message_bytes,
    }
}

impl Service {
    /// The custom room management URL in force, if one is configured.
    pub async fn management_url(&self) -> Option<String> {
        self.effective_config().await.ok().map(|c| c.room_management_url).filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use pchat_store::CategoryRecord;

    use super::*;

    /// A scoped user search examines a bounded number of users per request and continues where it stopped, so a
    /// narrow scope over a large directory costs bounded work per page and still finds everyone in scope.
    #[tokio::test]
    async fn scoped_user_search_examines_a_bounded_number_per_page() {
        let dir = tempfile::tempdir().unwrap();
        let (service, store) = crate::testing::open_service(dir.path());
        for i in 0..1_100 {
            let user = UserRecord {
                address: format!("u{i:04}@example.com"),
                display_name: format!("User {i}"),
                password_hash: "$argon2id$x".into(),
                created_at: 0,
            };
            store.create_user(user).await.unwrap();
        }
        let in_scope = ["u0005@example.com", "u1050@example.com"];
        let category = CategoryRecord {
            id: "c1".into(),
            name: "Narrow".into(),
            description: String::new(),
            file_upload: false,
            chat_history: true,
            invitations: false,
            allowed_members: in_scope.iter().map(|a| Principal::User(Address::parse("a", a).unwrap())).collect(),
            denied_members: vec![],
            creators: vec![],
            version: 1,
        };
        store.create_category(&category).await.unwrap();
        let admin = Caller {
            identity: Identity::new(Address::parse("a", "admin@example.com").unwrap(), []),
            display_name: "Admin".into(),
            admin: true,
            user_admin: true,
            chat_enabled: true,
        };
        let mut found = vec![];
        let mut pages = 0;
        let mut after: Option<String> = None;
        loop {
            let (users, next) = service.search_users(&admin, "u", after.as_deref(), 50, Some("c1")).await.unwrap();
            pages += 1;
            found.extend(users.into_iter().map(|u| u.address));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(found, in_scope, "every user in scope, once, in order");
        assert_eq!(pages, 2, "1,100 users take two pages of at most {DIRECTORY_EXAMINED} examined");
        // Without a scope, the same search pages by the limit alone.
        let (users, next) = service.search_users(&admin, "u", None, 50, None).await.unwrap();
        assert_eq!((users.len(), next.as_deref()), (50, Some("u0049@example.com")));
        // Someone in no relation to the category learns nothing about it.
        let outsider = Caller { admin: false, user_admin: false, ..admin.clone() };
        let refused = service.search_users(&outsider, "u", None, 50, Some("c1")).await;
        assert!(matches!(refused, Err(ServiceError::NotFound(_))), "{refused:?}");
    }

    /// Directory searches find people and rooms through the name index when a word of the query narrows them
    /// (one request, whatever the directory's size), and otherwise walk in order a bounded number per request, so
    /// that rooms the caller may not see cost bounded work per page and the next page continues after them.
    #[tokio::test]
    async fn directory_searches_use_the_name_index_or_a_bounded_walk() {
        use pchat_core::{Invitations, Privacy, RoomType};
        use pchat_store::RoomRecord;

        use crate::rooms::RoomFilter;

        let dir = tempfile::tempdir().unwrap();
        let (service, store) = crate::testing::open_service(dir.path());
        let users = (0..1_100)
            .map(|i| UserRecord {
                address: format!("u{i:04}@example.com"),
                display_name: format!("User {i}"),
                password_hash: "$argon2id$x".into(),
                created_at: 0,
            })
            .collect();
        store.create_users(users).await.unwrap();
        let admin = Caller {
            identity: Identity::new(Address::parse("a", "admin@example.com").unwrap(), []),
            display_name: "Admin".into(),
            admin: true,
            user_admin: true,
            chat_enabled: true,
        };
        let addresses = |users: Vec<UserRecord>| users.into_iter().map(|u| u.address).collect::<Vec<_>>();
        let (found, next) = service.search_users(&admin, "user 105", None, 50, None).await.unwrap();
        let mut expected = vec!["u0105@example.com".to_owned()];
        expected.extend((1050..1060).map(|i| format!("u{i}@example.com")));
        assert_eq!((addresses(found), next), (expected, None), "display name words, by their start");
        let (found, next) = service.search_users(&admin, "U1050@EXAMPLE", None, 50, None).await.unwrap();
        assert_eq!((addresses(found), next), (vec!["u1050@example.com".to_owned()], None));
        let (found, _) = service.search_users(&admin, "ser 105", None, 50, None).await.unwrap();
        assert!(found.is_empty(), "a word is found by its start, not its middle");

        let category = CategoryRecord {
            id: "c1".into(),
            name: "Desks".into(),
            description: String::new(),
            file_upload: false,
            chat_history: true,
            invitations: false,
            allowed_members: vec![Principal::Everyone],
            denied_members: vec![],
            creators: vec![],
            version: 1,
        };
        store.create_category(&category).await.unwrap();
        let room = |i: usize, name: String, privacy: Privacy| RoomRecord {
            id: format!("r{i}"),
            name,
            description: String::new(),
            category_id: "c1".into(),
            privacy,
            room_type: RoomType::Normal,
            invitations: Invitations::Inherit,
            disabled: false,
            addin: None,
            members: vec![],
            managers: vec![],
            presenters: vec![],
            created_by: "admin@example.com".into(),
            created_at: 0,
            version: 1,
        };
        for i in 0..1_100 {
            store.create_room(&room(i, format!("Secret desk {i:04}"), Privacy::Secret)).await.unwrap();
        }
        store.create_room(&room(5_000, "Zürich open desk".into(), Privacy::Open)).await.unwrap();
        let mut managed = room(5_001, "Secret desk managed".into(), Privacy::Secret);
        managed.managers = vec![Principal::parse("m", "u0001@example.com").unwrap()];
        store.create_room(&managed).await.unwrap();
        let alice = Caller {
            identity: Identity::new(Address::parse("a", "u0001@example.com").unwrap(), []),
            display_name: "Alice".into(),
            admin: false,
            user_admin: false,
            chat_enabled: true,
        };
        let names = |rooms: Vec<crate::rooms::RoomView>| rooms.into_iter().map(|v| v.room.name).collect::<Vec<_>>();
        let by = |query: &str| RoomFilter { query: Some(query.into()), ..RoomFilter::default() };
        // A narrowing word: one request finds the room among 1,101.
        let (found, next) = service.list_rooms(&alice, &by("zur"), None, 50).await.unwrap();
        assert_eq!((names(found), next), (vec!["Zürich open desk".to_owned()], None));
        // No narrowing word ("desk" is in every name): the walk stops after a bounded number of rooms alice may not
        // see, with a page that is empty but continues, and the next request finds the room she may.
        let mut pages = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let (found, next) = service.list_rooms(&alice, &by("desk"), cursor.as_deref(), 50).await.unwrap();
            pages.push(names(found));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: [Vec<String>; 2] = [vec![], vec!["Secret desk managed".into(), "Zürich open desk".into()]];
        assert_eq!(pages, expected, "{DIRECTORY_EXAMINED} rooms per request");
        // The rooms alice manages come from the role-list index, in one request.
        let mine = RoomFilter { managed: true, ..RoomFilter::default() };
        let (found, next) = service.list_rooms(&alice, &mine, None, 50).await.unwrap();
        assert_eq!((names(found), next), (vec!["Secret desk managed".to_owned()], None));
        let (found, next) =
            service.list_rooms(&alice, &RoomFilter { query: Some("zur".into()), ..mine }, None, 50).await.unwrap();
        assert_eq!((found.len(), next), (0, None), "and the query still applies");
        // The administrator sees every room: the walk fills pages by the limit.
        let (found, next) = service.list_rooms(&admin, &by("desk 0007"), None, 50).await.unwrap();
        assert_eq!((names(found), next), (vec!["Secret desk 0007".to_owned()], None));
        let (found, next) = service.list_rooms(&admin, &RoomFilter::default(), None, 50).await.unwrap();
        assert_eq!((found.len(), next.is_some()), (50, true));
    }
}
