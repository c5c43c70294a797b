//! The directory's name index: people and rooms found by the words of their names, kept with every change.

use std::sync::Arc;

use pchat_core::text::DirectoryTerm;

use super::{category, room, user};
use crate::{DirectoryField, Store, UserRecord};

fn prefix(text: &str) -> DirectoryTerm {
    DirectoryTerm { text: text.to_owned(), prefix: true }
}

fn exact(text: &str) -> DirectoryTerm {
    DirectoryTerm { text: text.to_owned(), prefix: false }
}

async fn keys(store: &Arc<dyn Store>, fields: &[DirectoryField], term: DirectoryTerm, cap: u32) -> Option<Vec<String>> {
    let mut found = store.directory_keys(fields, &term, cap).await.unwrap();
    if let Some(found) = found.as_mut() {
        found.sort();
    }
    found
}

/// Users and rooms that [`finds_directory`] expects.
pub async fn with_directory(store: &Arc<dyn Store>) {
    let zoe = UserRecord { display_name: "Zoë Ångström".into(), ..user("zoe.a@example.com") };
    store.create_users(vec![zoe, user("zed@example.com")]).await.unwrap();
    store.create_category(&category("c1", "Cat")).await.unwrap();
    let mut fx = room("r1", "FX Options London", "c1");
    fx.description = "Rates and 北京办公室".into();
    store.create_room(&fx).await.unwrap();
    store.create_room(&room("r2", "Fixed Income", "c1")).await.unwrap();
}

/// What [`with_directory`] wrote is found by word starts, folded, and CJK characters and pairs.
pub async fn finds_directory(store: &Arc<dyn Store>) {
    let user = [DirectoryField::User];
    let name = [DirectoryField::RoomName];
    let both = [DirectoryField::RoomName, DirectoryField::RoomDescription];
    assert_eq!(keys(store, &user, prefix("angs"), 10).await.unwrap(), ["zoe.a@example.com"], "display name, folded");
    assert_eq!(keys(store, &user, prefix("z"), 10).await.unwrap(), ["zed@example.com", "zoe.a@example.com"]);
    assert_eq!(keys(store, &user, exact("z"), 10).await.unwrap(), Vec::<String>::new(), "exact is exact");
    assert_eq!(keys(store, &name, prefix("f"), 10).await.unwrap(), ["r1", "r2"], "one key per room");
    assert_eq!(keys(store, &name, prefix("lon"), 10).await.unwrap(), ["r1"]);
    assert_eq!(keys(store, &name, prefix("rat"), 10).await.unwrap(), Vec::<String>::new(), "not the description");
    assert_eq!(keys(store, &both, prefix("rat"), 10).await.unwrap(), ["r1"]);
    assert_eq!(keys(store, &both, exact("办公"), 10).await.unwrap(), ["r1"]);
    assert_eq!(keys(store, &both, exact("办"), 10).await.unwrap(), ["r1"]);
}

pub async fn the_directory_is_indexed_by_name(store: &Arc<dyn Store>) {
    with_directory(store).await;
    finds_directory(store).await;
    let name = [DirectoryField::RoomName];
    // More than the cap: `None`, so that the caller walks in order instead.
    assert_eq!(keys(store, &name, prefix("f"), 1).await, None);
    assert_eq!(keys(store, &name, prefix("f"), 2).await.unwrap().len(), 2);
    // A rename moves the room's terms; a stale edit (version moved on) changes nothing.
    let mut renamed = store.get_room("r1").await.unwrap().unwrap();
    let stale = renamed.clone();
    renamed.name = "Equities Tokyo".into();
    store.update_room(&renamed).await.unwrap();
    assert_eq!(keys(store, &name, prefix("lon"), 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(keys(store, &name, prefix("tok"), 10).await.unwrap(), ["r1"]);
    let mut lost = stale;
    lost.name = "Lost Edit".into();
    assert!(store.update_room(&lost).await.is_err());
    assert_eq!(keys(store, &name, prefix("lost"), 10).await.unwrap(), Vec::<String>::new());
    // Removing a room or a user removes its terms.
    store.delete_room("r1").await.unwrap();
    assert_eq!(keys(store, &name, prefix("tok"), 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(keys(store, &[DirectoryField::RoomDescription], prefix("rat"), 10).await.unwrap(), Vec::<String>::new());
    store.delete_user("zoe.a@example.com").await.unwrap();
    assert_eq!(keys(store, &[DirectoryField::User], prefix("z"), 10).await.unwrap(), ["zed@example.com"]);
    // A room's id and a user's address do not mix: the room field does not answer for users.
    store.create_user(user("fx@example.com")).await.unwrap();
    assert_eq!(keys(store, &name, prefix("fx"), 10).await.unwrap(), Vec::<String>::new());
    // Users by address: those that exist, in order.
    let wanted = ["zed@example.com".to_owned(), "nobody@example.com".to_owned(), "fx@example.com".to_owned()];
    let found = store.users_by_address(&wanted).await.unwrap();
    assert_eq!(found.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(), ["fx@example.com", "zed@example.com"]);
}
