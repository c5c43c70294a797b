//! Access decisions hold on live connections: after an administrator's change is acknowledged, a user who may
//! no longer read a room receives no frame of it. Each kind of change that can narrow access runs the same
//! scenario on SQLite and across two servers of a PostgreSQL pool: Bob has the room `Deals` open (and `Lobby`,
//! which he keeps), the change is made, then Alice posts a secret in `Deals` and a control message in `Lobby`.
//! Everything Bob's connection receives up to the control message (or until it is closed) is checked.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, PASSWORD, Server, World, Ws};
use pchat_store_postgres::testing::TempDatabase;

/// What a change does to the reader's connection.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The room is left with this frame type; nothing of it follows.
    Leaves(&'static str),
    /// The connection is closed with this code and reason.
    Closed(u16, &'static str),
    /// The reader keeps the room (the change does not narrow their access).
    Keeps,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    AddedToWalledGroup,
    NestedGroupAddedToWalledGroup,
    CategoryDeniesUser,
    CategoryAllowedNarrowed,
    RoomMadeClosed,
    RemovedFromMembers,
    RoomMovedOutOfScope,
    RoomDisabled,
    RoomDeleted,
    UserPolicyDisabled,
    GlobalPolicyDisabled,
    SitePolicyDisabled,
    PoolPolicyDisabled,
    UserDeleted,
    AdminRoleRevoked,
    SessionsEnded,
    /// The reader only follows `Deals` (activity), and is walled off.
    FollowerWalledOff,
}

struct Scene {
    w: World,
    /// The server the reader is connected to (the same as `w.server` on SQLite, another one in a pool).
    reader_server: Option<Server>,
    deals: String,
    lobby: String,
    invited: String,
    alice: Api,
    _database: Option<TempDatabase>,
}

impl Scene {
    async fn new(pool: bool) -> Self {
        let (database, config) = if pool {
            let (database, _) = TempDatabase::create().await;
            let config = format!("[database]\nurl = \"{}\"\n", database.url());
            (Some(database), config)
        } else {
            (None, String::new())
        };
        let w = World::with_config(&config).await;
        let reader_server = if pool { Some(Server::start_with(&config).await) } else { None };
        let admin = &w.admin;
        admin.post("/api/v1/groups", json!({ "name": "walled" })).await.expect(201);
        admin.post("/api/v1/groups", json!({ "name": "inner" })).await.expect(201);
        admin
            .patch("/api/v1/groups/inner", json!({ "members": { "add": ["bob@example.com", "carol@example.com"] } }))
            .await
            .expect(200);
        let category = |name: &str, allowed: Value, denied: Value| {
            json!({ "name": name, "allowed_members": allowed, "denied_members": denied,
                    "creators": ["alice@example.com"], "invitations": true })
        };
        let id = |v: Value| v["id"].as_str().unwrap().to_owned();
        let research = id(admin
            .post("/api/v1/categories", category("Research", json!(["domain:example.com"]), json!(["group:walled"])))
            .await
            .expect(201));
        let general = id(admin
            .post("/api/v1/categories", category("General", json!(["domain:example.com"]), json!([])))
            .await
            .expect(201));
        admin
            .post("/api/v1/categories", category("Elsewhere", json!(["alice@example.com"]), json!([])))
            .await
            .expect(201);
        let deals = w.room(&research, "Deals", json!({ "privacy": "open" })).await;
        let lobby = w.room(&general, "Lobby", json!({ "privacy": "open" })).await;
        let invited = w
            .room(
                &research,
                "Invited",
                json!({ "members": ["alice@example.com", "bob@example.com", "carol@example.com"] }),
            )
            .await;
        let alice = w.user("alice@example.com").await;
        Self { w, reader_server, deals, lobby, invited, alice, _database: database }
    }

    fn reader_server(&self) -> &Server {
        self.reader_server.as_ref().unwrap_or(&self.w.server)
    }

    async fn post(&self, room: &str, text: &str) -> u16 {
        self.alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": text })).await.status.as_u16()
    }

    /// Prepares what a change needs before the reader connects.
    async fn prepare(&self, change: Change) {
        let admin = &self.w.admin;
        match change {
            Change::RemovedFromMembers => {
                let body =
                    json!({ "privacy": "closed", "members": { "replace": ["alice@example.com", "bob@example.com"] } });
                admin.patch(&format!("/api/v1/rooms/{}", self.deals), body).await.expect(200);
            }
            Change::GlobalPolicyDisabled | Change::SitePolicyDisabled | Change::PoolPolicyDisabled => {
                // Alice keeps chat through her own policy, so that she can still post the secret.
                let body = json!({ "enable_persistent_chat": true });
                admin.put("/api/v1/policies/user:alice@example.com", body).await.expect(200);
            }
            Change::AdminRoleRevoked => {
                admin.post("/api/v1/admins", json!({ "user": "bob@example.com", "role": "admin" })).await.expect(201);
            }
            Change::FollowerWalledOff => {
                let carol = self.w.user("carol@example.com").await;
                carol.put(&format!("/api/v1/me/follows/{}", self.deals), json!({})).await.expect(204);
            }
            _ => {}
        }
    }

    /// Makes the change as the administrator; returns once it is acknowledged.
    async fn change(&self, change: Change, reader: &str) {
        let admin = &self.w.admin;
        let deals = format!("/api/v1/rooms/{}", self.deals);
        let research = "/api/v1/categories/name:Research";
        let add_to_walled = |member: &str| json!({ "members": { "add": [member] } });
        let reply = match change {
            Change::AddedToWalledGroup | Change::FollowerWalledOff => {
                admin.patch("/api/v1/groups/walled", add_to_walled(reader)).await
            }
            Change::NestedGroupAddedToWalledGroup => {
                admin.patch("/api/v1/groups/walled", add_to_walled("group:inner")).await
            }
            Change::CategoryDeniesUser => admin.patch(research, json!({ "denied_members": { "add": [reader] } })).await,
            Change::CategoryAllowedNarrowed => {
                admin.patch(research, json!({ "allowed_members": { "replace": ["alice@example.com"] } })).await
            }
            Change::RoomMadeClosed => {
                let body = json!({ "privacy": "closed", "members": { "replace": ["alice@example.com"] } });
                admin.patch(&deals, body).await
            }
            Change::RemovedFromMembers => admin.patch(&deals, json!({ "members": { "remove": [reader] } })).await,
            Change::RoomMovedOutOfScope => admin.patch(&deals, json!({ "category": "name:Elsewhere" })).await,
            Change::RoomDisabled => admin.patch(&deals, json!({ "disabled": true })).await,
            Change::RoomDeleted => admin.delete(&deals).await,
            Change::UserPolicyDisabled => {
                admin.put(&format!("/api/v1/policies/user:{reader}"), json!({ "enable_persistent_chat": false })).await
            }
            Change::GlobalPolicyDisabled => {
                admin.put("/api/v1/policies/global", json!({ "enable_persistent_chat": false })).await
            }
            Change::SitePolicyDisabled => {
                admin.put("/api/v1/policies/site:default", json!({ "enable_persistent_chat": false })).await
            }
            Change::PoolPolicyDisabled => {
                admin.put("/api/v1/policies/pool:default", json!({ "enable_persistent_chat": false })).await
            }
            Change::UserDeleted => admin.delete(&format!("/api/v1/users/{reader}")).await,
            Change::AdminRoleRevoked => admin.delete(&format!("/api/v1/admins/{reader}/admin")).await,
            Change::SessionsEnded => admin.delete(&format!("/api/v1/users/{reader}/sessions")).await,
        };
        assert!(reply.status.is_success(), "{change:?}: {} {}", reply.status, reply.body);
    }
}

/// Runs one change and checks what the reader's connection receives afterwards.
async fn wall_holds(pool: bool, change: Change, expect: Expect) {
    let scene = Scene::new(pool).await;
    scene.prepare(change).await;
    let follower = matches!(change, Change::FollowerWalledOff);
    let reader_address = if follower { "carol@example.com" } else { "bob@example.com" };
    let reader = scene.reader_server().api(None).signed_in(reader_address, PASSWORD).await;
    let mut ws = Ws::connect(&scene.reader_server().url, reader.token.as_deref().unwrap()).await;
    if !follower {
        ws.join(&scene.deals, None).await;
    }
    ws.join(&scene.lobby, None).await;

    // Delivery works before the change: a message, or activity for the follower.
    assert_eq!(scene.post(&scene.deals, "before the change").await, 201);
    let kind = if follower { "activity" } else { "message" };
    let before = ws.next_of(kind).await;
    assert_eq!(room_of(&before), scene.deals, "{before}");

    scene.change(change, reader_address).await;
    let acknowledged = std::time::Instant::now();
    // The reader's connection hears of it within a second, on whichever server it is (frames up to the removal
    // or the close are kept for the checks below).
    let mut early = vec![];
    let mut closed = None;
    if !matches!(expect, Expect::Keeps) {
        loop {
            let left = std::time::Duration::from_secs(1).saturating_sub(acknowledged.elapsed());
            let frame = tokio::time::timeout(left, ws.next_or_closed())
                .await
                .unwrap_or_else(|_| panic!("{change:?}: nothing reached the connection within a second: {early:?}"));
            match frame {
                Ok(f) => {
                    let done =
                        matches!(expect, Expect::Leaves(kind) if f["type"] == kind && room_of(&f) == scene.deals);
                    early.push(f);
                    if done {
                        break;
                    }
                }
                Err(close) => {
                    closed = Some(close);
                    break;
                }
            }
        }
    }
    if !matches!(expect, Expect::Keeps) {
        let backend = if pool { "two PostgreSQL servers" } else { "SQLite" };
        println!("{change:?} on {backend}: the connection heard after {:?}", acknowledged.elapsed());
    }
    // Alice's secret goes to Deals (refused where the room is gone or disabled), then the control message.
    let secret = scene.post(&scene.deals, "secret deal terms").await;
    assert_eq!(scene.post(&scene.lobby, "control").await, 201);

    let is_control = |f: &Value| f["type"] == "message" && f["message"]["text"] == "control";
    match expect {
        Expect::Leaves(frame) => {
            let mut frames = early;
            frames.extend(ws.until(is_control).await);
            let left = frames.iter().position(|f| f["type"] == frame && room_of(f) == scene.deals);
            assert!(left.is_some(), "{change:?}: no {frame} for Deals in {frames:?}");
            let leaked: Vec<&Value> =
                frames.iter().filter(|f| f != &&frames[left.unwrap()] && mentions(f, &scene.deals)).collect();
            assert!(leaked.is_empty(), "{change:?}: frames of Deals after the change: {leaked:?}");
            if matches!(change, Change::AddedToWalledGroup | Change::NestedGroupAddedToWalledGroup) {
                let withdrawn = frames.iter().find(|f| f["type"] == "invitation_withdrawn");
                assert_eq!(withdrawn.map(room_of), Some(scene.invited.clone()), "{frames:?}");
                let listed = reader.get("/api/v1/me/invitations").await.expect(200);
                assert_eq!(listed["items"], json!([]), "the withdrawn invitation is no longer listed");
            }
            // The room is not joined again by a new join, and posting is refused.
            ws.send(json!({ "op": "join", "room": scene.deals })).await;
            let answer = ws.next().await;
            assert_eq!(answer["type"], "error", "{change:?}: {answer}");
        }
        Expect::Closed(code, reason) => {
            let (frames, close) = match closed {
                Some(close) => (early, close),
                None => ws.until_closed().await,
            };
            assert_eq!(close, Some((code, reason.to_owned())), "{change:?}: frames before the close: {frames:?}");
            let leaked: Vec<&Value> = frames.iter().filter(|f| mentions(f, &scene.deals)).collect();
            assert!(leaked.is_empty(), "{change:?}: frames of Deals after the change: {leaked:?}");
        }
        Expect::Keeps => {
            assert_eq!(secret, 201);
            let frames = ws.until(is_control).await;
            assert!(
                frames.iter().any(|f| f["type"] == "message" && f["message"]["text"] == "secret deal terms"),
                "{change:?}: the reader lost a room they may still read: {frames:?}"
            );
            // The change itself took effect for the connection's user.
            let status = reader.call(Method::GET, "/api/v1/admins", None).await.status.as_u16();
            assert_eq!(status, 403, "{change:?}: the revoked role still works");
        }
    }
}

fn room_of(frame: &Value) -> String {
    let room = if frame["message"].is_object() { &frame["message"]["room"] } else { &frame["room"] };
    match room {
        Value::String(s) => s.clone(),
        Value::Object(r) => r["id"].as_str().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// Whether a frame is about the room (a message, a room event, activity); withdrawing an invitation to it is not.
fn mentions(frame: &Value, room: &str) -> bool {
    frame["type"] != "invitation_withdrawn"
        && (room_of(frame) == room || frame.to_string().contains("secret deal terms"))
}

macro_rules! access_cases {
    ($($name:ident: $change:ident => $expect:expr;)*) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test] async fn $name() { wall_holds(false, Change::$change, $expect).await; })*
        }
        mod two_servers_on_postgresql {
            use super::*;
            $(#[tokio::test] async fn $name() { wall_holds(true, Change::$change, $expect).await; })*
        }
    };
}

