//! The storage conformance suite: one set of behaviours every backend must show. A backend runs it with
//! [`conformance_tests!`](crate::conformance_tests), giving an async factory that returns a fresh, empty store
//! (its own database) per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use pchat_core::{ChatConfig, ConfigScope, Invitations, PolicyScope, Principal, Privacy, RoomType};

use crate::compliance::{Captured, ChainAnchor, ChainCheck, ChainKey, capture, is_keyed};
use crate::sessions::{NEVER, SessionRecord};
use crate::{
    AccessScope, AddinRecord, AdminRole, Archive, ArchivedEvent, CategoryRecord, ClusterEvent, EventQuery,
    MessageFilter, MessageRange, NewEvent, NewMessage, OutboxEvent, PresenceRecord, RoomQuery, RoomRecord,
    ServerRecord, Store, StoreError, StoreEvent, UserRecord,
};

mod directory_cases;
mod feed_cases;
mod file_cases;
pub use file_cases::files_become_ready_with_their_message_and_go_with_it;
mod search_cases;
pub use directory_cases::{finds_directory, the_directory_is_indexed_by_name, with_directory};
pub use feed_cases::{feeds_are_kept_per_owner, the_feed_limit_holds_under_concurrent_creations};
pub use search_cases::{
    append_for_indexing, finds_appended_messages, finds_history, found_ids, search_follows_history,
    search_in_few_rooms_of_a_common_word, search_table, with_history,
};

/// A store under test and whatever must live as long as it (a temporary directory, a database to drop).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case. `$make` is an expression evaluating to a future of
/// [`Harness`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            users, tokens_and_roles, sessions_expire_and_end, groups_and_nesting, caller_facts_read_together, group_cycles_rejected, policies_and_configs,
            categories, rooms, rooms_of_principals, addins, message_sequence_and_ranges, idempotent_append, unkept_messages,
            concurrent_appends_are_gap_free, concurrent_appends_across_rooms_with_retries, events_in_commit_order, alter_and_clear, follows_and_read_marks,
            invitations, delete_room_takes_its_content, published_events_come_back, server_registry, imports_keep_everything,
            pool_wide_presence, compliance_capture_is_transactional, search_table, search_follows_history,
            search_in_few_rooms_of_a_common_word,
            feeds_are_kept_per_owner, the_feed_limit_holds_under_concurrent_creations,
            files_become_ready_with_their_message_and_go_with_it, the_directory_is_indexed_by_name);
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness: $crate::conformance::Harness = $make.await;
                $crate::conformance::$name(&harness.store).await;
                drop(harness);
            }
        )*
    };
}

fn p(s: &str) -> Principal {
    Principal::parse("p", s).unwrap()
}

fn user(address: &str) -> UserRecord {
    UserRecord {
        address: address.to_owned(),
        display_name: format!("User {address}"),
        password_hash: "$argon2id$stub".to_owned(),
        created_at: 1,
    }
}

fn category(id: &str, name: &str) -> CategoryRecord {
    CategoryRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        description: String::new(),
        file_upload: false,
        chat_history: true,
        invitations: false,
        allowed_members: vec![p("*")],
        denied_members: vec![p("group:walled")],
        creators: vec![p("lead@example.com")],
        version: 1,
    }
}

fn room(id: &str, name: &str, category_id: &str) -> RoomRecord {
    RoomRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        description: "about".to_owned(),
        category_id: category_id.to_owned(),
        privacy: Privacy::Closed,
        room_type: RoomType::Normal,
        invitations: Invitations::Inherit,
        disabled: false,
        addin: None,
        members: vec![p("a@example.com"), p("group:traders")],
        managers: vec![p("m@example.com")],
        presenters: vec![],
        created_by: "m@example.com".to_owned(),
        created_at: 42,
        version: 1,
    }
}

/// A kept, uncaptured post by `a@example.com`.
pub fn post(room_id: &str, id: &str, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        room_id: room_id.to_owned(),
        author: "a@example.com".to_owned(),
        text: text.to_owned(),
        story_title: None,
        alert: false,
        client_id: client_id.map(str::to_owned),
        keep: true,
        capture: false,
        file: None,
    }
}

async fn with_room(store: &dyn Store) {
    store.create_category(&category("c1", "Cat")).await.unwrap();
    store.create_room(&room("r1", "Room", "c1")).await.unwrap();
}

fn seqs(messages: &[crate::MessageRecord]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

pub async fn users(store: &Arc<dyn Store>) {
    store.create_user(user("a@example.com")).await.unwrap();
    store.create_user(user("b@example.com")).await.unwrap();
    assert!(matches!(store.create_user(user("a@example.com")).await, Err(StoreError::NameTaken)));
    assert_eq!(store.get_user("a@example.com").await.unwrap(), Some(user("a@example.com")));
    assert_eq!(store.get_user("zz@example.com").await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 2);
    let found = store.search_users("USER B", None, 10).await.unwrap();
    assert_eq!(found.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(), ["b@example.com"]);
    let page = store.search_users("example", Some("a@example.com"), 10).await.unwrap();
    assert_eq!(page.len(), 1);
    store.delete_user("a@example.com").await.unwrap();
    assert_eq!(store.get_user("a@example.com").await.unwrap(), None);
    assert!(matches!(store.delete_user("a@example.com").await, Err(StoreError::NotFound)));

    // A batch is created whole or not at all: an address taken already, or twice in the batch, creates nobody.
    let batch = |names: &[&str]| names.iter().map(|a| user(a)).collect::<Vec<_>>();
    let taken = store.create_users(batch(&["c@example.com", "b@example.com"])).await;
    assert!(matches!(taken, Err(StoreError::NameTaken)), "{taken:?}");
    let twice = store.create_users(batch(&["c@example.com", "d@example.com", "c@example.com"])).await;
    assert!(matches!(twice, Err(StoreError::NameTaken)), "{twice:?}");
    assert_eq!(store.count_users().await.unwrap(), 1, "nothing of a refused batch stays");
    store.create_users(batch(&["c@example.com", "d@example.com", "e@example.com"])).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 4);
    assert_eq!(store.get_user("d@example.com").await.unwrap(), Some(user("d@example.com")));
    store.create_users(vec![]).await.unwrap();
}

fn session(id: &str, hash: &str, address: &str, created_at: i64, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        token_hash: hash.to_owned(),
        address: address.to_owned(),
        created_at,
        last_used_at: created_at,
        expires_at,
        client: "127.0.0.1 test".to_owned(),
    }
}

pub async fn tokens_and_roles(store: &Arc<dyn Store>) {
    store.create_user(user("a@example.com")).await.unwrap();
    store.create_session(&session("s1", "h1", "a@example.com", 5, 100)).await.unwrap();
    assert_eq!(store.session("h1").await.unwrap().map(|s| s.address).as_deref(), Some("a@example.com"));
    assert!(store.end_session("h1").await.unwrap().is_some());
    assert_eq!(store.session("h1").await.unwrap(), None);
    assert!(store.end_session("h1").await.unwrap().is_none(), "ending twice ends nothing");
    store.set_role("a@example.com", AdminRole::Admin, true).await.unwrap();
    store.set_role("a@example.com", AdminRole::Admin, true).await.unwrap();
    store.set_role("a@example.com", AdminRole::UserAdmin, true).await.unwrap();
    let mut roles = store.list_roles().await.unwrap();
    roles.sort_by_key(|(_, r)| r.as_str());
    assert_eq!(
        roles,
        [("a@example.com".to_owned(), AdminRole::Admin), ("a@example.com".to_owned(), AdminRole::UserAdmin)]
    );
    // The only administrator keeps the role: neither revoking it nor deleting its holder works.
    assert!(matches!(
        store.set_role("a@example.com", AdminRole::Admin, false).await,
        Err(StoreError::LastAdministrator)
    ));
    assert!(matches!(store.delete_user("a@example.com").await, Err(StoreError::LastAdministrator)));
    store.create_user(user("b@example.com")).await.unwrap();
    store.set_role("b@example.com", AdminRole::Admin, true).await.unwrap();
    store.set_role("a@example.com", AdminRole::Admin, false).await.unwrap();
    assert_eq!(store.list_roles().await.unwrap().len(), 2);
    // Two administrators taking the role from each other at once: one of them keeps it.
    store.set_role("a@example.com", AdminRole::Admin, true).await.unwrap();
    let (x, y) = tokio::join!(
        store.set_role("a@example.com", AdminRole::Admin, false),
        store.set_role("b@example.com", AdminRole::Admin, false)
    );
    assert!(x.is_ok() != y.is_ok(), "exactly one revocation succeeds: {x:?} {y:?}");
    let admins = store.list_roles().await.unwrap().into_iter().filter(|(_, r)| *r == AdminRole::Admin).count();
    assert_eq!(admins, 1);
    store.set_role("b@example.com", AdminRole::Admin, true).await.unwrap();
    store.set_role("a@example.com", AdminRole::Admin, true).await.unwrap();
    store.set_role("a@example.com", AdminRole::Admin, false).await.unwrap();
    store.create_session(&session("s2", "h2", "a@example.com", 5, 100)).await.unwrap();
    store.delete_user("a@example.com").await.unwrap();
    assert_eq!(store.session("h2").await.unwrap(), None, "deleting a user ends their sessions");
    let left: Vec<String> = store.list_roles().await.unwrap().into_iter().map(|(a, _)| a).collect();
    assert_eq!(left, ["b@example.com"], "and their roles");
}

