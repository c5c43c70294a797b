//! Categories, add-ins and rooms: creation, the room directory, changes to properties and role lists, moves
//! between categories, disabling and deletion, with the live consequences (updates, evictions, invitations).

use std::collections::BTreeSet;

use pchat_api_types as api;
use pchat_core::config::http_url;
use pchat_core::permissions::may_create_room;
use pchat_core::text::NameQuery;
use pchat_core::{
    Access, Address, Description, Identity, Invitations, Name, Principal, Privacy, RoomAcl, RoomType, Scope, decide,
};
use pchat_store::{
    AccessScope, AddinRecord, CategoryRecord, ClusterEvent, DirectoryField, RoomQuery, RoomRecord, StoreError,
};

use crate::directory::{DIRECTORY_EXAMINED, check_directory_query, require_admin};
use crate::me::role_principals;
use crate::time::now_micros;
use serde_json::json;

use crate::compliance::{addin_json, category_json, room_change_kind, room_json};
use crate::{Caller, Service, ServiceError, ServiceResult};

/// How often an edit is re-applied after losing a race before giving up (409).
const MAX_EDIT_ATTEMPTS: usize = 16;

/// A room together with what the caller may do with it.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub room: RoomRecord,
    pub access: Access,
}

pub(crate) fn scope_of(category: &CategoryRecord) -> Scope {
    Scope { allowed: category.allowed_members.clone(), denied: category.denied_members.clone() }
}

pub(crate) fn access_to(caller: &Caller, category: &CategoryRecord, room: &RoomRecord) -> Access {
    decide(
        &caller.identity,
        caller.admin,
        &scope_of(category),
        &RoomAcl {
            privacy: room.privacy,
            room_type: room.room_type,
            disabled: room.disabled,
            members: &room.members,
            managers: &room.managers,
            presenters: &room.presenters,
        },
    )
}

/// Applies a list modifier to a current list (add/remove, or replace).
fn apply_change(
    field: &str,
    current: &[Principal],
    change: &api::ListChange,
) -> ServiceResult<(Vec<Principal>, Vec<Principal>)> {
    let parse = |raw: &[String]| Principal::parse_list(field, raw.iter().map(String::as_str));
    if let Some(replace) = &change.replace {
        if !change.add.is_empty() || !change.remove.is_empty() {
            return Err(ServiceError::validation(field, "use either replace or add/remove"));
        }
        let new = parse(replace)?;
        let added = new.iter().filter(|p| !current.contains(p)).cloned().collect();
        return Ok((new, added));
    }
    let add = parse(&change.add)?;
    let remove = parse(&change.remove)?;
    let mut set: BTreeSet<Principal> = current.iter().cloned().collect();
    let added: Vec<Principal> = add.iter().filter(|p| !set.contains(p)).cloned().collect();
    set.extend(add);
    for p in &remove {
        set.remove(p);
    }
    Ok((set.into_iter().collect(), added))
}

fn opt_list(field: &str, raw: Option<Vec<String>>) -> ServiceResult<Vec<Principal>> {
    Ok(Principal::parse_list(field, raw.unwrap_or_default().iter().map(String::as_str))?)
}

/// Cursors are opaque to clients: the hex of the last name returned.
pub fn encode_cursor(name: &str) -> String {
    hex::encode(name.as_bytes())
}

pub fn decode_cursor(raw: &str) -> ServiceResult<String> {
    // Any well-formed cursor is accepted: one that names no item simply starts after where it would sort.
    hex::decode(raw)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| ServiceError::validation("cursor", "is not a cursor returned by this endpoint"))
}

/// Filters of the room directory.
#[derive(Debug, Clone, Default)]
pub struct RoomFilter {
    pub query: Option<String>,
    pub category: Option<String>,
    pub search_description: bool,
    pub disabled: Option<bool>,
    /// Only rooms the caller may manage (for an administrator, every room).
    pub managed: bool,
}

impl Service {
    // ---- principals --------------------------------------------------------------------------------------