access_cases! {
    added_to_a_walled_group: AddedToWalledGroup => Expect::Leaves("removed_from_room");
    a_nested_group_added_to_a_walled_group: NestedGroupAddedToWalledGroup => Expect::Leaves("removed_from_room");
    a_category_denies_the_user: CategoryDeniesUser => Expect::Leaves("removed_from_room");
    a_category_allows_fewer: CategoryAllowedNarrowed => Expect::Leaves("removed_from_room");
    the_room_is_made_closed: RoomMadeClosed => Expect::Leaves("removed_from_room");
    removed_from_the_members: RemovedFromMembers => Expect::Leaves("removed_from_room");
    the_room_moves_out_of_scope: RoomMovedOutOfScope => Expect::Leaves("removed_from_room");
    the_room_is_disabled: RoomDisabled => Expect::Leaves("room_disabled");
    the_room_is_deleted: RoomDeleted => Expect::Leaves("room_deleted");
    the_users_policy_disables_chat: UserPolicyDisabled => Expect::Closed(4403, "chat_disabled_by_policy");
    the_global_policy_disables_chat: GlobalPolicyDisabled => Expect::Closed(4403, "chat_disabled_by_policy");
    the_site_policy_disables_chat: SitePolicyDisabled => Expect::Closed(4403, "chat_disabled_by_policy");
    the_pool_policy_disables_chat: PoolPolicyDisabled => Expect::Closed(4403, "chat_disabled_by_policy");
    the_user_is_deleted: UserDeleted => Expect::Closed(4401, "user_deleted");
    an_admin_role_is_revoked: AdminRoleRevoked => Expect::Keeps;
    the_users_sessions_are_ended: SessionsEnded => Expect::Closed(4401, "session_ended");
    a_follower_is_walled_off: FollowerWalledOff => Expect::Leaves("removed_from_room");
}