pub async fn sessions_expire_and_end(store: &Arc<dyn Store>) {
    store.create_user(user("a@example.com")).await.unwrap();
    store.create_user(user("b@example.com")).await.unwrap();
    store.create_session(&session("s1", "h1", "a@example.com", 10, 1000)).await.unwrap();
    store.create_session(&session("s2", "h2", "a@example.com", 20, 1000)).await.unwrap();
    store.create_session(&session("s3", "h3", "a@example.com", 30, NEVER)).await.unwrap();
    store.create_session(&session("s4", "h4", "b@example.com", 40, 1000)).await.unwrap();
    assert!(
        matches!(store.create_session(&session("s5", "h1", "b@example.com", 1, 2)).await, Err(StoreError::NameTaken)),
        "a token hash is one session"
    );

    // Use moves forward only.
    store.touch_session("h1", 500).await.unwrap();
    store.touch_session("h1", 400).await.unwrap();
    assert_eq!(store.session("h1").await.unwrap().unwrap().last_used_at, 500);
    let ids: Vec<String> = store.sessions_of("a@example.com").await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["s3", "s2", "s1"], "newest first, only the user's own");
    let by_id = store.session_by_id("s1").await.unwrap().expect("s1 by its public id");
    assert_eq!((by_id.token_hash.as_str(), by_id.last_used_at), ("h1", 500));
    assert_eq!(store.session_by_id("h1").await.unwrap(), None, "a token hash is not an id");

    // By id, only the user's own session ends.
    assert!(matches!(store.end_session_by_id("b@example.com", "s2").await, Err(StoreError::NotFound)));
    store.end_session_by_id("a@example.com", "s2").await.unwrap();
    assert!(store.session("h2").await.unwrap().is_none());

    // A purge takes what ended or idled, never what never ends.
    store.create_session(&session("s6", "h6", "a@example.com", 50, 60)).await.unwrap();
    assert_eq!(store.purge_sessions(100, 0).await.unwrap(), 1, "s6 ended at 60");
    assert_eq!(store.purge_sessions(100, 450).await.unwrap(), 1, "s4 was last used at 40");
    assert!(store.session("h1").await.unwrap().is_some(), "s1 was used at 500");
    assert!(store.session("h3").await.unwrap().is_some(), "s3 never ends");

    // A password change ends the other sessions with it, atomically; an unknown user changes nothing.
    store.create_session(&session("s7", "h7", "a@example.com", 60, 1000)).await.unwrap();
    assert_eq!(store.set_password("a@example.com", "$argon2id$new", Some("h7")).await.unwrap(), 2);
    assert_eq!(store.get_user("a@example.com").await.unwrap().unwrap().password_hash, "$argon2id$new");
    let left: Vec<String> = store.sessions_of("a@example.com").await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(left, ["s7"]);
    assert!(matches!(store.set_password("nobody@example.com", "$x", None).await, Err(StoreError::NotFound)));
    assert_eq!(store.end_sessions("a@example.com", None).await.unwrap(), 1);
    assert!(store.sessions_of("a@example.com").await.unwrap().is_empty());
}

pub async fn groups_and_nesting(store: &Arc<dyn Store>) {
    for g in ["traders", "desk", "floor"] {
        store.create_group(g).await.unwrap();
    }
    assert!(matches!(store.create_group("desk").await, Err(StoreError::NameTaken)));
    store.update_group("desk", &["a@example.com".into()], &[]).await.unwrap();
    store.update_group("traders", &["group:desk".into(), "b@example.com".into()], &[]).await.unwrap();
    store.update_group("floor", &["group:traders".into()], &[]).await.unwrap();
    let mut groups = store.user_groups("a@example.com").await.unwrap();
    groups.sort();
    assert_eq!(groups, ["desk", "floor", "traders"]);
    assert_eq!(store.user_groups("b@example.com").await.unwrap().len(), 2);
    assert!(store.user_groups("nobody@example.com").await.unwrap().is_empty());
    let members = store.update_group("traders", &[], &["b@example.com".into()]).await.unwrap();
    assert_eq!(members, ["group:desk"]);
    assert!(matches!(store.update_group("nope", &[], &[]).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_groups().await.unwrap(), ["desk", "floor", "traders"]);
    store.delete_group("desk").await.unwrap();
    assert_eq!(store.get_group("desk").await.unwrap(), None);
    assert_eq!(store.get_group("traders").await.unwrap(), Some(vec![]), "membership in a deleted group goes with it");
}

/// A user's groups (nesting followed), roles and policies along a chain, read together as the separate reads
/// give them.
pub async fn caller_facts_read_together(store: &Arc<dyn Store>) {
    use pchat_core::{Address, Name};
    store.create_user(user("a@example.com")).await.unwrap();
    store.create_user(user("b@example.com")).await.unwrap();
    for g in ["desk", "floor"] {
        store.create_group(g).await.unwrap();
    }
    store.update_group("desk", &["a@example.com".into()], &[]).await.unwrap();
    store.update_group("floor", &["group:desk".into()], &[]).await.unwrap();
    store.set_role("a@example.com", AdminRole::UserAdmin, true).await.unwrap();
    store.set_role("b@example.com", AdminRole::Admin, true).await.unwrap();
    let a = Address::parse("a", "a@example.com").unwrap();
    let chain = PolicyScope::chain(&a, &Name::parse("s", "site1").unwrap(), &Name::parse("p", "pool1").unwrap());
    store.put_policy(&chain[0], false).await.unwrap();
    store.put_policy(&chain[2], true).await.unwrap();
    let facts = store.caller_facts("a@example.com", &chain).await.unwrap().unwrap();
    assert_eq!(facts.user, user("a@example.com"));
    assert_eq!(facts.groups, ["desk", "floor"]);
    assert_eq!(facts.roles, [AdminRole::UserAdmin]);
    assert_eq!(facts.policies, [Some(false), None, Some(true), None]);
    let b = store.caller_facts("b@example.com", &chain[1..]).await.unwrap().unwrap();
    assert_eq!((b.groups.len(), b.roles, b.policies), (0, vec![AdminRole::Admin], vec![None, Some(true), None]));
    assert_eq!(store.caller_facts("nobody@example.com", &chain).await.unwrap(), None);
}

pub async fn group_cycles_rejected(store: &Arc<dyn Store>) {
    for g in ["a", "b", "c"] {
        store.create_group(g).await.unwrap();
    }
    store.update_group("a", &["group:b".into()], &[]).await.unwrap();
    store.update_group("b", &["group:c".into()], &[]).await.unwrap();
    let err = store.update_group("c", &["group:a".into(), "x@example.com".into()], &[]).await;
    assert!(matches!(err, Err(StoreError::GroupCycle)), "{err:?}");
    assert_eq!(store.get_group("c").await.unwrap(), Some(vec![]), "a rejected change writes nothing");
    assert!(matches!(store.update_group("a", &["group:a".into()], &[]).await, Err(StoreError::GroupCycle)));
}

pub async fn policies_and_configs(store: &Arc<dyn Store>) {
    let site = PolicyScope::parse("site:emea").unwrap();
    assert_eq!(store.get_policy(&PolicyScope::Global).await.unwrap(), None);
    store.put_policy(&PolicyScope::Global, true).await.unwrap();
    store.put_policy(&site, false).await.unwrap();
    store.put_policy(&site, true).await.unwrap();
    assert_eq!(store.get_policy(&site).await.unwrap(), Some(true));
    assert!(store.delete_policy(&site).await.unwrap());
    assert!(!store.delete_policy(&site).await.unwrap());
    assert_eq!(store.get_policy(&PolicyScope::Global).await.unwrap(), Some(true));

    let pool = ConfigScope::parse("pool:pc1").unwrap();
    let config = ChatConfig { default_chat_history: 99, ..ChatConfig::default() };
    store.put_config(&pool, &config).await.unwrap();
    assert_eq!(store.get_config(&pool).await.unwrap(), Some(config));
    assert_eq!(store.get_config(&ConfigScope::Global).await.unwrap(), None);
    assert!(store.delete_config(&pool).await.unwrap());
    assert_eq!(store.get_config(&pool).await.unwrap(), None);
}

pub async fn categories(store: &Arc<dyn Store>) {
    let c = category("c1", "Trading");
    store.create_category(&c).await.unwrap();
    assert!(matches!(store.create_category(&category("c2", "Trading")).await, Err(StoreError::NameTaken)));
    store.create_category(&category("c2", "Research")).await.unwrap();
    assert_eq!(store.get_category("c1").await.unwrap(), Some(c.clone()));
    assert_eq!(store.get_category_by_name("Research").await.unwrap().map(|c| c.id), Some("c2".to_owned()));
    let names: Vec<_> = store.list_categories().await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["Research", "Trading"]);
    let mut renamed = c.clone();
    renamed.name = "Research".into();
    assert!(matches!(store.update_category(&renamed).await, Err(StoreError::NameTaken)));
    renamed.name = "Trading desk".into();
    renamed.file_upload = true;
    renamed.denied_members.clear();
    store.update_category(&renamed).await.unwrap();
    renamed.version = 2;
    assert_eq!(store.get_category("c1").await.unwrap(), Some(renamed.clone()));
    // An update computed from an older version changes nothing.
    let mut stale = renamed.clone();
    stale.version = 1;
    stale.description = "stale".into();
    assert!(matches!(store.update_category(&stale).await, Err(StoreError::Conflict)));
    assert_eq!(store.get_category("c1").await.unwrap(), Some(renamed));
    store.create_room(&room("r1", "Room", "c1")).await.unwrap();
    assert!(matches!(store.delete_category("c1").await, Err(StoreError::CategoryNotEmpty)));
    store.delete_room("r1").await.unwrap();
    store.delete_category("c1").await.unwrap();
    assert!(matches!(store.delete_category("c1").await, Err(StoreError::NotFound)));
}

