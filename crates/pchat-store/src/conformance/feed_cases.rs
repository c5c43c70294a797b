//! Topic feed conformance: kept per owner, names unique per owner, the per-owner limit holding under concurrent
//! creations, and gone with their owner.

use std::sync::Arc;

use super::user;
use crate::{FeedRecord, Store, StoreError};

fn feed(id: &str, owner: &str, name: &str) -> FeedRecord {
    FeedRecord {
        id: id.to_owned(),
        owner: owner.to_owned(),
        name: name.to_owned(),
        keywords: "bonds 北京".to_owned(),
        match_mode: "all".to_owned(),
        case_sensitive: false,
        authors: vec!["b@example.com".to_owned(), "c@example.com".to_owned()],
        rooms: vec!["r1".to_owned()],
        created_at: 10,
    }
}

pub async fn feeds_are_kept_per_owner(store: &Arc<dyn Store>) {
    store.create_user(user("a@example.com")).await.unwrap();
    store.create_user(user("b@example.com")).await.unwrap();
    let first = feed("f1", "a@example.com", "Bonds");
    store.create_feed(&first, 100).await.unwrap();
    store.create_feed(&FeedRecord { created_at: 11, ..feed("f2", "a@example.com", "Other") }, 100).await.unwrap();
    store.create_feed(&feed("f3", "b@example.com", "Bonds"), 100).await.unwrap();
    assert_eq!(store.get_feed("f1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_feed("nope").await.unwrap(), None);
    let ids = |feeds: Vec<FeedRecord>| feeds.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_feeds("a@example.com").await.unwrap()), ["f1", "f2"]);
    let mut every = ids(store.all_feeds().await.unwrap());
    every.sort();
    assert_eq!(every, ["f1", "f2", "f3"]);
    // Names are unique per owner.
    assert!(matches!(store.create_feed(&feed("f4", "a@example.com", "Bonds"), 100).await, Err(StoreError::NameTaken)));
    let renamed = FeedRecord { name: "Other".into(), ..first.clone() };
    assert!(matches!(store.update_feed(&renamed).await, Err(StoreError::NameTaken)));
    let changed = FeedRecord {
        keywords: "gilts".into(),
        match_mode: "exact".into(),
        case_sensitive: true,
        authors: vec![],
        rooms: vec![],
        ..first.clone()
    };
    store.update_feed(&changed).await.unwrap();
    assert_eq!(store.get_feed("f1").await.unwrap(), Some(changed));
    assert!(matches!(store.update_feed(&feed("nope", "a@example.com", "X")).await, Err(StoreError::NotFound)));
    store.delete_feed("f2").await.unwrap();
    assert!(matches!(store.delete_feed("f2").await, Err(StoreError::NotFound)));
    // A deleted user's feeds go with them.
    store.delete_user("b@example.com").await.unwrap();
    assert_eq!(store.get_feed("f3").await.unwrap(), None);
}

pub async fn the_feed_limit_holds_under_concurrent_creations(store: &Arc<dyn Store>) {
    store.create_user(user("a@example.com")).await.unwrap();
    let mut tasks = vec![];
    for i in 0..12 {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            store.create_feed(&feed(&format!("f{i}"), "a@example.com", &format!("Feed {i}")), 5).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::LimitReached) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(store.list_feeds("a@example.com").await.unwrap().len(), 5);
}
