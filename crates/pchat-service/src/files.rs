//! Files in rooms: uploads streamed into the file store (an `object_store`: a directory, or an S3-compatible
//! bucket) with the size limit enforced while streaming, a SHA-256 of the content, a message announcing the file,
//! downloads for readers of the room only, and FILEUPLOAD / FILEDOWNLOAD compliance events.
//!
//! Nothing is left behind. A file's record exists (pending) before its first byte is stored; an upload that fails,
//! is refused or is abandoned by its client (the request future is dropped) aborts its object and forgets its
//! record, from a guard that runs however the upload ends. The message announcing the file makes the record ready
//! in its own transaction. Records go with their message and their room (in the store's transactions); the objects
//! they leave are deleted right after, and a sweeper deletes any object without a record (a crash between the two)
//! and uploads pending for too long.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use pchat_store::compliance::file_event;
use pchat_store::{AttachedFile, FileMeta, FileRecord, NewMessage, SessionRecord};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::time::now_micros;
use crate::{Caller, Service, ServiceError, ServiceResult};

/// Longest file name, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 255;
/// Parts of a multipart upload (S3's minimum part is 5 MiB); at most two are in flight, so an upload holds about
/// three parts of memory whatever its size.
const PART_BYTES: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// An upload still pending after this long was abandoned by a server that stopped; the sweeper removes it.
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);
/// Objects without a record younger than this are left alone by the sweeper (an upload may be starting).
const SWEEP_GRACE: Duration = Duration::from_secs(3600);
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How long a download link lasts, in seconds: long enough for a browser to follow it, short enough that a
/// copied link is of little use.
pub const FILE_LINK_SECS: i64 = 60;