pub async fn rooms(store: &Arc<dyn Store>) {
    store.create_category(&category("c1", "Cat")).await.unwrap();
    store.create_category(&category("c2", "Dog")).await.unwrap();
    let r = room("r1", "Beta", "c1");
    store.create_room(&r).await.unwrap();
    assert!(matches!(store.create_room(&room("r2", "Beta", "c1")).await, Err(StoreError::NameTaken)));
    store.create_room(&room("r2", "Alpha", "c2")).await.unwrap();
    store.create_room(&room("r3", "Gamma", "c1")).await.unwrap();
    assert_eq!(store.get_room("r1").await.unwrap(), Some(r.clone()));
    assert_eq!(store.get_room_by_name("Alpha").await.unwrap().map(|r| r.id), Some("r2".into()));
    let (found, category) = store.room_with_category("r2", false).await.unwrap().unwrap();
    assert_eq!((found.name.as_str(), category.name.as_str()), ("Alpha", "Dog"));
    let (found, category) = store.room_with_category("Gamma", true).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), category.id.as_str()), ("r3", "c1"));
    assert_eq!(store.room_with_category("nope", false).await.unwrap(), None);
    assert_eq!(store.room_with_category("r2", true).await.unwrap(), None, "an id is not a name");
    let names = |rooms: Vec<RoomRecord>| rooms.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_rooms(&RoomQuery { limit: 10, ..Default::default() }).await.unwrap()),
        ["Alpha", "Beta", "Gamma"]
    );
    let q = RoomQuery { category_id: Some("c1".into()), after_name: Some("Beta".into()), limit: 10 };
    assert_eq!(names(store.list_rooms(&q).await.unwrap()), ["Gamma"]);
    assert_eq!(names(store.list_rooms(&RoomQuery { limit: 1, ..Default::default() }).await.unwrap()), ["Alpha"]);
    let mut changed = r.clone();
    changed.name = "Alpha".into();
    assert!(matches!(store.update_room(&changed).await, Err(StoreError::NameTaken)));
    changed.name = "Beta 2".into();
    changed.category_id = "c2".into();
    changed.privacy = Privacy::Secret;
    changed.room_type = RoomType::Auditorium;
    changed.invitations = Invitations::Off;
    changed.disabled = true;
    changed.presenters = vec![p("group:anchors")];
    changed.members.clear();
    store.update_room(&changed).await.unwrap();
    let mut stale = changed.clone();
    changed.version = 2;
    assert_eq!(store.get_room("r1").await.unwrap(), Some(changed.clone()));
    // An update computed from an older version changes nothing.
    stale.disabled = false;
    assert!(matches!(store.update_room(&stale).await, Err(StoreError::Conflict)));
    assert_eq!(store.get_room("r1").await.unwrap(), Some(changed));
    let mut ghost = r;
    ghost.id = "nope".into();
    ghost.name = "Ghost".into();
    assert!(matches!(store.update_room(&ghost).await, Err(StoreError::NotFound)));
}