/// A room made an auditorium: its readers keep reading (and hear of the change), but posting is for presenters
/// from the moment the change is acknowledged.
#[tokio::test]
async fn a_room_made_an_auditorium_stops_non_presenters_posting_at_once() {
    let scene = Scene::new(false).await;
    let bob = scene.w.user("bob@example.com").await;
    let mut ws = scene.w.ws(&bob).await;
    ws.join(&scene.deals, None).await;
    let body = json!({ "type": "auditorium", "presenters": { "add": ["alice@example.com"] } });
    scene.w.admin.patch(&format!("/api/v1/rooms/{}", scene.deals), body).await.expect(200);
    ws.send(json!({ "op": "post", "room": scene.deals, "text": "may I?", "client_id": "bob-1" })).await;
    let frames = ws.until(|f| f["type"] == "error" || f["type"] == "ack").await;
    let updated = frames.iter().find(|f| f["type"] == "room_updated").expect("the reader hears of the change");
    assert_eq!(updated["room"]["type"], "auditorium");
    let last = frames.last().unwrap();
    assert_eq!((last["type"].as_str(), last["code"].as_str()), (Some("error"), Some("forbidden")), "{frames:?}");
    // Reading goes on: the presenter's post arrives.
    assert_eq!(scene.post(&scene.deals, "from the stage").await, 201);
    assert_eq!(ws.next_of("message").await["message"]["text"], "from the stage");
}

