//! File record conformance: pending until the announcing message is posted (in its transaction), gone with the
//! message (removed, replaced, cleared) and with the room, and found by the sweeper's questions.

use std::sync::Arc;

use super::{category, post, room, with_room};
use crate::{AttachedFile, FileMeta, FileRecord, MessageRange, NewMessage, Store, StoreError};

fn pending(id: &str, room_id: &str, created_at: i64) -> FileRecord {
    FileRecord {
        id: id.to_owned(),
        room_id: room_id.to_owned(),
        name: format!("{id}.pdf"),
        size: 0,
        content_type: "application/pdf".to_owned(),
        sha256: String::new(),
        uploader: "a@example.com".to_owned(),
        created_at,
        message_id: None,
        ready: false,
    }
}

fn announce(room_id: &str, message_id: &str, file_id: &str, size: i64) -> NewMessage {
    let meta = FileMeta {
        id: file_id.to_owned(),
        name: format!("{file_id}.pdf"),
        size,
        content_type: "application/pdf".to_owned(),
    };
    NewMessage {
        file: Some(AttachedFile { meta, sha256: "ab".repeat(32) }),
        ..post(room_id, message_id, &format!("{file_id}.pdf"), None)
    }
}

pub async fn files_become_ready_with_their_message_and_go_with_it(store: &Arc<dyn Store>) {
    with_room(store.as_ref()).await;
    assert!(matches!(store.create_pending_file(&pending("f0", "nope", 1)).await, Err(StoreError::NotFound)));
    for (id, at) in [("f1", 10), ("f2", 20), ("f3", 30), ("f4", 40)] {
        store.create_pending_file(&pending(id, "r1", at)).await.unwrap();
    }
    let f1 = store.get_file("f1").await.unwrap().unwrap();
    assert!(!f1.ready && f1.message_id.is_none());
    // Posting the announcement makes the file ready, with its size and digest, in one step.
    let posted = store.append_message(announce("r1", "m1", "f1", 1234)).await.unwrap().message;
    assert_eq!(posted.file.as_ref().map(|f| (f.id.as_str(), f.size)), Some(("f1", 1234)));
    let f1 = store.get_file("f1").await.unwrap().unwrap();
    assert!(f1.ready);
    assert_eq!((f1.size, f1.sha256.len(), f1.message_id.as_deref()), (1234, 64, Some("m1")));
    let history = store.messages("r1", MessageRange::Latest { limit: 10 }).await.unwrap();
    assert_eq!(history[0].file, posted.file);
    // A file whose record is gone cannot be announced; nothing is posted.
    assert!(matches!(store.append_message(announce("r1", "m9", "gone", 1)).await, Err(StoreError::NotFound)));
    assert_eq!(store.last_seq("r1").await.unwrap(), 1);
    // Nor announced twice.
    assert!(matches!(store.append_message(announce("r1", "m8", "f1", 1)).await, Err(StoreError::NotFound)));

    store.append_message(announce("r1", "m2", "f2", 2)).await.unwrap();
    store.append_message(announce("r1", "m3", "f3", 3)).await.unwrap();
    assert_eq!(
        store.room_files("r1").await.unwrap().iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        ["f1", "f2", "f3"]
    );
    // Removing a message removes its file; replacing one too (and the message no longer announces it).
    store.alter_messages("r1", &["m1".to_owned()], None).await.unwrap();
    store.alter_messages("r1", &["m2".to_owned()], Some("[removed]")).await.unwrap();
    assert_eq!(store.get_file("f1").await.unwrap(), None);
    assert_eq!(store.get_file("f2").await.unwrap(), None);
    let history = store.messages("r1", MessageRange::Latest { limit: 10 }).await.unwrap();
    assert_eq!(history.iter().map(|m| m.file.is_some()).collect::<Vec<_>>(), [false, true]);
    // Clearing the history removes the files of the messages it removes.
    store.clear_room("r1", i64::MAX).await.unwrap();
    assert_eq!(store.get_file("f3").await.unwrap(), None);
    // The sweeper's questions: which ids have records, which uploads never finished.
    let ids = ["f3".to_owned(), "f4".to_owned(), "x".to_owned()];
    assert_eq!(store.existing_files(&ids).await.unwrap(), ["f4"]);
    assert_eq!(store.stale_pending_files(41).await.unwrap().iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["f4"]);
    assert!(store.stale_pending_files(40).await.unwrap().is_empty());
    store.delete_file("f4").await.unwrap();
    assert!(matches!(store.delete_file("f4").await, Err(StoreError::NotFound)));
    // A deleted room takes its file records with it.
    store.create_pending_file(&pending("f5", "r1", 50)).await.unwrap();
    store.delete_room("r1").await.unwrap();
    assert_eq!(store.get_file("f5").await.unwrap(), None);
    // Imports keep records as they were.
    store.create_category(&category("c2", "Other")).await.unwrap();
    store.create_room(&room("r2", "Second", "c2")).await.unwrap();
    let imported =
        FileRecord { ready: true, message_id: Some("m7".into()), sha256: "cd".repeat(32), ..pending("f7", "r2", 70) };
    store.import_files(std::slice::from_ref(&imported)).await.unwrap();
    assert_eq!(store.get_file("f7").await.unwrap(), Some(imported));
}