/// The role-list index: rooms of a principal follow every create, change and delete, whatever the principal's
/// characters, and followed rooms come with them.
pub async fn rooms_of_principals(store: &Arc<dyn Store>) {
    store.create_category(&category("c1", "Cat")).await.unwrap();
    let odd = p(r#"group:desk "a" \ b"#);
    let mut a = room("r1", "Alpha", "c1");
    a.members = vec![p("a@example.com"), odd.clone()];
    a.managers = vec![p("a@example.com")];
    let mut b = room("r2", "Beta", "c1");
    b.members = vec![p("domain:example.com")];
    b.presenters = vec![p("*")];
    b.room_type = RoomType::Auditorium;
    let c = room("r3", "Gamma", "c1");
    for r in [&a, &b, &c] {
        store.create_room(r).await.unwrap();
    }
    let of = |principals: &[&str], ids: &[&str]| {
        let principals: Vec<String> = principals.iter().map(|s| (*s).to_owned()).collect();
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        let store = Arc::clone(store);
        async move { store.rooms_of(&principals, &ids).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>() }
    };
    assert_eq!(of(&["a@example.com"], &[]).await, ["r1", "r3"], "member or manager, once each, by name");
    assert_eq!(of(&[&odd.to_string()], &[]).await, ["r1"]);
    assert_eq!(of(&["domain:example.com", "*"], &[]).await, ["r2"]);
    assert_eq!(of(&["m@example.com"], &["r1"]).await, ["r1", "r2", "r3"], "managers, and the rooms asked for");
    assert!(of(&["nobody@example.com", "group:none"], &["missing"]).await.is_empty());
    // A change of the lists moves the room; a change of anything else keeps it.
    let mut changed = store.get_room("r1").await.unwrap().unwrap();
    changed.members = vec![p("z@example.com")];
    changed.managers = vec![];
    store.update_room(&changed).await.unwrap();
    assert_eq!(of(&["a@example.com"], &[]).await, ["r3"]);
    assert_eq!(of(&["z@example.com"], &[]).await, ["r1"]);
    let mut renamed = store.get_room("r1").await.unwrap().unwrap();
    renamed.name = "Aleph".into();
    store.update_room(&renamed).await.unwrap();
    assert_eq!(of(&["z@example.com"], &[]).await, ["r1"]);
    store.delete_room("r1").await.unwrap();
    assert!(of(&["z@example.com"], &["r1"]).await.is_empty(), "a deleted room leaves the index");
}

pub async fn addins(store: &Arc<dyn Store>) {
    let a = AddinRecord { name: "Tracker".into(), url: "https://t.example.com".into() };
    store.create_addin(&a).await.unwrap();
    assert!(matches!(store.create_addin(&a).await, Err(StoreError::NameTaken)));
    store.create_category(&category("c1", "Cat")).await.unwrap();
    let mut r = room("r1", "Room", "c1");
    r.addin = Some("Tracker".into());
    store.create_room(&r).await.unwrap();
    let renamed = AddinRecord { name: "Tracker2".into(), url: "https://t2.example.com".into() };
    store.update_addin("Tracker", &renamed).await.unwrap();
    let after_rename = store.get_room("r1").await.unwrap().unwrap();
    assert_eq!(after_rename.addin.as_deref(), Some("Tracker2"));
    assert_eq!(after_rename.version, 2, "a room's version moves on when its add-in is renamed");
    assert_eq!(store.list_addins().await.unwrap(), [renamed]);
    store.delete_addin("Tracker2").await.unwrap();
    let after_delete = store.get_room("r1").await.unwrap().unwrap();
    assert_eq!((after_delete.addin, after_delete.version), (None, 3));
    // So an edit computed before the deletion cannot write the old add-in back.
    assert!(matches!(store.update_room(&after_rename).await, Err(StoreError::Conflict)));
    assert!(matches!(store.delete_addin("Tracker2").await, Err(StoreError::NotFound)));
}

pub async fn message_sequence_and_ranges(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    assert_eq!(store.last_seq("r1").await.unwrap(), 0);
    for i in 1..=10 {
        let appended = store.append_message(post("r1", &format!("m{i}"), &format!("text {i}"), None)).await.unwrap();
        assert!(appended.created);
        assert_eq!(appended.message.seq, i);
    }
    assert_eq!(store.last_seq("r1").await.unwrap(), 10);
    let all = store.messages("r1", MessageRange::After { after: 0, limit: 100 }).await.unwrap();
    assert_eq!(seqs(&all), (1..=10).collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].ts <= w[1].ts), "server time never goes backwards within a room");
    assert_eq!(all[2].text, "text 3");
    assert_eq!(seqs(&store.messages("r1", MessageRange::Latest { limit: 3 }).await.unwrap()), [8, 9, 10]);
    assert_eq!(seqs(&store.messages("r1", MessageRange::Before { before: 5, limit: 2 }).await.unwrap()), [3, 4]);
    assert_eq!(seqs(&store.messages("r1", MessageRange::After { after: 7, limit: 2 }).await.unwrap()), [8, 9]);
    assert!(matches!(store.append_message(post("nope", "x", "t", None)).await, Err(StoreError::NotFound)));
    let mut disabled = store.get_room("r1").await.unwrap().unwrap();
    disabled.disabled = true;
    store.update_room(&disabled).await.unwrap();
    assert!(matches!(store.append_message(post("r1", "x", "t", None)).await, Err(StoreError::RoomDisabled)));
    assert_eq!(store.last_seq("r1").await.unwrap(), 10, "a refused post assigns no seq");
}

pub async fn idempotent_append(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    let first = store.append_message(post("r1", "m1", "hello", Some("c-1"))).await.unwrap();
    let again = store.append_message(post("r1", "m2", "hello again", Some("c-1"))).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(again.message, first.message);
    assert_eq!(store.last_seq("r1").await.unwrap(), 1);
    store.create_room(&room("r2", "Other", "c1")).await.unwrap();
    let other = store.append_message(post("r2", "m3", "x", Some("c-1"))).await.unwrap();
    assert!(other.created, "client ids are per room");
}

pub async fn unkept_messages(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    let mut m = post("r1", "m1", "ephemeral", None);
    m.keep = false;
    let appended = store.append_message(m).await.unwrap();
    assert_eq!(appended.message.seq, 1);
    store.append_message(post("r1", "m2", "kept", None)).await.unwrap();
    let kept = store.messages("r1", MessageRange::After { after: 0, limit: 10 }).await.unwrap();
    assert_eq!(seqs(&kept), [2]);
}

pub async fn concurrent_appends_are_gap_free(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut seqs = vec![];
                for i in 0..EACH {
                    let m = post("r1", &format!("w{w}-{i}"), "t", Some(&format!("w{w}-{i}")));
                    seqs.push(store.append_message(m).await.unwrap().message.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        let mine = t.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one writer's posts keep their order");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=(WRITERS * EACH) as i64).collect::<Vec<_>>(), "no gaps, no duplicates");
    let stored = store.messages("r1", MessageRange::After { after: 0, limit: 1000 }).await.unwrap();
    assert_eq!(stored.len(), WRITERS * EACH);
}

/// Posts to several rooms at once, each sent twice with one `client_id`, beside posts to a missing and a disabled
/// room (a backend that commits posts in batches sees all of these in one batch): each room's `seq` is gap-free,
/// each retry gets the original, and only the posts to the missing and the disabled room fail.
pub async fn concurrent_appends_across_rooms_with_retries(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    let rooms = ["r1", "r2", "r3", "r4"];
    for id in &rooms[1..] {
        store.create_room(&room(id, &format!("Room {id}"), "c1")).await.unwrap();
    }
    store.create_room(&RoomRecord { disabled: true, ..room("off", "Off", "c1") }).await.unwrap();
    const WRITERS: usize = 3;
    const EACH: usize = 15;
    let mut tasks = vec![];
    for r in rooms {
        for w in 0..WRITERS {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let mut seqs = vec![];
                for i in 0..EACH {
                    let key = format!("{r}-w{w}-{i}");
                    let (a, b) = tokio::join!(
                        store.append_message(post(r, &format!("{key}-a"), "t", Some(&key))),
                        store.append_message(post(r, &format!("{key}-b"), "t", Some(&key)))
                    );
                    let (a, b) = (a.unwrap(), b.unwrap());
                    assert_eq!(a.message.id, b.message.id, "a retry gets the original");
                    assert_eq!(a.message.seq, b.message.seq);
                    assert!(a.created != b.created, "exactly one of the two is new");
                    seqs.push(a.message.seq);
                }
                (r, seqs)
            }));
        }
    }
    let refused: Vec<_> = ["nowhere", "off"]
        .into_iter()
        .map(|r| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.append_message(post(r, &format!("{r}-x"), "t", None)).await })
        })
        .collect();
    let mut by_room: std::collections::BTreeMap<&str, Vec<i64>> = std::collections::BTreeMap::new();
    for t in tasks {
        let (r, seqs) = t.await.unwrap();
        by_room.entry(r).or_default().extend(seqs);
    }
    for (r, mut seqs) in by_room {
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=(WRITERS * EACH) as i64).collect::<Vec<_>>(), "room {r}: no gaps, no duplicates");
        let stored = store.messages(r, MessageRange::After { after: 0, limit: 1000 }).await.unwrap();
        assert_eq!(stored.len(), WRITERS * EACH, "room {r}");
        assert_eq!(store.last_seq(r).await.unwrap(), (WRITERS * EACH) as i64, "room {r}");
    }
    let mut refused = refused.into_iter();
    assert!(matches!(refused.next().unwrap().await.unwrap(), Err(StoreError::NotFound)));
    assert!(matches!(refused.next().unwrap().await.unwrap(), Err(StoreError::RoomDisabled)));
    assert!(store.messages("off", MessageRange::After { after: 0, limit: 10 }).await.unwrap().is_empty());
}