/// What room management asks: the rooms the caller manages, the categories where the caller may create rooms, and
/// the people in a category's scope (the principal picker). Who is in scope can say who is behind a wall, so only
/// those who place people on the category's role lists may ask.
#[tokio::test]
async fn room_management_sees_creatable_categories_and_only_people_in_scope() {
    let w = World::new().await;
    w.admin.post("/api/v1/groups", json!({ "name": "research" })).await.expect(201);
    let add = json!({ "members": { "add": ["carol@example.com"] } });
    w.admin.patch("/api/v1/groups/research", add).await.expect(200);
    let body = json!({
        "name": "Trading", "allowed_members": ["domain:example.com"], "denied_members": ["group:research"],
        "creators": ["alice@example.com"]
    });
    let trading = w.admin.post("/api/v1/categories", body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let body = json!({ "name": "Other", "allowed_members": ["*"], "creators": ["bob@example.com"] });
    w.admin.post("/api/v1/categories", body).await.expect(201);
    let (alice, bob, eve) =
        (w.user("alice@example.com").await, w.user("bob@example.com").await, w.user("eve@other.org").await);
    let names = |page: Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(alice.get("/api/v1/categories").await.expect(200)), ["Other", "Trading"]);
    assert_eq!(names(alice.get("/api/v1/categories?creatable=true").await.expect(200)), ["Trading"]);
    assert_eq!(names(bob.get("/api/v1/categories?creatable=true").await.expect(200)), ["Other"]);
    assert!(names(eve.get("/api/v1/categories?creatable=true").await.expect(200)).is_empty());
    assert_eq!(names(w.admin.get("/api/v1/categories?creatable=true").await.expect(200)), ["Other", "Trading"]);
    w.admin.get("/api/v1/categories?creatable=maybe").await.problem(400, "validation_failed", Some("creatable"));

    // The picker: a creator sees the people in scope, not those walled off (carol) or outside it (eve).
    let picked = |page: Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|u| u["address"].as_str().unwrap().to_owned()).collect()
    };
    let scoped = format!("/api/v1/users?category={trading}");
    let people = picked(alice.get(&scoped).await.expect(200));
    assert!(people.contains(&"alice@example.com".to_owned()) && people.contains(&"bob@example.com".to_owned()));
    assert!(!people.iter().any(|p| p == "carol@example.com" || p == "eve@other.org"), "{people:?}");
    let everyone = picked(alice.get("/api/v1/users").await.expect(200));
    assert!(everyone.contains(&"carol@example.com".to_owned()), "without category the directory is whole");
    // Paging the scoped list gives each person once.
    let mut paged = vec![];
    let mut path = format!("{scoped}&limit=1");
    loop {
        let page = alice.get(&path).await.expect(200);
        paged.extend(picked(page.clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("{scoped}&limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, people);
    // By name too, and narrowed by the query.
    let bobs = picked(alice.get("/api/v1/users?category=name:Trading&query=bob").await.expect(200));
    assert_eq!(bobs, ["bob@example.com"]);

    // Bob is in scope but neither a creator nor a manager there: refused; once he manages a room, allowed.
    bob.get(&scoped).await.problem(403, "forbidden", None);
    w.room(&trading, "Desk", json!({ "managers": ["bob@example.com"] })).await;
    assert_eq!(picked(bob.get(&scoped).await.expect(200)), people);
    // The rooms each may manage, directly or through a group.
    let rooms = |page: Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
    };
    w.admin.post("/api/v1/groups", json!({ "name": "heads" })).await.expect(201);
    w.admin.patch("/api/v1/groups/heads", json!({ "members": { "add": ["alice@example.com"] } })).await.expect(200);
    w.room(&trading, "Heads", json!({ "managers": ["group:heads"], "privacy": "open" })).await;
    assert_eq!(rooms(bob.get("/api/v1/rooms?managed=true").await.expect(200)), ["Desk"]);
    assert_eq!(rooms(alice.get("/api/v1/rooms?managed=true").await.expect(200)), ["Heads"]);
    assert_eq!(rooms(alice.get("/api/v1/rooms").await.expect(200)), ["Desk", "Heads"], "she sees both");
    assert_eq!(rooms(w.admin.get("/api/v1/rooms?managed=true").await.expect(200)), ["Desk", "Heads"]);
    // Eve cannot see the category: the same answer as for one that does not exist.
    eve.get(&scoped).await.problem(404, "not_found", None);
    alice.get("/api/v1/users?category=00000000-0000-4000-8000-000000000000").await.problem(404, "not_found", None);
}