    /// Checks that each principal exists (users, groups) and, when `scope` is given, is in it.
    async fn checked_principals(&self, field: &str, list: &[Principal], scope: Option<&Scope>) -> ServiceResult<()> {
        for p in list {
            let identity = match p {
                Principal::User(a) => {
                    if self.store.get_user(a.as_str()).await?.is_none() {
                        return Err(ServiceError::validation(field, format!("no user {a}")));
                    }
                    Some(Identity::new(a.clone(), self.store.user_groups(a.as_str()).await?))
                }
                Principal::Group(g) => {
                    if self.store.get_group(g.as_str()).await?.is_none() {
                        return Err(ServiceError::validation(field, format!("no group {g}")));
                    }
                    None
                }
                Principal::Domain(_) | Principal::Everyone => None,
            };
            let Some(scope) = scope else { continue };
            let admitted = scope.admits(p, identity.as_ref())
                || (matches!(p, Principal::Group(_)) && self.group_within(scope, p).await?);
            if !admitted {
                return Err(ServiceError::OutOfScope { field: field.to_owned(), principal: p.to_string() });
            }
        }
        Ok(())
    }

    /// Whether a group that the scope's entries do not name is still inside it: not denied as a whole, and every
    /// user in it (through nesting) in scope. Access is evaluated per user at use anyway; this keeps role lists
    /// from naming groups that reach outside the category's scope.
    async fn group_within(&self, scope: &Scope, group: &Principal) -> ServiceResult<bool> {
        if scope.denied.contains(group) {
            return Ok(false);
        }
        let users = self.expand_users(std::slice::from_ref(group)).await?;
        if users.is_empty() {
            return Ok(false);
        }
        for address in users {
            let Ok(a) = Address::parse("user", &address) else { return Ok(false) };
            let identity = Identity::new(a, self.store.user_groups(&address).await?);
            if !scope.contains(&identity) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The users a set of principals designates (for invitations).
    async fn expand_users(&self, principals: &[Principal]) -> ServiceResult<BTreeSet<String>> {
        let mut users = BTreeSet::new();
        let mut groups_seen = BTreeSet::new();
        let mut pending: Vec<Principal> = principals.to_vec();
        while let Some(p) = pending.pop() {
            match p {
                Principal::User(a) => {
                    users.insert(a.to_string());
                }
                Principal::Group(g) => {
                    if groups_seen.insert(g.to_string()) {
                        for member in self.store.get_group(g.as_str()).await?.unwrap_or_default() {
                            if let Ok(p) = Principal::parse("member", &member) {
                                pending.push(p);
                            }
                        }
                    }
                }
                Principal::Domain(_) | Principal::Everyone => {
                    let mut after: Option<String> = None;
                    loop {
                        let page = self.store.search_users("", after.as_deref(), 500).await?;
                        let Some(last) = page.last() else { break };
                        after = Some(last.address.clone());
                        users.extend(
                            page.into_iter()
                                .filter(|u| match &p {
                                    Principal::Domain(d) => {
                                        Address::parse("a", &u.address).is_ok_and(|a| a.domain() == d)
                                    }
                                    _ => true,
                                })
                                .map(|u| u.address),
                        );
                    }
                }
            }
        }
        Ok(users)
    }

    // ---- categories --------------------------------------------------------------------------------------

    pub async fn resolve_category(&self, reference: &str) -> ServiceResult<CategoryRecord> {
        let found = match reference.strip_prefix("name:") {
            Some(name) => self.store.get_category_by_name(name).await?,
            None => self.store.get_category(reference).await?,
        };
        found.ok_or_else(|| ServiceError::not_found("category"))
    }

    pub async fn create_category(&self, caller: &Caller, input: api::NewCategory) -> ServiceResult<CategoryRecord> {
        require_admin(caller)?;
        let record = CategoryRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: Name::parse("name", &input.name)?.into_string(),
            description: Description::parse("description", input.description.as_deref().unwrap_or(""))?.into_string(),
            file_upload: input.file_upload.unwrap_or(false),
            chat_history: input.chat_history.unwrap_or(true),
            invitations: input.invitations.unwrap_or(false),
            allowed_members: opt_list("allowed_members", input.allowed_members)?,
            denied_members: opt_list("denied_members", input.denied_members)?,
            creators: opt_list("creators", input.creators)?,
            version: 1,
        };
        self.checked_principals("allowed_members", &record.allowed_members, None).await?;
        self.checked_principals("denied_members", &record.denied_members, None).await?;
        self.checked_principals("creators", &record.creators, Some(&scope_of(&record))).await?;
        let events = || {
            let details = json!({ "after": category_json(&record) });
            vec![self.event("CATEGORY_CREATED", None, caller.address(), record.name.clone(), details)]
        };
        self.audited(events, self.store.create_category(&record)).await?;
        Ok(record)
    }

    /// Administrators see every category; others those in whose scope they are.
    pub async fn get_category(&self, caller: &Caller, reference: &str) -> ServiceResult<CategoryRecord> {
        let category = self.resolve_category(reference).await?;
        if caller.admin || scope_of(&category).contains(&caller.identity) {
            Ok(category)
        } else {
            Err(ServiceError::not_found("category"))
        }
    }

    /// Categories the caller may see; with `creatable`, only those where the caller may create rooms (a creator
    /// in scope, or an administrator).
    pub async fn list_categories(&self, caller: &Caller, creatable: bool) -> ServiceResult<Vec<CategoryRecord>> {
        let all = self.store.list_categories().await?;
        Ok(all
            .into_iter()
            .filter(|c| {
                let scope = scope_of(c);
                if creatable {
                    may_create_room(&caller.identity, caller.admin, &scope, &c.creators)
                } else {
                    caller.admin || scope.contains(&caller.identity)
                }
            })
            .collect())
    }

    /// A category whose scope the caller may look into to pick people for role lists: administrators, the
    /// category's creators (in scope) and managers of a room in it. Who is in scope can say who is behind a wall
    /// (a group on the deny list), so nobody else learns it. A category the caller cannot see is `not_found`.
    pub(crate) async fn category_for_picking(&self, caller: &Caller, reference: &str) -> ServiceResult<Scope> {
        let category = self.get_category(caller, reference).await?;
        let scope = scope_of(&category);
        if may_create_room(&caller.identity, caller.admin, &scope, &category.creators) {
            return Ok(scope);
        }
        let mut after = None;
        loop {
            let q = RoomQuery { category_id: Some(category.id.clone()), after_name: after, limit: 500 };
            let page = self.store.list_rooms(&q).await?;
            if page.iter().any(|r| caller.identity.matches_any(&r.managers)) {
                return Ok(scope);
            }
            if page.len() < 500 {
                return Err(ServiceError::Forbidden(
                    "only the category's creators, managers of its rooms and administrators list its scope".into(),
                ));
            }
            after = page.last().map(|r| r.name.clone());
        }
    }

    /// Changes a category: only the fields the patch names, applied to the category as it is when written. The
    /// write is a compare-and-set on the category's version; when another change got in first, the patch is
    /// applied again to the new state (so concurrent edits never undo each other), unless the caller named the
    /// version it expects (`If-Match`), which then fails with `PreconditionFailed`.
    pub async fn update_category(
        &self,
        caller: &Caller,
        reference: &str,
        patch: api::CategoryPatch,
        expected_version: Option<i64>,
    ) -> ServiceResult<CategoryRecord> {
        require_admin(caller)?;
        let mut reference = reference.to_owned();
        for _ in 0..MAX_EDIT_ATTEMPTS {
            let before = self.resolve_category(&reference).await?;
            reference.clone_from(&before.id);
            if expected_version.is_some_and(|v| v != before.version) {
                return Err(ServiceError::PreconditionFailed);
            }
            let c = self.patched_category(&before, &patch).await?;
            let events = || {
                let details = json!({ "before": category_json(&before), "after": category_json(&c) });
                vec![self.event("CATEGORY_CHANGED", None, caller.address(), c.name.clone(), details)]
            };
            match self.audited(events, self.store.update_category(&c)).await {
                Ok(()) => {}
                Err(StoreError::Conflict) if expected_version.is_none() => continue,
                Err(StoreError::Conflict) => return Err(ServiceError::PreconditionFailed),
                Err(e) => return Err(e.into()),
            }
            self.changed_access(AccessScope::categories([c.id.clone()])).await;
            return Ok(CategoryRecord { version: c.version + 1, ..c });
        }
        Err(ServiceError::Conflict("the category keeps changing; try again".into()))
    }

    /// The category with the patch applied (validated), at the version it was computed from.
    async fn patched_category(
        &self,
        before: &CategoryRecord,
        patch: &api::CategoryPatch,
    ) -> ServiceResult<CategoryRecord> {
        let mut c = before.clone();
        if let Some(name) = &patch.name {
            c.name = Name::parse("name", name)?.into_string();
        }
        if let Some(d) = &patch.description {
            c.description = Description::parse("description", d)?.into_string();
        }
        c.file_upload = patch.file_upload.unwrap_or(c.file_upload);
        c.chat_history = patch.chat_history.unwrap_or(c.chat_history);
        c.invitations = patch.invitations.unwrap_or(c.invitations);
        if let Some(change) = &patch.allowed_members {
            let (list, added) = apply_change("allowed_members", &c.allowed_members, change)?;
            self.checked_principals("allowed_members", &added, None).await?;
            c.allowed_members = list;
        }
        if let Some(change) = &patch.denied_members {
            let (list, added) = apply_change("denied_members", &c.denied_members, change)?;
            self.checked_principals("denied_members", &added, None).await?;
            c.denied_members = list;
        }
        if let Some(change) = &patch.creators {
            let (list, added) = apply_change("creators", &c.creators, change)?;
            self.checked_principals("creators", &added, Some(&scope_of(&c))).await?;
            c.creators = list;
        }
        Ok(c)
    }

    pub async fn delete_category(&self, caller: &Caller, reference: &str) -> ServiceResult<()> {
        require_admin(caller)?;
        let c = self.resolve_category(reference).await?;
        let events = || {
            let details = json!({ "before": category_json(&c) });
            vec![self.event("CATEGORY_DELETED", None, caller.address(), c.name.clone(), details)]
        };
        Ok(self.audited(events, self.store.delete_category(&c.id)).await?)
    }

    // ---- add-ins -----------------------------------------------------------------------------------------

    fn addin_url(raw: &str) -> ServiceResult<String> {
        http_url(raw).ok_or_else(|| {
            ServiceError::validation("url", "must be an http:// or https:// URL of at most 2048 characters")
        })
    }

    pub async fn create_addin(&self, caller: &Caller, input: api::Addin) -> ServiceResult<AddinRecord> {
        require_admin(caller)?;
        let record =
            AddinRecord { name: Name::parse("name", &input.name)?.into_string(), url: Self::addin_url(&input.url)? };
        let events = || {
            let details = json!({ "after": addin_json(&record) });
            vec![self.event("ADDIN_CREATED", None, caller.address(), record.name.clone(), details)]
        };
        self.audited(events, self.store.create_addin(&record)).await?;
        Ok(record)
    }

    pub async fn get_addin(&self, _caller: &Caller, name: &str) -> ServiceResult<AddinRecord> {
        self.store.get_addin(name).await?.ok_or_else(|| ServiceError::not_found("add-in"))
    }

    pub async fn list_addins(&self, _caller: &Caller) -> ServiceResult<Vec<AddinRecord>> {
        Ok(self.store.list_addins().await?)
    }

    pub async fn update_addin(
        &self,
        caller: &Caller,
        name: &str,
        patch: api::AddinPatch,
    ) -> ServiceResult<AddinRecord> {
        require_admin(caller)?;
        let mut a = self.store.get_addin(name).await?.ok_or_else(|| ServiceError::not_found("add-in"))?;
        let before = a.clone();
        if let Some(n) = &patch.name {
            a.name = Name::parse("name", n)?.into_string();
        }
        if let Some(u) = &patch.url {
            a.url = Self::addin_url(u)?;
        }
        let events = || {
            let details = json!({ "before": addin_json(&before), "after": addin_json(&a) });
            vec![self.event("ADDIN_CHANGED", None, caller.address(), a.name.clone(), details)]
        };
        self.audited(events, self.store.update_addin(name, &a)).await?;
        Ok(a)
    }

    pub async fn delete_addin(&self, caller: &Caller, name: &str) -> ServiceResult<()> {
        require_admin(caller)?;
        let events = || vec![self.event("ADDIN_DELETED", None, caller.address(), name, json!({}))];
        self.audited(events, self.store.delete_addin(name)).await.map_err(|e| match ServiceError::from(e) {
            ServiceError::NotFound(_) => ServiceError::not_found("add-in"),
            other => other,
        })
    }

    async fn checked_addin(&self, raw: Option<&str>) -> ServiceResult<Option<String>> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => match self.store.get_addin(name).await? {
                Some(a) => Ok(Some(a.name)),
                None => Err(ServiceError::validation("addin", format!("no add-in {name}"))),
            },
        }
    }

    // ---- rooms -------------------------------------------------------------------------------------------

    pub async fn resolve_room(&self, reference: &str) -> ServiceResult<RoomRecord> {
        let found = match reference.strip_prefix("name:") {
            Some(name) => self.store.get_room_by_name(name).await?,
            None => self.store.get_room(reference).await?,
        };
        found.ok_or_else(|| ServiceError::not_found("room"))
    }

    /// The room with the caller's access to it; `not_found` when the caller may not see it.
    pub async fn room_view(&self, caller: &Caller, reference: &str) -> ServiceResult<(RoomView, CategoryRecord)> {
        let found = match reference.strip_prefix("name:") {
            Some(name) => self.store.room_with_category(name, true).await?,
            None => self.store.room_with_category(reference, false).await?,
        };
        let (room, category) = found.ok_or_else(|| ServiceError::not_found("room"))?;
        let access = access_to(caller, &category, &room);
        if !access.see {
            return Err(ServiceError::not_found("room"));
        }
        Ok((RoomView { room, access }, category))
    }

    /// Chat actions need the policy; administrative ones (by admins) do not.
    pub(crate) fn require_chat(caller: &Caller) -> ServiceResult<()> {
        if caller.chat_enabled { Ok(()) } else { Err(ServiceError::ChatDisabled) }
    }

    pub async fn create_room(&self, caller: &Caller, input: api::NewRoom) -> ServiceResult<RoomRecord> {
        if !caller.admin {
            Self::require_chat(caller)?;
        }
        let category = match self.resolve_category(&input.category).await {
            Ok(c) if caller.admin || scope_of(&c).contains(&caller.identity) => c,
            Ok(_) | Err(ServiceError::NotFound(_)) => {
                return Err(ServiceError::validation("category", format!("no category {}", input.category)));
            }
            Err(e) => return Err(e),
        };
        let scope = scope_of(&category);
        if !may_create_room(&caller.identity, caller.admin, &scope, &category.creators) {
            return Err(ServiceError::Forbidden(
                "only the category's creators and administrators create rooms in it".into(),
            ));
        }
        let privacy = input.privacy.as_deref().map(|p| Privacy::parse("privacy", p)).transpose()?.unwrap_or_default();
        let room_type = input.type_.as_deref().map(|t| RoomType::parse("type", t)).transpose()?.unwrap_or_default();
        let invitations =
            input.invitations.as_deref().map(|i| Invitations::parse("invitations", i)).transpose()?.unwrap_or_default();
        let members = opt_list("members", input.members)?;
        let mut managers = opt_list("managers", input.managers)?;
        let presenters = opt_list("presenters", input.presenters)?;
        check_lists(privacy, room_type, &members, &presenters)?;
        self.checked_principals("members", &members, Some(&scope)).await?;
        self.checked_principals("presenters", &presenters, Some(&scope)).await?;
        let creator = Principal::User(caller.identity.address.clone());
        if !managers.contains(&creator) && scope.contains(&caller.identity) {
            managers.push(creator);
        }
        self.checked_principals("managers", &managers, Some(&scope)).await?;
        let room = RoomRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: Name::parse("name", &input.name)?.into_string(),
            description: Description::parse("description", input.description.as_deref().unwrap_or(""))?.into_string(),
            category_id: category.id.clone(),
            privacy,
            room_type,
            invitations,
            disabled: input.disabled.unwrap_or(false),
            addin: self.checked_addin(input.addin.as_deref()).await?,
            members,
            managers,
            presenters,
            created_by: caller.address().to_owned(),
            created_at: now_micros(),
            version: 1,
        };
        let events = || {
            let details = json!({ "after": room_json(&room) });
            vec![self.event("ROOM_CREATED", Some(&room.id), caller.address(), room.name.clone(), details)]
        };
        self.audited(events, self.store.create_room(&room)).await?;
        let invitees: Vec<Principal> = room.members.iter().chain(&room.presenters).cloned().collect();
        self.invite(&category, &room, &invitees).await?;
        Ok(room)
    }

    /// Sends invitations to the users `added` designates, when the room and its category have them on.
    async fn invite(&self, category: &CategoryRecord, room: &RoomRecord, added: &[Principal]) -> ServiceResult<()> {
        if !category.invitations || room.invitations == Invitations::Off || room.disabled || added.is_empty() {
            return Ok(());
        }
        let scope = scope_of(category);
        // Group membership matters only when the scope names groups (a domain's every user is not read again).
        let needs_groups = scope.names_groups();
        let mut invitees = vec![];
        for address in self.expand_users(added).await? {
            let Ok(a) = Address::parse("user", &address) else {
                continue;
            };
            let groups = if needs_groups { self.store.user_groups(&address).await? } else { vec![] };
            let identity = Identity::new(a, groups);
            if scope.contains(&identity) {
                invitees.push(address);
            }
        }
        let created = self.store.add_invitations(&room.id, &invitees, now_micros()).await?;
        for inv in created {
            let (id, address, room_id, created_at) = (inv.id, inv.address, inv.room_id, inv.created_at);
            self.announce(ClusterEvent::Invitation { id, address, room_id, created_at }).await;
        }
        Ok(())
    }

    pub async fn get_room(&self, caller: &Caller, reference: &str) -> ServiceResult<RoomView> {
        Ok(self.room_view(caller, reference).await?.0)
    }

    /// The room directory: rooms the caller may see, by name, paged. A query finds rooms by the start of any word
    /// of their name (or description), and Chinese, Japanese or Korean names by any part ([`NameQuery`]), through
    /// the name index. Without a query, or when no word of it narrows the search to a few hundred rooms, it walks
    /// the rooms in name order (one category's through its index) and examines at most [`DIRECTORY_EXAMINED`] per
    /// request: a page can be short (even empty) and still have a continuation.
    pub async fn list_rooms(
        &self,
        caller: &Caller,
        filter: &RoomFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<(Vec<RoomView>, Option<String>)> {
        if !caller.admin {
            Self::require_chat(caller)?;
        }
        check_directory_query(filter.query.as_deref().unwrap_or_default())?;
        let mut after = cursor.map(decode_cursor).transpose()?;
        // A category the caller cannot see (or that does not exist) matches no room.
        let category_id = match &filter.category {
            Some(c) => match self.get_category(caller, c).await {
                Ok(category) => Some(category.id),
                Err(ServiceError::NotFound(_)) => return Ok((vec![], None)),
                Err(e) => return Err(e),
            },
            None => None,
        };
        let categories = self.store.list_categories().await?;
        let query = filter.query.as_deref().map(NameQuery::parse).filter(|q| !q.is_empty());
        let fields: &[DirectoryField] = if filter.search_description {
            &[DirectoryField::RoomName, DirectoryField::RoomDescription]
        } else {
            &[DirectoryField::RoomName]
        };
        let candidates = match &query {
            Some(query) => self.candidates(fields, query).await?,
            None => None,
        };
        // The rooms a non-administrator manages are on the role-list index (they stand on the managers list).
        let candidates = if filter.managed && !caller.admin {
            let mine = self.store.rooms_of(&role_principals(&caller.identity), &[]).await?;
            Some(mine.into_iter().filter(|r| candidates.as_ref().is_none_or(|c| c.contains(&r.id))).collect())
        } else {
            match candidates {
                Some(ids) => Some(self.store.rooms_of(&[], &ids.into_iter().collect::<Vec<_>>()).await?),
                None => None,
            }
        };
        let view = |room: RoomRecord| -> Option<RoomView> {
            let category = categories.iter().find(|c| c.id == room.category_id)?;
            let access = access_to(caller, category, &room);
            let matches = query
                .as_ref()
                .is_none_or(|q| q.matches(&room.name) || (filter.search_description && q.matches(&room.description)));
            let wanted = access.see
                && (access.manage || !filter.managed)
                && matches
                && filter.disabled.is_none_or(|d| d == room.disabled)
                && category_id.as_ref().is_none_or(|c| *c == room.category_id);
            wanted.then_some(RoomView { room, access })
        };
        let mut out = vec![];
        if let Some(rooms) = candidates {
            for room in rooms {
                if after.as_ref().is_some_and(|a| room.name <= *a) {
                    continue;
                }
                if let Some(v) = view(room) {
                    if out.len() == limit as usize {
                        let next = out.last().map(|v: &RoomView| encode_cursor(&v.room.name));
                        return Ok((out, next));
                    }
                    out.push(v);
                }
            }
            return Ok((out, None));
        }
        // Pages start small (most listings fill their page from the first rooms) and grow when rooms are skipped.
        let mut page = (limit + 1).min(500);
        let mut examined = 0;
        loop {
            let q = RoomQuery { category_id: category_id.clone(), after_name: after.clone(), limit: page };
            let rooms = self.store.list_rooms(&q).await?;
            let full = rooms.len() == page as usize;
            for room in rooms {
                examined += 1;
                after = Some(room.name.clone());
                if let Some(v) = view(room) {
                    if out.len() == limit as usize {
                        let next = out.last().map(|v: &RoomView| encode_cursor(&v.room.name));
                        return Ok((out, next));
                    }
                    out.push(v);
                }
                if examined >= DIRECTORY_EXAMINED {
                    return Ok((out, after.as_deref().map(encode_cursor)));
                }
            }
            if !full {
                return Ok((out, None));
            }
            page = (page * 4).min(500);
        }
    }

    /// Changes a room: only the fields the patch names, applied to the room as it is when written (see
    /// [`Service::update_category`] for the compare-and-set and `expected_version`).
    pub async fn update_room(
        &self,
        caller: &Caller,
        reference: &str,
        patch: api::RoomPatch,
        expected_version: Option<i64>,
    ) -> ServiceResult<RoomRecord> {
        let mut reference = reference.to_owned();
        for _ in 0..MAX_EDIT_ATTEMPTS {
            let (view, old_category) = self.room_view(caller, &reference).await?;
            reference.clone_from(&view.room.id);
            if !view.access.manage {
                return Err(ServiceError::Forbidden("only the room's managers and administrators change it".into()));
            }
            if expected_version.is_some_and(|v| v != view.room.version) {
                return Err(ServiceError::PreconditionFailed);
            }
            let old = view.room;
            let (room, category, invitees) = self.patched_room(caller, &old, old_category, &patch).await?;
            let events = || {
                let details = json!({ "before": room_json(&old), "after": room_json(&room) });
                let kind = room_change_kind(&old, &room);
                vec![self.event(kind, Some(&room.id), caller.address(), room.name.clone(), details)]
            };
            match self.audited(events, self.store.update_room(&room)).await {
                Ok(()) => {}
                Err(StoreError::Conflict) if expected_version.is_none() => continue,
                Err(StoreError::Conflict) => return Err(ServiceError::PreconditionFailed),
                Err(e) => return Err(e.into()),
            }
            // Users taken off a role list are named too, so that their invitations to the room are withdrawn even
            // where they have not joined it.
            let kept: BTreeSet<&Principal> =
                room.members.iter().chain(&room.managers).chain(&room.presenters).collect();
            let removed_users = old
                .members
                .iter()
                .chain(&old.managers)
                .chain(&old.presenters)
                .filter(|p| !kept.contains(p))
                .filter_map(|p| match p {
                    Principal::User(a) => Some(a.to_string()),
                    _ => None,
                });
            let scope =
                AccessScope { rooms: vec![room.id.clone()], users: removed_users.collect(), ..AccessScope::default() };
            self.changed_access(scope).await;
            self.invite(&category, &room, &invitees).await?;
            return Ok(RoomRecord { version: room.version + 1, ..room });
        }
        Err(ServiceError::Conflict("the room keeps changing; try again".into()))
    }

    /// The room with the patch applied (validated), its category afterwards, and who to invite.
    async fn patched_room(
        &self,
        caller: &Caller,
        old: &RoomRecord,
        old_category: CategoryRecord,
        patch: &api::RoomPatch,
    ) -> ServiceResult<(RoomRecord, CategoryRecord, Vec<Principal>)> {
        let mut room = old.clone();
        let mut category = old_category;
        if let Some(target) = &patch.category {
            let target = self
                .resolve_category(target)
                .await
                .map_err(|_| ServiceError::validation("category", format!("no category {target}")))?;
            if target.id != old.category_id {
                let creator_there = may_create_room(&caller.identity, false, &scope_of(&target), &target.creators);
                if !caller.admin && !creator_there {
                    return Err(ServiceError::Forbidden(
                        "moving a room needs the admin role or being a creator in the target category".into(),
                    ));
                }
                // Role entries outside the new scope are dropped.
                let scope = scope_of(&target);
                for list in [&mut room.members, &mut room.managers, &mut room.presenters] {
                    let mut kept = vec![];
                    for p in list.drain(..) {
                        if self.checked_principals("members", std::slice::from_ref(&p), Some(&scope)).await.is_ok() {
                            kept.push(p);
                        }
                    }
                    *list = kept;
                }
                room.category_id = target.id.clone();
                category = target;
            }
        }
        if let Some(name) = &patch.name {
            room.name = Name::parse("name", name)?.into_string();
        }
        if let Some(d) = &patch.description {
            room.description = Description::parse("description", d)?.into_string();
        }
        if let Some(p) = &patch.privacy {
            room.privacy = Privacy::parse("privacy", p)?;
            if room.privacy == Privacy::Open && patch.members.is_none() {
                // An open room has no member list.
                room.members.clear();
            }
        }
        if let Some(t) = &patch.type_ {
            room.room_type = RoomType::parse("type", t)?;
            if room.room_type == RoomType::Normal && patch.presenters.is_none() {
                room.presenters.clear();
            }
        }
        if let Some(i) = &patch.invitations {
            room.invitations = Invitations::parse("invitations", i)?;
        }
        room.disabled = patch.disabled.unwrap_or(room.disabled);
        if let Some(addin) = &patch.addin {
            room.addin = self.checked_addin(addin.as_deref()).await?;
        }
        let scope = scope_of(&category);
        let mut invitees = vec![];
        for (field, change) in
            [("members", &patch.members), ("managers", &patch.managers), ("presenters", &patch.presenters)]
        {
            let Some(change) = change else { continue };
            let list = match field {
                "members" => &mut room.members,
                "managers" => &mut room.managers,
                _ => &mut room.presenters,
            };
            let (new, added) = apply_change(field, list, change)?;
            self.checked_principals(field, &added, Some(&scope)).await?;
            if field != "managers" {
                invitees.extend(added);
            }
            *list = new;
        }
        check_lists(room.privacy, room.room_type, &room.members, &room.presenters)?;
        Ok((room, category, invitees))
    }

    pub async fn delete_room(&self, caller: &Caller, reference: &str) -> ServiceResult<()> {
        require_admin(caller)?;
        let room = self.resolve_room(reference).await?;
        let events = || {
            let details = json!({ "before": room_json(&room) });
            vec![self.event("ROOM_DELETED", Some(&room.id), caller.address(), room.name.clone(), details)]
        };
        self.audited(events, self.store.delete_room(&room.id)).await?;
        self.changed_access(AccessScope::rooms([room.id.clone()])).await;
        self.sweep_room_files(&room.id).await;
        Ok(())
    }

    /// Who is connected to the room; empty and `suppressed` above the participant update limit.
    pub async fn participants(&self, caller: &Caller, reference: &str) -> ServiceResult<(Vec<(String, String)>, bool)> {
        Self::require_chat(caller)?;
        let (view, _) = self.room_view(caller, reference).await?;
        if !view.access.read {
            return Err(if view.room.disabled {
                ServiceError::RoomDisabled
            } else {
                ServiceError::Forbidden("only readers see the roster".into())
            });
        }
        let limit = self.effective_config().await?.participant_update_limit;
        self.hub.refresh_roster(&view.room.id, limit);
        Ok(match self.hub.participants(&view.room.id) {
            Some(list) => (list, false),
            None => (vec![], true),
        })
    }
}

/// Open rooms take no member list; only auditoriums take presenters.
fn check_lists(
    privacy: Privacy,
    room_type: RoomType,
    members: &[Principal],
    presenters: &[Principal],
) -> ServiceResult<()> {
    if privacy == Privacy::Open && !members.is_empty() {
        return Err(ServiceError::validation("members", "an open room has no member list"));
    }
    if room_type != RoomType::Auditorium && !presenters.is_empty() {
        return Err(ServiceError::validation("presenters", "only an auditorium has presenters"));
    }
    Ok(())
}