pub async fn events_in_commit_order(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    let mut events = store.take_events().expect("the event feed can be taken once");
    assert!(store.take_events().is_none());
    for i in 1..=5 {
        store.append_message(post("r1", &format!("m{i}"), "t", None)).await.unwrap();
    }
    store.append_message(post("r1", "dup", "t", Some("k"))).await.unwrap();
    store.append_message(post("r1", "dup2", "t", Some("k"))).await.unwrap();
    let mut got = vec![];
    // Events may arrive just after the commit returns (a pool's backend hears its own notifications).
    while got.len() < 6 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await {
            Ok(Some(StoreEvent::MessagePosted(m))) => got.push(m.seq),
            Ok(Some(StoreEvent::DirectoryChanged | StoreEvent::Cluster(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    while let Ok(event) = events.try_recv() {
        if let StoreEvent::MessagePosted(m) = event {
            got.push(m.seq);
        }
    }
    assert_eq!(got, [1, 2, 3, 4, 5, 6], "one event per new message, none for an idempotent retry");
}

pub async fn alter_and_clear(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    for i in 1..=6 {
        let mut m = post("r1", &format!("m{i}"), &format!("text {i}"), None);
        if i % 2 == 0 {
            m.author = "b@example.com".into();
        }
        store.append_message(m).await.unwrap();
    }
    let by_b = store
        .find_messages("r1", &MessageFilter { author: Some("b@example.com".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seqs(&by_b), [2, 4, 6]);
    let all = store.messages("r1", MessageRange::After { after: 0, limit: 10 }).await.unwrap();
    let window = MessageFilter { start_ts: Some(all[1].ts), end_ts: Some(all[3].ts), author: None };
    assert!(seqs(&store.find_messages("r1", &window).await.unwrap()).starts_with(&[2]));
    assert_eq!(store.alter_messages("r1", &["m2".into()], Some("replaced text")).await.unwrap(), 1);
    let m2 = store.messages("r1", MessageRange::After { after: 1, limit: 1 }).await.unwrap();
    assert_eq!((m2[0].text.as_str(), m2[0].replaced), ("replaced text", true));
    assert_eq!(store.alter_messages("r1", &["m4".into(), "m6".into(), "nope".into()], None).await.unwrap(), 2);
    assert_eq!(seqs(&store.messages("r1", MessageRange::After { after: 0, limit: 10 }).await.unwrap()), [1, 2, 3, 5]);
    let cleared = store.clear_room("r1", all[2].ts).await.unwrap();
    assert!(cleared >= 3, "messages up to and including the end time go: {cleared}");
    let left = store.messages("r1", MessageRange::After { after: 0, limit: 10 }).await.unwrap();
    assert!(left.iter().all(|m| m.ts > all[2].ts));
    assert_eq!(store.last_seq("r1").await.unwrap(), 6, "seq values are never reused");
}

pub async fn follows_and_read_marks(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    store.create_user(user("a@example.com")).await.unwrap();
    store.set_follow("a@example.com", "r1", true).await.unwrap();
    store.set_follow("a@example.com", "r1", true).await.unwrap();
    assert_eq!(store.follows("a@example.com").await.unwrap(), ["r1"]);
    store.set_follow("a@example.com", "r1", false).await.unwrap();
    assert!(store.follows("a@example.com").await.unwrap().is_empty());
    store.mark_read("a@example.com", "r1", 5).await.unwrap();
    store.mark_read("a@example.com", "r1", 3).await.unwrap();
    assert_eq!(store.read_marks("a@example.com").await.unwrap(), [("r1".to_owned(), 5)]);
}

pub async fn invitations(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    store.create_room(&room("r2", "Other", "c1")).await.unwrap();
    let users = ["a@example.com".to_owned(), "b@example.com".to_owned()];
    let created = store.add_invitations("r1", &users, 10).await.unwrap();
    assert_eq!(created.len(), 2);
    assert!(store.add_invitations("r1", &users[..1], 11).await.unwrap().is_empty(), "one pending invitation per room");
    let later = store.add_invitations("r2", &users[..1], 12).await.unwrap();
    let mine = store.invitations("a@example.com", 0, 10).await.unwrap();
    assert_eq!(mine.iter().map(|i| i.room_id.as_str()).collect::<Vec<_>>(), ["r1", "r2"]);
    assert!(mine[0].id < mine[1].id);
    let after = store.invitations("a@example.com", mine[0].id, 10).await.unwrap();
    assert_eq!(after, later);
    // Withdrawing takes only that user's invitations to those rooms, and says which went.
    let withdrawn = store.withdraw_invitations("a@example.com", &["r2".into(), "r9".into()]).await.unwrap();
    assert_eq!(withdrawn, later);
    assert_eq!(store.invitations("a@example.com", 0, 10).await.unwrap(), mine[..1]);
    assert_eq!(store.invitations("b@example.com", 0, 10).await.unwrap().len(), 1);
    assert!(store.withdraw_invitations("a@example.com", &["r2".into()]).await.unwrap().is_empty());
    // A new invitation after a withdrawal gets a new, larger id.
    let again = store.add_invitations("r2", &users[..1], 13).await.unwrap();
    assert!(again[0].id > later[0].id);
}

pub async fn delete_room_takes_its_content(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    store.append_message(post("r1", "m1", "t", Some("k"))).await.unwrap();
    store.set_follow("a@example.com", "r1", true).await.unwrap();
    store.add_invitations("r1", &["a@example.com".to_owned()], 1).await.unwrap();
    store.delete_room("r1").await.unwrap();
    assert_eq!(store.get_room("r1").await.unwrap(), None);
    assert!(store.follows("a@example.com").await.unwrap().is_empty());
    assert!(store.invitations("a@example.com", 0, 10).await.unwrap().is_empty());
    assert!(matches!(store.delete_room("r1").await, Err(StoreError::NotFound)));
    // A new room with the same name starts its own sequence.
    store.create_room(&room("r9", "Room", "c1")).await.unwrap();
    assert_eq!(store.append_message(post("r9", "m2", "t", Some("k"))).await.unwrap().message.seq, 1);
    let ids: HashSet<_> =
        store.messages("r9", MessageRange::Latest { limit: 5 }).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, HashSet::from(["m2".to_owned()]));
}

pub async fn published_events_come_back(store: &Arc<dyn Store>) {
    let mut events = store.take_events().expect("the event feed can be taken once");
    let sent = [
        ClusterEvent::AccessChanged {
            origin: "server-a".into(),
            scope: AccessScope {
                everyone: false,
                users: vec!["a@example.com".into()],
                groups: vec!["Desk Heads".into(), "walled".into()],
                rooms: vec!["r1".into()],
                categories: vec!["c1".into()],
            },
        },
        ClusterEvent::AccessChanged { origin: "server-a".into(), scope: AccessScope::everyone() },
        ClusterEvent::MessagesReplaced {
            room_id: "r1".into(),
            ids: vec!["a".into(), "b".into()],
            text: "gone\nnow".into(),
        },
        ClusterEvent::Invitation { id: 7, address: "a@example.com".into(), room_id: "r1".into(), created_at: 5 },
        ClusterEvent::Follow { address: "a@example.com".into(), room_id: "r1".into(), follow: false },
        ClusterEvent::RoomCleared { room_id: "r1".into(), end_ts: -1 },
        ClusterEvent::MessagesRemoved { room_id: "r1".into(), ids: vec![] },
        ClusterEvent::Presence {
            server: "chat1:8080".into(),
            room_id: "r1".into(),
            address: "a@example.com".into(),
            display_name: "Ann O'Neil (Trading)".into(),
            present: true,
        },
        ClusterEvent::ServerGone { server: "chat1:8080".into() },
    ];
    // The first alone, the rest together (one statement on PostgreSQL): all come back in order.
    store.publish(sent[..1].to_vec()).await.unwrap();
    store.publish(sent[1..].to_vec()).await.unwrap();
    let mut got = vec![];
    while got.len() < sent.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await {
            Ok(Some(StoreEvent::Cluster(e))) => got.push(e),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(got, sent, "published events come back whole and in order");

    // A scope naming thousands of users may arrive in several events; together they name everyone it named.
    let users: Vec<String> = (0..3000).map(|i| format!("user{i:05}@example.com")).collect();
    let big = AccessScope { users: users.clone(), rooms: vec!["r1".into()], ..AccessScope::default() };
    store.publish(vec![ClusterEvent::AccessChanged { origin: "server-b".into(), scope: big }]).await.unwrap();
    let mut seen_users: HashSet<String> = HashSet::new();
    let mut seen_rooms: HashSet<String> = HashSet::new();
    while seen_users.len() < users.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await {
            Ok(Some(StoreEvent::Cluster(ClusterEvent::AccessChanged { origin, scope }))) => {
                assert_eq!(origin, "server-b");
                assert!(!scope.everyone);
                seen_users.extend(scope.users);
                seen_rooms.extend(scope.rooms);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(seen_users, users.into_iter().collect::<HashSet<_>>(), "every user of a large scope arrives");
    assert_eq!(seen_rooms, HashSet::from(["r1".to_owned()]));
}

pub async fn server_registry(store: &Arc<dyn Store>) {
    let server = |name: &str| ServerRecord {
        name: name.into(),
        url: format!("http://{name}"),
        started_at: 1,
        heartbeat_at: 1,
        active: true,
        connections: 0,
        database: "primary".into(),
    };
    assert!(store.register_server(&server("a:1")).await.unwrap());
    assert!(store.register_server(&server("b:1")).await.unwrap());
    assert!(store.heartbeat("a:1", 7, "backup", 50).await.unwrap());
    store.set_active(&[("b:1".into(), false)]).await.unwrap();
    assert!(!store.heartbeat("b:1", 0, "primary", 60).await.unwrap());
    // A restart keeps the operator's choice.
    assert!(!store.register_server(&server("b:1")).await.unwrap());
    let servers = store.list_servers().await.unwrap();
    assert_eq!(
        servers.iter().map(|s| (s.name.as_str(), s.active, s.connections, s.database.as_str())).collect::<Vec<_>>(),
        [("a:1", true, 7, "backup"), ("b:1", false, 0, "primary")]
    );
    assert_eq!(servers[0].heartbeat_at, 50);
    let err = store.set_active(&[("a:1".into(), false), ("ghost:1".into(), true)]).await;
    assert!(matches!(err, Err(StoreError::NotFound)), "{err:?}");
    assert!(store.list_servers().await.unwrap()[0].active, "a failed change changes nothing");
    assert!(matches!(store.heartbeat("ghost:1", 0, "primary", 1).await, Err(StoreError::NotFound)));
}

pub async fn pool_wide_presence(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    store.create_room(&room("r2", "Other", "c1")).await.unwrap();
    let at = |server: &str, room_id: &str, address: &str| PresenceRecord {
        server: server.into(),
        room_id: room_id.into(),
        address: address.into(),
        display_name: format!("User {address}"),
    };
    store.set_presence(&[(at("s2", "r1", "a@example.com"), true)]).await.unwrap();
    store.set_presence(&[(at("s1", "r1", "a@example.com"), true)]).await.unwrap();
    // One batch, applied in order: a repeat adds no duplicate, a later change of an entry wins, removing someone
    // absent does nothing.
    let batch = [
        (at("s1", "r1", "a@example.com"), true),
        (at("s1", "r2", "b@example.com"), true),
        (at("s1", "r2", "c@example.com"), true),
        (at("s1", "r2", "c@example.com"), false),
        (at("s1", "r2", "z@example.com"), false),
        (at("s1", "r2", "d@example.com"), false),
        (at("s1", "r2", "d@example.com"), true),
    ];
    store.set_presence(&batch).await.unwrap();
    store.set_presence(&[]).await.unwrap();
    assert_eq!(
        store.list_presence().await.unwrap(),
        [
            at("s1", "r1", "a@example.com"),
            at("s1", "r2", "b@example.com"),
            at("s1", "r2", "d@example.com"),
            at("s2", "r1", "a@example.com")
        ]
    );
    // A later batch removes an entry recorded before it and renames another.
    let renamed = PresenceRecord { display_name: "Renamed".into(), ..at("s1", "r1", "a@example.com") };
    store.set_presence(&[(at("s1", "r2", "b@example.com"), false), (renamed.clone(), true)]).await.unwrap();
    assert_eq!(
        store.list_presence().await.unwrap(),
        [renamed, at("s1", "r2", "d@example.com"), at("s2", "r1", "a@example.com")]
    );
    assert_eq!(store.clear_presence("s1").await.unwrap(), 2);
    assert_eq!(store.list_presence().await.unwrap(), [at("s2", "r1", "a@example.com")]);
    store.delete_room("r1").await.unwrap();
    assert!(store.list_presence().await.unwrap().is_empty(), "a deleted room takes its presence");
}

fn event(kind: &str, content: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        ts: 7,
        room_id: Some("r1".into()),
        actor: "a@example.com".into(),
        content: content.into(),
        details: "{}".into(),
    }
}

pub async fn compliance_capture_is_transactional(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    // Compliance and audit both, as an administrative action with capture on records.
    let both = |kind: &str, content: &str| Captured {
        compliance: vec![event(kind, content)],
        audit: vec![event(kind, content)],
    };
    // A write captures its events in its own transaction...
    let mut changed = room("r1", "Renamed", "c1");
    let (result, left) = capture(both("ROOM_CHANGED", "renamed"), store.update_room(&changed)).await;
    result.unwrap();
    assert!(left.is_empty(), "the backend took the events");
    // ...and a write that fails captures nothing.
    store.create_room(&room("r2", "Other", "c1")).await.unwrap();
    let clash = room("r2", "Renamed", "c1");
    let (result, _) = capture(both("ROOM_CHANGED", "clash"), store.update_room(&clash)).await;
    assert!(matches!(result, Err(StoreError::NameTaken)), "{result:?}");
    changed.version = 1;
    let (result, _) = capture(both("ROOM_CHANGED", "stale"), store.update_room(&changed)).await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    // Other kinds of writes capture too: single statements and multi-statement transactions.
    let (result, _) = capture(both("POLICY_CHANGED", "on"), store.put_policy(&PolicyScope::Global, true)).await;
    result.unwrap();
    let (result, _) = capture(both("ROOM_DELETED", "gone"), store.delete_room("r2")).await;
    result.unwrap();
    // With compliance off, administrative actions still reach the audit trail (and only it).
    let audit_only = Captured { compliance: vec![], audit: vec![event("GROUP_CREATED", "audited only")] };
    let (result, _) = capture(audit_only, store.create_group("g1")).await;
    result.unwrap();
    let audited: Vec<(String, String)> = store
        .audit_events(&EventQuery { limit: 100, ..EventQuery::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event.kind, r.event.content))
        .collect();
    let expected = [
        ("ROOM_CHANGED", "renamed"),
        ("POLICY_CHANGED", "on"),
        ("ROOM_DELETED", "gone"),
        ("GROUP_CREATED", "audited only"),
    ];
    assert_eq!(audited, expected.map(|(k, c)| (k.to_owned(), c.to_owned())));
    // The trail pages and filters like the compliance events.
    let all = store.audit_events(&EventQuery { limit: 100, ..EventQuery::default() }).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page =
        store.audit_events(&EventQuery { after_id: all[1].id, limit: 1, ..EventQuery::default() }).await.unwrap();
    assert_eq!(page, all[2..3]);
    let policy = EventQuery { kind: Some("POLICY_CHANGED".into()), limit: 10, ..EventQuery::default() };
    assert_eq!(store.audit_events(&policy).await.unwrap(), all[1..2]);
    // A message with capture on brings its CHAT event; a retry with the same client_id does not.
    let mut m = post("r1", "m1", "hello", Some("k1"));
    m.capture = true;
    store.append_message(m.clone()).await.unwrap();
    m.id = "m1-retry".into();
    assert!(!store.append_message(m).await.unwrap().created);
    store.append_message(post("r1", "m2", "not captured", None)).await.unwrap();
    store.record_events(&[event("BACKCHAT", "read"), event("JOIN", "")]).await.unwrap();

    let outbox = store.outbox(100).await.unwrap();
    let kinds: Vec<(&str, &str)> = outbox.iter().map(|o| (o.event.kind.as_str(), o.event.content.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("ROOM_CHANGED", "renamed"),
            ("POLICY_CHANGED", "on"),
            ("ROOM_DELETED", "gone"),
            ("CHAT", "hello"),
            ("BACKCHAT", "read"),
            ("JOIN", "")
        ]
    );
    assert!(outbox.windows(2).all(|w| w[0].id < w[1].id), "outbox ids increase");
    let chat = &outbox[3].event;
    assert_eq!((chat.actor.as_str(), chat.room_id.as_deref()), ("a@example.com", Some("r1")));
    assert!(chat.details.contains("\"message_id\":\"m1\"") && chat.details.contains("\"seq\":1"), "{}", chat.details);
    assert_eq!(store.outbox(2).await.unwrap().len(), 2);
    store.outbox_done(&[outbox[0].id, outbox[1].id]).await.unwrap();
    assert_eq!(store.outbox(100).await.unwrap(), outbox[2..]);

    assert_eq!(store.get_compliance_config("global").await.unwrap(), None);
    store.put_compliance_config("global", "{\"enabled\":true}").await.unwrap();
    store.put_compliance_config("global", "{\"enabled\":false}").await.unwrap();
    assert_eq!(store.get_compliance_config("global").await.unwrap().as_deref(), Some("{\"enabled\":false}"));
}

pub async fn imports_keep_everything(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    store.put_policy(&PolicyScope::parse("site:emea").unwrap(), true).await.unwrap();
    store
        .put_config(&ConfigScope::Global, &ChatConfig { max_message_bytes: 99, ..ChatConfig::default() })
        .await
        .unwrap();
    assert_eq!(store.list_policies().await.unwrap(), [("site:emea".to_owned(), true)]);
    let configs = store.list_configs().await.unwrap();
    assert_eq!(configs.len(), 1);
    assert_eq!((configs[0].0.as_str(), configs[0].1.max_message_bytes), ("global", 99));

    let message = |seq: i64, replaced: bool| crate::MessageRecord {
        id: format!("imported-{seq}"),
        room_id: "r1".into(),
        seq,
        author: "a@example.com".into(),
        ts: 1_000 + seq,
        text: format!("text {seq}"),
        story_title: (seq == 2).then(|| "story".to_owned()),
        alert: seq == 3,
        client_id: Some(format!("c{seq}")),
        replaced,
        file: None,
    };
    // seq 4 and 5 were removed at the source: the counter still says 5.
    let imported = vec![message(1, false), message(2, true), message(3, false)];
    store.import_messages("r1", &imported, 5).await.unwrap();
    assert_eq!(store.messages("r1", MessageRange::After { after: 0, limit: 10 }).await.unwrap(), imported);
    assert_eq!(store.last_seq("r1").await.unwrap(), 5);
    let next = store.append_message(post("r1", "new", "after import", Some("c1"))).await.unwrap();
    assert!(!next.created, "client ids carry over");
    let next = store.append_message(post("r1", "new", "after import", None)).await.unwrap();
    assert_eq!(next.message.seq, 6, "seq continues after the source's counter");
    assert!(next.message.ts >= 1_003);

    let invitation = |id: i64, address: &str| crate::InvitationRecord {
        id,
        address: address.into(),
        room_id: "r1".into(),
        created_at: 7,
    };
    store.import_invitations(&[invitation(40, "a@example.com"), invitation(41, "b@example.com")]).await.unwrap();
    assert_eq!(store.invitations("a@example.com", 0, 10).await.unwrap(), [invitation(40, "a@example.com")]);
    store.create_room(&room("r2", "Other", "c1")).await.unwrap();
    let later = store.add_invitations("r2", &["a@example.com".to_owned()], 8).await.unwrap();
    assert!(later[0].id > 41, "new invitations come after imported ones: {}", later[0].id);
}

/// What each archive conformance case runs against: a fresh, empty archive and whatever keeps it alive.
pub struct ArchiveHarness {
    pub archive: Arc<dyn Archive>,
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per archive conformance case; `$make` evaluates to a future of
/// [`ArchiveHarness`].
#[macro_export]
macro_rules! archive_conformance_tests {
    ($make:expr) => {
        $crate::archive_conformance_tests!(@each $make; archive_chains_each_event_once, archive_appends_serialize,
            archive_queries_filter, archive_export_claims_ranges, archive_principal_ids_are_stable,
            archive_purge_keeps_the_chain_verifiable, archive_keyed_chains);
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness: $crate::conformance::ArchiveHarness = $make.await;
                $crate::conformance::$name(&harness.archive).await;
                drop(harness);
            }
        )*
    };
}

fn outboxed(id: i64, kind: &str, room: &str, actor: &str, ts: i64) -> OutboxEvent {
    OutboxEvent {
        id,
        event: NewEvent {
            kind: kind.into(),
            ts,
            room_id: Some(room.into()),
            actor: actor.into(),
            content: format!("event {id}"),
            details: format!("{{\"n\":{id}}}"),
        },
    }
}

async fn chain_of(archive: &Arc<dyn Archive>, pool: &str) -> Vec<ArchivedEvent> {
    let query = EventQuery { pool: Some(pool.into()), limit: 10_000, ..EventQuery::default() };
    archive.events(&query).await.unwrap()
}

fn assert_chains(events: &[ArchivedEvent]) {
    let mut check = ChainCheck::default();
    for e in events {
        assert!(check.feed(e), "event {} does not chain", e.id);
    }
}

pub async fn archive_chains_each_event_once(archive: &Arc<dyn Archive>) {
    let first: Vec<_> = (1..=3).map(|i| outboxed(i, "CHAT", "r1", "a@example.com", i * 10)).collect();
    assert_eq!(archive.append("emea", &first, None).await.unwrap(), 3);
    assert_eq!(archive.append("apac", &[outboxed(1, "JOIN", "r9", "b@example.com", 5)], None).await.unwrap(), 1);
    // Offered again with one new event (a worker that died before clearing its outbox): only the new one lands.
    let again: Vec<_> = (2..=4).map(|i| outboxed(i, "CHAT", "r1", "a@example.com", i * 10)).collect();
    assert_eq!(archive.append("emea", &again, None).await.unwrap(), 1);
    let emea = chain_of(archive, "emea").await;
    assert_eq!(emea.iter().map(|e| e.outbox_id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(emea.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(emea[0].prev_hash, "");
    assert_eq!(emea[3].event, again[2].event);
    assert_chains(&emea);
    let apac = chain_of(archive, "apac").await;
    assert_eq!(apac.len(), 1);
    assert_eq!(apac[0].prev_hash, "", "each pool has its own chain");
    let mut pools = archive.pools().await.unwrap();
    pools.sort();
    assert_eq!(pools, ["apac", "emea"]);
}

pub async fn archive_appends_serialize(archive: &Arc<dyn Archive>) {
    // Four workers offer overlapping batches at once: every event lands once and the chain holds.
    let mut tasks = vec![];
    for w in 0..4i64 {
        let archive = Arc::clone(archive);
        tasks.push(tokio::spawn(async move {
            for round in 0..10i64 {
                let start = round * 10 + w * 3;
                let batch: Vec<_> =
                    (start..start + 12).map(|i| outboxed(i + 1, "CHAT", "r", "a@example.com", i)).collect();
                archive.append("p", &batch, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = chain_of(archive, "p").await;
    let mut ids: Vec<i64> = events.iter().map(|e| e.outbox_id).collect();
    ids.sort_unstable();
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no event archived twice");
    assert_chains(&events);
}

pub async fn archive_queries_filter(archive: &Arc<dyn Archive>) {
    let events = [
        outboxed(1, "JOIN", "r1", "a@example.com", 100),
        outboxed(2, "CHAT", "r1", "a@example.com", 200),
        outboxed(3, "CHAT", "r2", "b@example.com", 300),
        outboxed(4, "PART", "r1", "a@example.com", 400),
    ];
    archive.append("p", &events, None).await.unwrap();
    let q = |f: fn(&mut EventQuery)| {
        let mut query = EventQuery { limit: 100, ..EventQuery::default() };
        f(&mut query);
        let archive = Arc::clone(archive);
        async move { archive.events(&query).await.unwrap().into_iter().map(|e| e.outbox_id).collect::<Vec<_>>() }
    };
    assert_eq!(q(|_| {}).await, [1, 2, 3, 4]);
    assert_eq!(q(|q| q.kind = Some("CHAT".into())).await, [2, 3]);
    assert_eq!(q(|q| q.room_id = Some("r1".into())).await, [1, 2, 4]);
    assert_eq!(q(|q| q.actor = Some("b@example.com".into())).await, [3]);
    assert_eq!(
        q(|q| {
            q.from_ts = Some(200);
            q.to_ts = Some(300)
        })
        .await,
        [2, 3]
    );
    assert_eq!(q(|q| q.limit = 2).await, [1, 2]);
    let all = chain_of(archive, "p").await;
    let after = all[1].id;
    let rest = archive.events(&EventQuery { after_id: after, limit: 100, ..EventQuery::default() }).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.outbox_id).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(q(|q| q.pool = Some("other".into())).await, Vec::<i64>::new());
}

fn export_request(owner: &str, now_ms: i64, max_events: u32, options: &str) -> crate::ExportRequest {
    crate::ExportRequest {
        pool: "p".into(),
        owner: owner.into(),
        now_ms,
        lease_ms: 1_000,
        min_gap_ms: 60_000,
        max_events,
        options: options.into(),
    }
}

pub async fn archive_export_claims_ranges(archive: &Arc<dyn Archive>) {
    assert_eq!(archive.claim_export(&export_request("a", 100_000, 3, "{}")).await.unwrap(), None, "nothing yet");
    let events: Vec<_> = (1..=5).map(|i| outboxed(i, "CHAT", "r", "a@example.com", i)).collect();
    archive.append("p", &events, None).await.unwrap();
    archive.append("other", &events, None).await.unwrap();
    let ids: Vec<i64> = chain_of(archive, "p").await.iter().map(|e| e.id).collect();

    let first = archive.claim_export(&export_request("a", 100_000, 3, "{\"v\":1}")).await.unwrap().unwrap();
    assert_eq!((first.after_id, first.to_id, first.again), (0, ids[2], false));
    // Another owner within the lease gets nothing; the owner (restarted) gets the same range and options back,
    // even with other options in force now.
    assert_eq!(archive.claim_export(&export_request("b", 100_500, 3, "{}")).await.unwrap(), None);
    let again = archive.claim_export(&export_request("a", 100_600, 3, "{\"v\":2}")).await.unwrap().unwrap();
    assert_eq!((again.after_id, again.to_id, again.options.as_str(), again.again), (0, ids[2], "{\"v\":1}", true));
    // Once the lease ran out, anyone takes the same range over.
    let taken = archive.claim_export(&export_request("b", 200_000, 3, "{}")).await.unwrap().unwrap();
    assert_eq!((taken.after_id, taken.to_id, taken.options.as_str()), (0, ids[2], "{\"v\":1}"));
    assert_eq!(archive.export_cursor("p").await.unwrap().pending_to, Some(ids[2]));

    assert!(archive.finish_export("p", ids[2], 200_100).await.unwrap());
    assert!(!archive.finish_export("p", ids[2], 200_200).await.unwrap(), "a range finishes once");
    let cursor = archive.export_cursor("p").await.unwrap();
    assert_eq!(cursor, crate::ExportCursor { done_id: ids[2], last_run_ms: 200_100, pending_to: None });
    // The next range waits for the gap, then starts after the last one.
    assert_eq!(archive.claim_export(&export_request("a", 250_000, 3, "{}")).await.unwrap(), None);
    let next = archive.claim_export(&export_request("a", 260_100, 3, "{}")).await.unwrap().unwrap();
    assert_eq!((next.after_id, next.to_id), (ids[2], ids[4]));
    assert!(archive.finish_export("p", ids[4], 260_200).await.unwrap());
    let mut later = export_request("a", 900_000, 3, "{}");
    later.min_gap_ms = 0;
    assert_eq!(archive.claim_export(&later).await.unwrap(), None, "nothing new");
    assert_eq!(archive.export_cursor("other").await.unwrap(), crate::ExportCursor::default(), "cursors are per pool");
}

pub async fn archive_principal_ids_are_stable(archive: &Arc<dyn Archive>) {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let first = archive.principal_ids(&names(&["b@example.com", "a@example.com", "b@example.com"])).await.unwrap();
    assert_eq!(first[0], first[2]);
    assert_ne!(first[0], first[1]);
    assert!(first.iter().all(|id| *id > 0 && *id <= i64::from(i32::MAX)));
    let again = archive.principal_ids(&names(&["a@example.com", "c@example.com", "b@example.com"])).await.unwrap();
    assert_eq!((again[0], again[2]), (first[1], first[0]));
    assert!(!first.contains(&again[1]));
    assert_eq!(archive.principal_ids(&[]).await.unwrap(), Vec::<i64>::new());
}

pub async fn archive_purge_keeps_the_chain_verifiable(archive: &Arc<dyn Archive>) {
    let events: Vec<_> = (1..=6).map(|i| outboxed(i, "CHAT", "r", "a@example.com", i * 100)).collect();
    archive.append("p", &events, None).await.unwrap();
    let all = chain_of(archive, "p").await;
    assert_eq!(archive.chain_anchor("p").await.unwrap(), ChainAnchor::default());
    // Older than ts 400, but no further than the fifth event: the first three go.
    assert_eq!(archive.purge("p", 400, all[4].id).await.unwrap(), 3);
    assert_eq!(
        archive.chain_anchor("p").await.unwrap(),
        ChainAnchor { purged_to: all[2].id, hash: all[2].hash.clone() }
    );
    // Only up to an id (e.g. what was exported): the fourth goes, the fifth stays although older.
    assert_eq!(archive.purge("p", 10_000, all[3].id).await.unwrap(), 1);
    let left = chain_of(archive, "p").await;
    assert_eq!(left.iter().map(|e| e.outbox_id).collect::<Vec<_>>(), [5, 6]);
    let mut check = ChainCheck::new(archive.chain_anchor("p").await.unwrap().hash, None);
    assert!(left.iter().all(|e| check.feed(e)), "the rest chains from the anchor");
    assert_eq!(archive.purge("p", 0, i64::MAX).await.unwrap(), 0, "nothing older");
    // A purge that skipped the anchor is caught: the first remaining event does not link to nothing.
    let mut check = ChainCheck::default();
    assert!(!check.feed(&left[0]));
}

pub async fn archive_keyed_chains(archive: &Arc<dyn Archive>) {
    let key = ChainKey::new(&[7u8; 32]).unwrap();
    let other = ChainKey::new(&[8u8; 32]).unwrap();
    // Plain events first (before a key was configured), then sealed ones.
    let plain: Vec<_> = (1..=2).map(|i| outboxed(i, "CHAT", "r", "a@example.com", i)).collect();
    archive.append("p", &plain, None).await.unwrap();
    let sealed: Vec<_> = (3..=4).map(|i| outboxed(i, "CHAT", "r", "a@example.com", i)).collect();
    archive.append("p", &sealed, Some(&key)).await.unwrap();
    let chain = chain_of(archive, "p").await;
    assert_eq!(chain.iter().map(|e| is_keyed(&e.hash)).collect::<Vec<_>>(), [false, false, true, true]);
    let check = |key: Option<ChainKey>, events: &[ArchivedEvent]| {
        let mut check = ChainCheck::new(String::new(), key);
        events.iter().all(|e| check.feed(e));
        (check.first_broken, check.problem)
    };
    assert_eq!(check(Some(key.clone()), &chain), (None, None), "a keyed chain verifies with its key");
    assert_eq!(archive.chain_head("p").await.unwrap(), Some((chain[3].id, chain[3].hash.clone())));
    assert_eq!(archive.chain_head("nobody").await.unwrap(), None);
    assert_eq!(check(None, &chain).0, Some(chain[2].id), "without the key a sealed event cannot be checked");
    assert_eq!(check(Some(other), &chain).0, Some(chain[2].id), "nor with another key");
    // Someone without the key appends: their plain event after sealed ones is a break.
    archive.append("p", &[outboxed(5, "CHAT", "r", "mallory@example.com", 5)], None).await.unwrap();
    let chain = chain_of(archive, "p").await;
    let (broken, problem) = check(Some(key.clone()), &chain);
    assert_eq!(broken, Some(chain[4].id));
    assert!(problem.unwrap().contains("not sealed"));
    // Rebuilding the whole chain without the key (recomputing plain hashes) does not verify as keyed either:
    // the check flags the first plain event only if a sealed one came before, so callers also require the newest
    // event of a keyed archive to be sealed (see the service's verify).
    let mut rebuilt = chain.clone();
    let mut prev = String::new();
    for e in &mut rebuilt {
        e.prev_hash = prev.clone();
        e.hash = crate::compliance::event_hash(&e.pool, e.outbox_id, &e.event, &prev, None);
        prev = e.hash.clone();
    }
    assert_eq!(check(Some(key), &rebuilt), (None, None));
    assert!(!is_keyed(&rebuilt.last().unwrap().hash));
}