fn file_link_mac(token_hash: &str, file_id: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(token_hash.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(format!("pchat file link\n{file_id}\n{expires}").as_bytes());
    mac
}

/// Where a file's content is kept in the file store.
pub fn object_key(room_id: &str, file_id: &str) -> ObjectPath {
    ObjectPath::from(format!("rooms/{room_id}/{file_id}"))
}

/// A file name as given by an uploader: 1 to 255 characters, no path separators, no control characters, and at
/// least one character that is not a dot or white space (so never `.`, `..` or blank).
pub fn validate_file_name(raw: Option<&str>) -> ServiceResult<String> {
    let Some(name) = raw else {
        return Err(ServiceError::validation("name", "is required (?name=FILENAME)"));
    };
    if name.chars().all(|c| c == '.' || c.is_whitespace()) {
        return Err(ServiceError::validation("name", "must contain a character other than dots and spaces"));
    }
    if name.chars().count() > MAX_FILE_NAME_CHARS {
        return Err(ServiceError::validation("name", format!("must be at most {MAX_FILE_NAME_CHARS} characters")));
    }
    if name.contains(['/', '\\']) {
        return Err(ServiceError::validation("name", "must be a file name, without / or \\"));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::validation("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// The content type a download is served with, from the name's extension: common document, image, audio and
/// video types; anything a browser could run or render as a page (HTML, SVG, XML, scripts) and anything unknown is
/// `application/octet-stream`.
pub fn content_type_for(name: &str) -> &'static str {
    let extension = std::path::Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "txt" | "log" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// A file being downloaded.
pub struct Download {
    pub file: FileRecord,
    pub content: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

/// An uploaded file and the message announcing it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub file: FileRecord,
    pub message: pchat_store::MessageRecord,
}

/// What an unfinished upload leaves to clean up when it ends early, whichever way.
enum Stage {
    Writing(WriteMultipart),
    Stored,
    Done,
}

struct UploadGuard {
    stage: Stage,
    id: String,
    key: ObjectPath,
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn pchat_store::Store>,
}

impl UploadGuard {
    /// Removes what the upload stored and its record; the answer to a failed upload waits for it.
    async fn clean(&mut self) {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        if !matches!(stage, Stage::Done) {
            clean(stage, self.id.clone(), self.key.clone(), self.objects.clone(), self.store.clone()).await;
        }
    }
}

async fn clean(
    stage: Stage,
    id: String,
    key: ObjectPath,
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn pchat_store::Store>,
) {
    let removed = match stage {
        Stage::Writing(writer) => writer.abort().await,
        Stage::Stored => match objects.delete(&key).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        },
        Stage::Done => Ok(()),
    };
    if let Err(e) = removed {
        // The sweeper removes it later: its record goes now.
        warn!(error = %e, file = %id, "could not remove an unfinished upload's content");
    }
    match store.delete_file(&id).await {
        Ok(()) | Err(pchat_store::StoreError::NotFound) => {}
        Err(e) => warn!(error = %e, file = %id, "could not forget an unfinished upload; the sweeper will"),
    }
}

/// An upload abandoned half-way (its request dropped: the client went away) is cleaned up in the background.
impl Drop for UploadGuard {
    fn drop(&mut self) {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        if matches!(stage, Stage::Done) {
            return;
        }
        let cleanup = clean(stage, self.id.clone(), self.key.clone(), self.objects.clone(), self.store.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(cleanup);
            }
            Err(_) => warn!(file = %self.id, "an unfinished upload is left to the sweeper"),
        }
    }
}

impl Service {
    /// Uses `objects` as the file store (`pchat serve` sets it from the configuration).
    pub fn set_file_store(&self, objects: Arc<dyn ObjectStore>) {
        let _ = self.file_store.set(objects);
    }

    fn objects(&self) -> ServiceResult<Arc<dyn ObjectStore>> {
        self.file_store.get().cloned().ok_or_else(|| ServiceError::Unavailable("no file store is configured".into()))
    }

    /// Streams an upload into the file store and posts the message announcing it. `declared` is the request's
    /// Content-Length, if it gave one (refused at once when over the limit).
    pub async fn upload_file<S, E>(
        &self,
        caller: &Caller,
        reference: &str,
        name: Option<&str>,
        declared: Option<u64>,
        mut body: S,
    ) -> ServiceResult<Uploaded>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        Self::require_chat(caller)?;
        let name = validate_file_name(name)?;
        let (room, category, may_post) = self.readable_room(caller, reference).await?;
        if !may_post {
            return Err(ServiceError::Forbidden("only presenters post in an auditorium".into()));
        }
        if !category.file_upload {
            return Err(ServiceError::Forbidden("file upload is off in this room's category".into()));
        }
        if let Err(retry_after_secs) = self.limiter.check(caller.address()) {
            self.metrics.rate_limited.inc();
            return Err(ServiceError::RateLimited { retry_after_secs });
        }
        let limit = u64::from(self.effective_config().await?.max_file_size_kb) * 1024;
        let too_large = |size: u64| ServiceError::TooLarge {
            field: "body".into(),
            detail: format!("the file is {size} bytes or more; the limit is {limit} bytes (max_file_size_kb)"),
        };
        if let Some(size) = declared.filter(|s| *s > limit) {
            return Err(too_large(size));
        }
        let objects = self.objects()?;
        let file = FileRecord {
            id: uuid::Uuid::new_v4().to_string(),
            room_id: room.id.clone(),
            name: name.clone(),
            size: 0,
            content_type: content_type_for(&name).to_owned(),
            sha256: String::new(),
            uploader: caller.address().to_owned(),
            created_at: now_micros(),
            message_id: None,
            ready: false,
        };
        let key = object_key(&room.id, &file.id);
        self.store.create_pending_file(&file).await?;
        let mut guard = UploadGuard {
            stage: Stage::Stored,
            id: file.id.clone(),
            key: key.clone(),
            objects: Arc::clone(&objects),
            store: Arc::clone(&self.store),
        };
        let stored = self.store_content(&mut guard, &objects, &key, limit, &mut body).await;
        let (size, sha256) = match stored {
            Ok(done) => done,
            Err(e) => {
                guard.clean().await;
                return Err(e);
            }
        };
        let meta = FileMeta {
            id: file.id.clone(),
            name: name.clone(),
            size: size as i64,
            content_type: file.content_type.clone(),
        };
        let appended = self
            .store
            .append_message(NewMessage {
                id: crate::messages::new_message_id(),
                room_id: room.id.clone(),
                author: caller.address().to_owned(),
                text: name,
                story_title: None,
                alert: false,
                client_id: None,
                keep: category.chat_history,
                capture: self.capturing().await,
                file: Some(AttachedFile { meta, sha256: sha256.clone() }),
            })
            .await;
        let appended = match appended {
            Ok(appended) => appended,
            Err(e) => {
                guard.clean().await;
                return Err(e.into());
            }
        };
        guard.stage = Stage::Done;
        self.metrics.posts.inc();
        let message = appended.message;
        let file = FileRecord { size: size as i64, sha256, message_id: Some(message.id.clone()), ready: true, ..file };
        Ok(Uploaded { file, message })
    }

    /// Streams the body into the object at `key` (the guard tracks how far it got); returns its size and SHA-256.
    async fn store_content<S, E>(
        &self,
        guard: &mut UploadGuard,
        objects: &Arc<dyn ObjectStore>,
        key: &ObjectPath,
        limit: u64,
        body: &mut S,
    ) -> ServiceResult<(u64, String)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let too_large = |size: u64| ServiceError::TooLarge {
            field: "body".into(),
            detail: format!("the file is {size} bytes or more; the limit is {limit} bytes (max_file_size_kb)"),
        };
        let upload = objects
            .put_multipart(key)
            .await
            .map_err(|e| ServiceError::Unavailable(format!("the file store refused the upload: {e}")))?;
        guard.stage = Stage::Writing(WriteMultipart::new_with_chunk_size(upload, PART_BYTES));
        let mut digest = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ServiceError::validation("body", format!("the upload was cut off: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(size));
            }
            digest.update(&chunk);
            let Stage::Writing(writer) = &mut guard.stage else { break };
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| ServiceError::Unavailable(format!("the file store failed: {e}")))?;
            writer.put(chunk);
        }
        let Stage::Writing(writer) = std::mem::replace(&mut guard.stage, Stage::Stored) else {
            return Err(ServiceError::Unavailable("the upload ended unexpectedly".into()));
        };
        writer.finish().await.map_err(|e| ServiceError::Unavailable(format!("the file store failed: {e}")))?;
        Ok((size, hex::encode(digest.finalize())))
    }

    /// A ready file the caller may read: `not_found` for anyone who may not read its room (as for a file that
    /// does not exist: whoever may not read the room learns nothing of its files, not even that they exist).
    async fn readable_file(&self, caller: &Caller, id: &str) -> ServiceResult<FileRecord> {
        Self::require_chat(caller)?;
        let missing = || ServiceError::not_found("file");
        let file = self.store.get_file(id).await?.filter(|f| f.ready).ok_or_else(missing)?;
        match self.readable_room(caller, &file.room_id).await {
            Ok(_) => Ok(file),
            Err(ServiceError::NotFound(_) | ServiceError::Forbidden(_) | ServiceError::RoomDisabled) => Err(missing()),
            Err(e) => Err(e),
        }
    }

    /// A download link for a file the caller may read, valid for [`FILE_LINK_SECS`] and only while the session
    /// that asked for it lasts: `(link, expires_at µs)`. The link is `SESSION_ID.EXPIRES.MAC`, the MAC an
    /// HMAC-SHA256 of the file id and the expiry keyed by the session's token hash, which only the server (and
    /// the token's holder) can compute, so any server of the pool checks it without shared state. A browser
    /// navigates to it and streams the file to disk; access is checked again when it is used.
    pub async fn file_link(&self, caller: &Caller, session: &SessionRecord, id: &str) -> ServiceResult<(String, i64)> {
        self.readable_file(caller, id).await?;
        let expires = now_micros() / 1_000_000 + FILE_LINK_SECS;
        let mac = hex::encode(file_link_mac(&session.token_hash, id, expires).finalize().into_bytes());
        Ok((format!("{}.{expires}.{mac}", session.id), expires * 1_000_000))
    }

    /// The caller a download link acts for: `Unauthenticated` when it is malformed, forged, for another file,
    /// expired, or its session has ended.
    pub async fn authenticate_file_link(&self, id: &str, link: &str) -> ServiceResult<Caller> {
        let mut parts = link.splitn(3, '.');
        let (Some(session_id), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ServiceError::Unauthenticated);
        };
        let expires: i64 = expires.parse().map_err(|_| ServiceError::Unauthenticated)?;
        let mac = hex::decode(mac).map_err(|_| ServiceError::Unauthenticated)?;
        if expires < now_micros() / 1_000_000 || session_id.is_empty() || session_id.len() > 100 {
            return Err(ServiceError::Unauthenticated);
        }
        let session = self.store.session_by_id(session_id).await?.ok_or(ServiceError::Unauthenticated)?;
        file_link_mac(&session.token_hash, id, expires)
            .verify_slice(&mac)
            .map_err(|_| ServiceError::Unauthenticated)?;
        // The session must still be alive (signing out, a password change or an administrator ends its links).
        self.live_session(&session.token_hash).await?.ok_or(ServiceError::Unauthenticated)?;
        self.caller_for(&session.address).await?.ok_or(ServiceError::Unauthenticated)
    }

    /// Opens a file for a reader of its room: `not_found` for anyone who may not see the room (as for a file that
    /// does not exist). Records FILEDOWNLOAD.
    pub async fn download_file(&self, caller: &Caller, id: &str) -> ServiceResult<Download> {
        let file = self.readable_file(caller, id).await?;
        let objects = self.objects()?;
        let content = match objects.get(&object_key(&file.room_id, &file.id)).await {
            Ok(got) => got.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                error!(file = %file.id, room = %file.room_id, "a file's content is missing from the file store");
                return Err(ServiceError::Unavailable("the file's content is missing from the file store".into()));
            }
            Err(e) => return Err(ServiceError::Unavailable(format!("the file store failed: {e}"))),
        };
        let meta = FileMeta {
            id: file.id.clone(),
            name: file.name.clone(),
            size: file.size,
            content_type: file.content_type.clone(),
        };
        self.record(|| {
            let event = file_event(
                "FILEDOWNLOAD",
                &file.room_id,
                caller.address(),
                now_micros(),
                &meta,
                Some(&file.sha256),
                file.message_id.as_deref(),
            );
            vec![event]
        })
        .await?;
        Ok(Download { file, content })
    }

    /// Deletes the objects of a room that no record wants any more (after its messages or the room went).
    pub(crate) async fn sweep_room_files(&self, room_id: &str) {
        if let Err(e) = self.sweep(&ObjectPath::from(format!("rooms/{room_id}")), Duration::ZERO).await {
            warn!(error = %e, room = %room_id, "could not delete a room's unused files; the sweeper will");
        }
    }

    /// Deletes objects under `prefix` without a record (older than `grace`). Returns how many went.
    async fn sweep(&self, prefix: &ObjectPath, grace: Duration) -> ServiceResult<usize> {
        let Ok(objects) = self.objects() else { return Ok(0) };
        let cutoff = chrono_like_now() - grace.as_secs() as i64;
        let mut listing = objects.list(Some(prefix));
        let mut batch: Vec<(String, ObjectPath)> = vec![];
        let mut removed = 0;
        loop {
            let next = listing.next().await;
            let done = next.is_none();
            if let Some(meta) = next {
                let meta = meta.map_err(|e| ServiceError::Unavailable(format!("the file store failed: {e}")))?;
                if meta.last_modified.timestamp() <= cutoff
                    && let Some(id) = meta.location.filename()
                {
                    batch.push((id.to_owned(), meta.location.clone()));
                }
            }
            if batch.len() >= 500 || (done && !batch.is_empty()) {
                let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
                let kept = self.store.existing_files(&ids).await?;
                for (id, location) in batch.drain(..) {
                    if !kept.contains(&id) {
                        match objects.delete(&location).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                            Err(e) => warn!(error = %e, object = %location, "could not delete an unused file"),
                        }
                    }
                }
            }
            if done {
                return Ok(removed);
            }
        }
    }

    /// Every hour (and at start): forgets uploads pending for a day (their server stopped mid-upload) and deletes
    /// objects no record wants.
    pub(crate) fn start_file_sweeper(self: &Arc<Self>) {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = service.upgrade() else { return };
                if s.file_store.get().is_some() {
                    let before = now_micros() - STALE_UPLOAD.as_micros() as i64;
                    match s.store.stale_pending_files(before).await {
                        Ok(stale) => {
                            for f in stale {
                                let _ = s.store.delete_file(&f.id).await;
                            }
                        }
                        Err(e) => warn!(error = %e, "could not look for abandoned uploads"),
                    }
                    match s.sweep(&ObjectPath::from("rooms"), SWEEP_GRACE).await {
                        Ok(0) => {}
                        Ok(n) => info!(files = n, "deleted files that no message or room wants any more"),
                        Err(e) => warn!(error = %e, "could not sweep the file store"),
                    }
                }
                drop(s);
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
    }
}

/// Seconds since the Unix epoch, now.
fn chrono_like_now() -> i64 {
    now_micros() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_types() {
        assert_eq!(validate_file_name(Some("Q3 report.pdf")).unwrap(), "Q3 report.pdf");
        for bad in [
            None,
            Some(""),
            Some("  "),
            Some("a/b"),
            Some("a\\b"),
            Some(".."),
            Some("."),
            Some("..."),
            Some(" . "),
            Some("a\u{0}b"),
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_file_name(Some(&"x".repeat(256))).is_err());
        assert_eq!(content_type_for("a.PDF"), "application/pdf");
        assert_eq!(content_type_for("page.html"), "application/octet-stream");
        assert_eq!(content_type_for("logo.svg"), "application/octet-stream");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }
}
