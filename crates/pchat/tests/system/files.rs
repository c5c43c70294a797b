//! Files in rooms through the real server, on the default directory store and on a real S3-compatible server
//! (moto, started by `scripts/test`, named by `PCHAT_TEST_S3_ENDPOINT`): uploads streamed with the limit enforced
//! mid-stream, the category switch, download only for readers, nothing left by a refused or interrupted upload,
//! 200 MB through with the server's memory flat, files gone with their room and history, and compliance events
//! with their `.ATTACH` manifest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::compliance::settled;
use crate::harness::{Api, World};

/// Every file under the data directory's file store (an upload in progress counts too).
fn stored(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

async fn upload(api: &Api, room: &str, name: &str, bytes: &[u8]) -> crate::harness::Reply {
    let path = format!("/api/v1/rooms/{room}/files?name={}", name.replace(' ', "%20"));
    api.raw(reqwest::Method::POST, &path, bytes.to_vec(), "application/octet-stream").await
}

/// A download: status, headers and bytes.
async fn download(api: &Api, id: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{id}", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

/// Sends a request by hand: the headers, then `chunks` of the body as they come (chunked transfer encoding
/// unless `length` is given); returns the raw answer, or `None` if the server closed first.
async fn send_raw(
    base: &str,
    token: &str,
    path: &str,
    length: Option<u64>,
    chunks: impl Iterator<Item = Vec<u8>>,
    finish: bool,
) -> Option<String> {
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let framing = match length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_owned(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/octet-stream\r\n{framing}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.ok()?;
    for chunk in chunks {
        let framed = if length.is_some() {
            chunk
        } else {
            let mut f = format!("{:x}\r\n", chunk.len()).into_bytes();
            f.extend_from_slice(&chunk);
            f.extend_from_slice(b"\r\n");
            f
        };
        if socket.write_all(&framed).await.is_err() {
            break;
        }
    }
    if !finish {
        // The client goes away mid-upload.
        drop(socket);
        return None;
    }
    if length.is_none() {
        let _ = socket.write_all(b"0\r\n\r\n").await;
    }
    let mut answer = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer)).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

struct Scene {
    w: World,
    room: String,
    alice: Api,
}

/// A category with file upload on and one without; a room in each (alice and bob members); compliance on with the
/// `.ATTACH` manifest, exporting into `export`.
async fn scene(config: &str, export: &Path) -> (Scene, String) {
    let w = World::with_config(config).await;
    let body = json!({ "name": "Docs", "allowed_members": ["domain:example.com"], "file_upload": true });
    let docs = w.admin.post("/api/v1/categories", body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let plain = w.category("Plain").await;
    let room = w.room(&docs, "Deal room", json!({ "members": ["alice@example.com", "bob@example.com"] })).await;
    let no_files = w.room(&plain, "Chat only", json!({ "members": ["alice@example.com"] })).await;
    let compliance = json!({
        "enabled": true, "adapter": "xml", "output_dir": export.to_string_lossy(), "run_interval_secs": 900,
        "one_chat_room_per_output_file": false, "add_user_details": false, "add_chat_room_details": false,
        "create_file_attachments_manifest": true
    });
    w.admin.put("/api/v1/compliance/configuration/global", compliance).await.expect(200);
    let alice = w.user("alice@example.com").await;
    (Scene { w, room, alice }, no_files)
}

/// The whole flow on one store; `local` is the directory store's path when it is one.
async fn files_flow(config: &str, local: Option<&dyn Fn(&Path) -> PathBuf>) {
    let export = tempfile::tempdir().unwrap();
    let (s, no_files) = scene(config, export.path()).await;
    let store_dir = local.map(|f| f(&s.w.server.data_dir));
    let bob = s.w.user("bob@example.com").await;
    let carol = s.w.user("carol@example.com").await;

    // An upload: stored, announced in the room, digest and type recorded.
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let reply = upload(&s.alice, &s.room, "Q3 report.pdf", &content).await;
    let up = reply.expect(201);
    let file_id = up["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(up["file"]["size"], content.len());
    assert_eq!(up["file"]["sha256"], hex::encode(Sha256::digest(&content)));
    assert_eq!(up["file"]["content_type"], "application/pdf");
    assert_eq!(up["message"]["file"]["id"], file_id.as_str());
    assert_eq!(up["message"]["text"], "Q3 report.pdf");
    let history = bob.all_messages(&s.room).await;
    assert_eq!(history.last().unwrap()["file"]["name"], "Q3 report.pdf");

    // A reader downloads it as an attachment; the bytes are the same.
    let (status, headers, bytes) = download(&bob, &file_id).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, content);
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;") && disposition.contains("Q3%20report.pdf"), "{disposition}");
    // A page or an image that could run script is served as opaque bytes.
    let html = upload(&s.alice, &s.room, "page.html", b"<script>alert(1)</script>").await.expect(201);
    let (_, headers, _) = download(&bob, html["file"]["id"].as_str().unwrap()).await;
    assert_eq!(headers["content-type"], "application/octet-stream");
    // Someone who may not read the room gets the answer for a file that does not exist.
    let (outsider, _, _) = download(&carol, &file_id).await;
    let (nothing, _, _) = download(&carol, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!((outsider, nothing), (404, 404));

    // Refusals: nothing stored, no record left.
    let before = store_dir.as_deref().map(stored);
    upload(&s.alice, &no_files, "a.txt", b"x").await.problem(403, "forbidden", None);
    upload(&carol, &s.room, "a.txt", b"x").await.problem(403, "forbidden", None);
    for name in ["", "a%2Fb.txt", "..", "a%0Ab"] {
        let path = format!("/api/v1/rooms/{}/files?name={name}", s.room);
        s.alice.raw(reqwest::Method::POST, &path, b"x".to_vec(), "text/plain").await.problem(
            400,
            "validation_failed",
            Some("name"),
        );
    }
    let path = format!("/api/v1/rooms/{}/files", s.room);
    s.alice.raw(reqwest::Method::POST, &path, b"x".to_vec(), "text/plain").await.problem(
        400,
        "validation_failed",
        Some("name"),
    );
    // An auditorium takes files from presenters only.
    s.w.admin
        .patch(
            &format!("/api/v1/rooms/{}", s.room),
            json!({ "type": "auditorium", "presenters": { "add": ["alice@example.com"] } }),
        )
        .await
        .expect(200);
    upload(&bob, &s.room, "b.txt", b"x").await.problem(403, "forbidden", None);
    s.w.admin.patch(&format!("/api/v1/rooms/{}", s.room), json!({ "type": "normal" })).await.expect(200);

    // The size limit: refused at once when declared, and mid-stream when not (the partial upload discarded).
    s.w.admin.put("/api/v1/configuration/global", json!({ "max_file_size_kb": 64 })).await.expect(200);
    upload(&s.alice, &s.room, "big.bin", &vec![7u8; 70 * 1024]).await.problem(413, "payload_too_large", None);
    let token = s.alice.token.clone().unwrap();
    let path = format!("/api/v1/rooms/{}/files?name=stream.bin", s.room);
    let answer = send_raw(&s.w.server.url, &token, &path, None, (0..40).map(|_| vec![1u8; 4096]), true).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    if let (Some(dir), Some(before)) = (&store_dir, &before) {
        assert_eq!(&stored(dir), before, "a refused upload left something in the file store");
    }

    // A client that goes away mid-upload leaves nothing behind.
    s.w.admin.put("/api/v1/configuration/global", json!({ "max_file_size_kb": 20000 })).await.expect(200);
    send_raw(&s.w.server.url, &token, &path, Some(10_000_000), (0..50).map(|_| vec![2u8; 65536]), false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    if let (Some(dir), Some(before)) = (&store_dir, &before) {
        while &stored(dir) != before {
            assert!(Instant::now() < deadline, "an interrupted upload left {:?}", stored(dir));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Compliance: FILEUPLOAD for each upload, FILEDOWNLOAD for each download, with the .ATTACH manifest.
    let uploads = settled(&s.w.admin, |e| e["type"] == "FILEUPLOAD", 2).await;
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    let first = uploads.iter().find(|e| e["details"]["file_id"] == file_id.as_str()).unwrap();
    assert_eq!(first["content"], format!("{file_id}.pdf"));
    assert_eq!(first["details"]["sha256"], hex::encode(Sha256::digest(&content)));
    assert_eq!(first["user"], "alice@example.com");
    let downloads = settled(&s.w.admin, |e| e["type"] == "FILEDOWNLOAD", 2).await;
    assert_eq!(downloads.iter().filter(|e| e["user"] == "bob@example.com").count(), 2);
    // Export everything archived so far (the worker may have run already: every manifest in the directory counts).
    while s.w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200)["events"] != 0 {}
    let manifest: String = stored(export.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ATTACH"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!manifest.is_empty(), "no .ATTACH manifest in {:?}", stored(export.path()));
    assert!(
        manifest.lines().any(|l| l.contains("FILEUPLOAD") && l.contains(&file_id) && l.contains("Q3 report.pdf")),
        "{manifest}"
    );
    assert!(manifest.lines().any(|l| l.contains("FILEDOWNLOAD") && l.contains(&file_id)), "{manifest}");

    // Removing the message removes the file; clearing the history and deleting the room remove theirs.
    let body = json!({ "keywords": "page.html" });
    s.w.admin.post(&format!("/api/v1/rooms/{}/messages/remove", s.room), body).await.expect(200);
    assert_eq!(download(&bob, html["file"]["id"].as_str().unwrap()).await.0, 404);
    s.w.admin
        .post(&format!("/api/v1/rooms/{}/clear", s.room), json!({ "end_date": "2100-01-01T00:00:00Z" }))
        .await
        .expect(200);
    assert_eq!(download(&bob, &file_id).await.0, 404);
    let later = upload(&s.alice, &s.room, "later.txt", b"still here").await.expect(201);
    s.w.admin.delete(&format!("/api/v1/rooms/{}", s.room)).await.expect(204);
    assert_eq!(download(&s.alice, later["file"]["id"].as_str().unwrap()).await.0, 404);
    if let Some(dir) = &store_dir {
        assert!(stored(dir).is_empty(), "files outlived their room: {:?}", stored(dir));
    }
}

#[tokio::test]
async fn files_in_a_directory_store() {
    files_flow("", Some(&|data: &Path| data.join("files"))).await;
}

/// The same flow against a real S3-compatible server (a bucket of its own).
#[tokio::test]
async fn files_in_an_s3_bucket() {
    let endpoint = std::env::var("PCHAT_TEST_S3_ENDPOINT")
        .expect("the S3 test needs an S3-compatible server: PCHAT_TEST_S3_ENDPOINT (scripts/test starts moto)");
    let bucket = format!("pchat-{}", uuid_like());
    let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(created.status().is_success(), "cannot create the bucket: {}", created.status());
    let config = format!(
        "[files]\ns3_bucket = \"{bucket}\"\ns3_endpoint = \"{endpoint}\"\ns3_allow_http = true\n\
         s3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\n"
    );
    files_flow(&config, None).await;
    // Nothing is left in the bucket once the room is gone.
    let listing = reqwest::Client::new().get(format!("{endpoint}/{bucket}?list-type=2")).send().await.unwrap();
    let text = listing.text().await.unwrap();
    assert!(!text.contains("<Key>"), "objects outlived their room: {text}");
}

/// GET without a bearer token: status and bytes.
async fn fetch(base: &str, url: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new().get(format!("{base}{url}")).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// The link a client holding `token` could make itself: `SESSION.EXPIRES.HMAC(sha256(token), file, expires)`.
fn forged_link(session_id: &str, token: &str, file: &str, expires: i64) -> String {
    use hmac::{KeyInit, Mac};
    let key = hex::encode(Sha256::digest(token.as_bytes()));
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("pchat file link\n{file}\n{expires}").as_bytes());
    format!("{session_id}.{expires}.{}", hex::encode(mac.finalize().into_bytes()))
}

/// Download links (for browsers, which stream a navigation to disk): they work without a token for 60 seconds,
/// for the one file, while the session lasts and the holder may read the room; anything else is refused.
#[tokio::test]
async fn download_links_are_short_lived_and_bound_to_file_session_and_access() {
    let (s, _) = scene("", tempfile::tempdir().unwrap().path()).await;
    let base = s.w.server.url.clone();
    let bob = s.w.user("bob@example.com").await;
    let carol = s.w.user("carol@example.com").await;
    let content: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let file =
        upload(&s.alice, &s.room, "deal.zip", &content).await.expect(201)["file"]["id"].as_str().unwrap().to_owned();
    let other =
        upload(&s.alice, &s.room, "other.txt", b"other").await.expect(201)["file"]["id"].as_str().unwrap().to_owned();

    let made = bob.post(&format!("/api/v1/files/{file}/link"), json!({})).await.expect(200);
    let url = made["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/api/v1/files/{file}?link=")), "{url}");
    let expires: i64 = url.split('.').nth(1).unwrap().parse().unwrap();
    let left = expires - unix_now();
    assert!((50..=61).contains(&left), "a link lasts about a minute, this one {left} s");
    assert!(made["expires_at"].as_str().unwrap().ends_with('Z'), "{made}");
    let resp = reqwest::Client::new().get(format!("{base}{url}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"deal.zip\"; filename*=UTF-8''deal.zip"
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), content, "the link gives the file's bytes");
    assert_eq!(fetch(&base, &url).await.0, 200, "usable more than once while it lasts");

    // Bound to its file, and not forgeable or malformed.
    let token = url.split("link=").nth(1).unwrap().to_owned();
    assert_eq!(fetch(&base, &format!("/api/v1/files/{other}?link={token}")).await.0, 401, "another file");
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for bad in [tampered.as_str(), "", "x", "a.b.c", "..", &token[..token.len() - 2]] {
        assert_eq!(fetch(&base, &format!("/api/v1/files/{file}?link={bad}")).await.0, 401, "link {bad:?}");
    }
    // The format is exactly what the test reconstructs: a fresh expiry works, a past one does not.
    let sessions = bob.get("/api/v1/me/sessions").await.expect(200);
    let session = sessions["items"].as_array().unwrap().iter().find(|x| x["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = unix_now();
    let bob_token = bob.token.clone().unwrap();
    let fresh = forged_link(&session, &bob_token, &file, now + 30);
    assert_eq!(fetch(&base, &format!("/api/v1/files/{file}?link={fresh}")).await.0, 200);
    let expired = forged_link(&session, &bob_token, &file, now - 1);
    assert_eq!(fetch(&base, &format!("/api/v1/files/{file}?link={expired}")).await.0, 401, "expired");
    // A link is not a way in anywhere else: the API still wants the bearer token.
    s.w.server.api(None).get(&format!("/api/v1/me/rooms?link={token}")).await.problem(401, "unauthenticated", None);

    // No link for someone who may not read the room (as for a file that does not exist).
    carol.post(&format!("/api/v1/files/{file}/link"), json!({})).await.problem(404, "not_found", None);
    bob.post("/api/v1/files/00000000-0000-4000-8000-000000000000/link", json!({})).await.problem(
        404,
        "not_found",
        None,
    );

    // Access is checked again at use: bob taken off the room cannot use the link he holds.
    let room = format!("/api/v1/rooms/{}", s.room);
    s.w.admin.patch(&room, json!({ "members": { "remove": ["bob@example.com"] } })).await.expect(200);
    assert_eq!(fetch(&base, &url).await.0, 404);
    s.w.admin.patch(&room, json!({ "members": { "add": ["bob@example.com"] } })).await.expect(200);
    assert_eq!(fetch(&base, &url).await.0, 200);

    // Signing out ends the session's links.
    bob.delete("/api/v1/sessions/current").await.expect(204);
    assert_eq!(fetch(&base, &url).await.0, 401, "a link outlived its session");
    let downloads = settled(&s.w.admin, |e| e["type"] == "FILEDOWNLOAD", 4).await;
    assert!(downloads.iter().all(|e| e["user"] == "bob@example.com"), "{downloads:?}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// 200 MB up and down: the server streams both ways, its resident memory stays within 100 MB of idle.
#[tokio::test]
async fn two_hundred_megabytes_stream_through_with_flat_memory() {
    let (s, _) = scene("", tempfile::tempdir().unwrap().path()).await;
    s.w.admin.put("/api/v1/configuration/global", json!({ "max_file_size_kb": 204_800 })).await.expect(200);
    let idle = s.w.server.rss_kib();
    let total: u64 = 200 * 1024 * 1024;
    let chunk: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let mut digest = Sha256::new();
    for _ in 0..200 {
        digest.update(&chunk);
    }
    let expected = hex::encode(digest.finalize());
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let pid_rss = {
        let peak = peak.clone();
        let pid = s.w.server.pid();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let token = s.alice.token.clone().unwrap();
    let path = format!("/api/v1/rooms/{}/files?name=big.bin", s.room);
    let chunks = (0..200).map(|_| chunk.clone());
    let answer = send_raw(&s.w.server.url, &token, &path, Some(total), chunks, true).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{}", &answer[..answer.len().min(500)]);
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["file"]["sha256"], expected.as_str());
    let id = body["file"]["id"].as_str().unwrap();
    // Download, reading as it comes.
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{id}", s.w.server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = Sha256::new();
    let mut size = 0u64;
    while let Some(part) = resp.chunk().await.unwrap() {
        size += part.len() as u64;
        got.update(&part);
    }
    pid_rss.abort();
    assert_eq!((size, hex::encode(got.finalize())), (total, expected));
    let grew = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(idle);
    println!("resident memory: idle {idle} KiB, peak {} KiB during 200 MB up and down", idle + grew);
    assert!(grew < 100 * 1024, "the server's memory grew by {grew} KiB while streaming 200 MB");
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
