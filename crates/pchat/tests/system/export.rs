//! Compliance exports through the real server: what the files hold (every XML file validated with xmllint against
//! the schemas in schemas/), the crash between writing files and moving the cursor, two servers exporting at once,
//! an output directory that becomes unwritable, and `pchat compliance export` on demand.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::compliance::{archived, enable_into, kinds, settled};
use crate::harness::{Api, PASSWORD, Server, World};
use pchat_store_postgres::testing::TempDatabase;

/// An event as an export file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub kind: String,
    /// The archive id where the file names it (CHAT in Lync files, every event elsewhere); 0 otherwise.
    pub id: i64,
    pub user: String,
    pub content: String,
    pub file: String,
}

fn attr(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + line[start..].find('"')?;
    Some(
        line[start..end]
            .replace("&#10;", "\n")
            .replace("&#13;", "\r")
            .replace("&#9;", "\t")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn schema(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas").join(name)
}

/// Validates an XML file against a schema with xmllint.
#[track_caller]
pub fn validate(file: &Path, xsd: &str) {
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema(xsd))
        .arg(file)
        .output()
        .expect("xmllint (libxml2-utils) is installed");
    assert!(out.status.success(), "{} does not validate: {}", file.display(), String::from_utf8_lossy(&out.stderr));
}

/// Minimal RFC 4180 reader: rows of fields.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (vec![], vec![], String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// Every event in the export files of a directory (in file-name order), after validating every XML file. Lync
/// files are also checked against the documented sample's shape: `FirstMessage` repeats the first `Message`.
pub fn read_export(dir: &Path) -> Vec<Exported> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut out = vec![];
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!name.starts_with('.'), "no temporary file is left: {name}");
        if name.ends_with("_pchat.xml") {
            validate(&path, "pchat-compliance-events.xsd");
            for line in text.lines().filter(|l| l.trim_start().starts_with("<Event ")) {
                out.push(Exported {
                    kind: attr(line, "type").unwrap(),
                    id: attr(line, "id").unwrap().parse().unwrap(),
                    user: attr(line, "user").unwrap(),
                    content: String::new(),
                    file: name.clone(),
                });
            }
        } else if name.ends_with(".xml") {
            validate(&path, "lync-compliance-xmladapter.xsd");
            assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Conversations xmlns:xsi="));
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let t = line.trim_start();
                if t.starts_with("<FirstMessage ") {
                    // The first Message of the conversation is the same message.
                    let first = lines[i + 5].trim_start().replacen("<Message ", "<FirstMessage ", 1);
                    assert_eq!(t, first, "FirstMessage repeats the first Message");
                    assert_eq!(lines[i + 1].trim_start(), lines[i + 6].trim_start());
                }
                if t.starts_with("<Message ") {
                    out.push(Exported {
                        kind: attr(t, "type").unwrap(),
                        id: attr(t, "id").unwrap().parse().unwrap(),
                        user: attr(lines[i + 1], "uri").unwrap(),
                        content: attr(t, "content").unwrap(),
                        file: name.clone(),
                    });
                }
            }
        } else if name.ends_with(".jsonl") {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                out.push(Exported {
                    kind: v["type"].as_str().unwrap().into(),
                    id: v["id"].as_i64().unwrap(),
                    user: v["user"].as_str().unwrap().into(),
                    content: v["content"].as_str().unwrap().into(),
                    file: name.clone(),
                });
            }
        } else if name.ends_with(".csv") {
            let rows = csv_rows(&text);
            assert_eq!(rows[0][..4], ["id", "pool", "outbox_id", "type"]);
            for row in &rows[1..] {
                out.push(Exported {
                    kind: row[3].clone(),
                    id: row[0].parse().unwrap(),
                    user: row[6].clone(),
                    content: row[7].clone(),
                    file: name.clone(),
                });
            }
        }
    }
    out
}

fn count_kinds(events: &[Exported]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.kind.clone()).or_default() += 1;
    }
    out
}

/// Archive ids of events of these kinds.
fn ids_of(events: &[Value], keep: impl Fn(&str) -> bool) -> Vec<i64> {
    let mut ids: Vec<i64> =
        events.iter().filter(|e| keep(e["type"].as_str().unwrap())).map(|e| e["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

const LYNC: [&str; 6] = ["JOIN", "PART", "CHAT", "BACKCHAT", "FILEUPLOAD", "FILEDOWNLOAD"];

/// The checks of the every-event test, run after it filled the archive and exported periodically into `dir`:
/// every event once in the XML export (Lync's types in Lync files, the rest in companion files), and in csv and
/// jsonl exports on demand.
pub async fn every_event_exported_once(server: &Server, admin: &Api, dir: &Path, room: &str) {
    // The worker's first periodic run comes as soon as capture is on, so it may have written everything already;
    // a forced run writes whatever is left. Either way every archived event must be in the directory once.
    let report = admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    assert!(report["events"].is_u64() && report["files"].is_array(), "{report}");
    let events = archived(admin).await;
    let files = read_export(dir);
    let lync: Vec<Exported> = files.iter().filter(|e| !e.file.ends_with("_pchat.xml")).cloned().collect();
    let companion: Vec<Exported> = files.iter().filter(|e| e.file.ends_with("_pchat.xml")).cloned().collect();
    let expected_lync: BTreeMap<String, usize> =
        kinds(&events).into_iter().filter(|(k, _)| LYNC.contains(&k.as_str())).collect();
    assert_eq!(count_kinds(&lync), expected_lync, "Lync's types, once each, in the Lync-format files");
    let chat_ids: Vec<i64> = lync.iter().filter(|e| e.kind == "CHAT").map(|e| e.id).collect();
    assert_eq!(sorted(chat_ids), ids_of(&events, |k| k == "CHAT"));
    let first_chat = lync.iter().find(|e| e.kind == "CHAT").unwrap();
    assert_eq!((first_chat.user.as_str(), first_chat.content.as_str()), ("alice@example.com", "buy 10y"));
    assert!(lync.iter().filter(|e| e.kind != "CHAT").all(|e| e.id == 0));
    assert_eq!(
        sorted(companion.iter().map(|e| e.id).collect()),
        ids_of(&events, |k| !LYNC.contains(&k)),
        "every other event once in the companion files"
    );

    // On demand, csv and jsonl: one row or line per event, all of them.
    for format in ["csv", "jsonl"] {
        let out = tempfile::tempdir().unwrap();
        let run =
            server.cli(&["--json", "compliance", "export", "--format", format, "--out", out.path().to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let report: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(report["events"].as_u64(), Some(events.len() as u64));
        let rows = read_export(out.path());
        assert_eq!(sorted(rows.iter().map(|e| e.id).collect()), ids_of(&events, |_| true), "{format}");
        let chat = rows.iter().find(|e| e.kind == "CHAT").unwrap();
        assert_eq!(chat.content, "buy 10y");
    }
    // Narrowed to a room and a time range.
    let out = tempfile::tempdir().unwrap();
    let (from, to) = (events[0]["ts"].as_str().unwrap(), "2999-01-01T00:00:00Z");
    let run = server.cli(&[
        "compliance",
        "export",
        "--format",
        "jsonl",
        "--room",
        room,
        "--from",
        from,
        "--to",
        to,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let in_room: Vec<i64> = events.iter().filter(|e| e["room"] == room).map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(sorted(read_export(out.path()).iter().map(|e| e.id).collect()), sorted(in_room));
    let bad = server.cli(&["compliance", "export", "--from", "yesterday", "--out", out.path().to_str().unwrap()]);
    assert!(!bad.status.success());
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn files_of(dir: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The worker dies (abort at the failpoint) after writing an export's files and before moving its cursor: after
/// the restart the same files are written again, identically, and every event is in the export exactly once.
#[tokio::test]
async fn a_crash_between_files_and_cursor_neither_loses_nor_duplicates() {
    let mut w = World::with_config("server_name = \"one\"\n").await;
    w.server.env = vec![("PCHAT_FAILPOINT".into(), "compliance-export-before-cursor".into())];
    w.server.restart().await;
    w.admin = w.server.admin().await;
    enable_into(&w.admin, "").await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    for n in 0..30 {
        let body = json!({ "text": format!("m{n}"), "client_id": format!("c{n}") });
        alice.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
    }
    settled(&w.admin, |e| e["type"] == "CHAT", 30).await;
    // Giving the export a directory makes it due at once: the worker writes the files and dies.
    let out = tempfile::tempdir().unwrap();
    enable_into(&w.admin, out.path().to_str().unwrap()).await;
    let status = w.server.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "the server died at the failpoint");
    let crashed = files_of(out.path());
    let before: Vec<Exported> = read_export(out.path());
    assert_eq!(before.iter().filter(|e| e.kind == "CHAT").count(), 30, "the files were written before the crash");

    w.server.env.clear();
    w.server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&w.server, "pchat_compliance_exported_total").await == 0.0 {
        assert!(Instant::now() < deadline, "the restarted worker finishes the export");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = files_of(out.path());
    for (name, bytes) in &crashed {
        assert_eq!(after.get(name), Some(bytes), "{name} is written again identically");
    }
    // More activity, exported on demand: every event is in the export once.
    w.admin = w.server.admin().await;
    let alice = w.server.api(None).signed_in("alice@example.com", PASSWORD).await;
    for n in 30..50 {
        let body = json!({ "text": format!("m{n}"), "client_id": format!("c{n}") });
        alice.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
    }
    settled(&w.admin, |e| e["type"] == "CHAT", 50).await;
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    let events = archived(&w.admin).await;
    let exported = read_export(out.path());
    assert_eq!(
        sorted(exported.iter().filter(|e| e.kind == "CHAT").map(|e| e.id).collect()),
        ids_of(&events, |k| k == "CHAT")
    );
    let companion = sorted(exported.iter().filter(|e| e.file.ends_with("_pchat.xml")).map(|e| e.id).collect());
    let mut distinct = companion.clone();
    distinct.dedup();
    assert_eq!(companion.len(), distinct.len(), "no event twice");
}

/// The output directory goes away while the server runs: exports fail and are retried with back-off, /readyz
/// and the metrics say so, and once the directory is back every event is exported, none lost.
#[tokio::test]
async fn an_unwritable_output_directory_is_retried_and_reported() {
    let w = World::new().await;
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("out");
    enable_into(&w.admin, dir.to_str().unwrap()).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let alice = w.user("alice@example.com").await;
    alice.post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": "before" })).await.expect(201);
    settled(&w.admin, |e| e["type"] == "CHAT", 1).await;
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    alice.post("/api/v1/compliance/export", json!({})).await.problem(403, "forbidden", None);
    w.server.api(None).post("/api/v1/compliance/export", json!({})).await.problem(401, "unauthenticated", None);
    // A file where the directory was: nothing can be written there, not even by root.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    for n in 0..5 {
        alice
            .post(&format!("/api/v1/rooms/{room}/messages"), json!({ "text": format!("during {n}") }))
            .await
            .expect(201);
    }
    settled(&w.admin, |e| e["type"] == "CHAT", 6).await;
    let failed = w.admin.post("/api/v1/compliance/export", json!({})).await;
    assert_eq!(failed.status.as_u16(), 503, "{}", failed.body);
    assert_eq!(failed.body["code"], "unavailable");
    let ready = reqwest::get(format!("{}/readyz", w.server.url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "the server still serves");
    let text = ready.text().await.unwrap();
    assert!(text.contains("warning: compliance export failing"), "{text}");
    assert_eq!(metric(&w.server, "pchat_compliance_export_failing").await, 1.0);
    assert!(metric(&w.server, "pchat_compliance_export_failures_total").await >= 1.0);

    // The directory comes back: the worker's retry exports everything by itself.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chats = read_export(&dir).iter().filter(|e| e.kind == "CHAT").count();
        if chats == 5 && metric(&w.server, "pchat_compliance_export_failing").await == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the retry exported {chats} of 5 messages");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let text = reqwest::get(format!("{}/readyz", w.server.url)).await.unwrap().text().await.unwrap();
    assert_eq!(text, "ready");
    let contents: Vec<String> = read_export(&dir).into_iter().map(|e| e.content).collect();
    assert!((0..5).all(|n| contents.contains(&format!("during {n}"))));
}

/// `pchat compliance worker` alone, with the server down: it archives what the server captured but did not archive
/// yet, and exports it (`pchat compliance run` and `export` are the other CLI ways in).
#[tokio::test]
async fn the_worker_runs_alone() {
    use pchat_store::Store as _;
    let mut w = World::new().await;
    enable_into(&w.admin, "").await;
    let run = w.server.cli(&["--json", "compliance", "run"]);
    assert!(!run.status.success(), "no output directory: refused");
    assert!(String::from_utf8_lossy(&run.stderr).contains("output_dir"), "{}", String::from_utf8_lossy(&run.stderr));
    settled(&w.admin, |_| true, 1).await;
    w.server.kill9();
    // Events captured while no worker ran: in the chat database's outbox, as the server leaves them.
    let out = tempfile::tempdir().unwrap();
    {
        let store =
            pchat_store_sqlite::SqliteStore::open(&w.server.data_dir.join("mgc.db"), Default::default()).unwrap();
        let events: Vec<pchat_store::NewEvent> = (0..5)
            .map(|n| pchat_store::NewEvent {
                kind: "CHAT".into(),
                ts: 1_700_000_000_000_000 + n,
                room_id: Some("r1".into()),
                actor: "alice@example.com".into(),
                content: format!("left behind {n}"),
                details: "{}".into(),
            })
            .collect();
        store.record_events(&events).await.unwrap();
        let mut config: Value =
            serde_json::from_str(&store.get_compliance_config("global").await.unwrap().unwrap()).unwrap();
        config["output_dir"] = json!(out.path().to_str().unwrap());
        store.put_compliance_config("global", &config.to_string()).await.unwrap();
        assert_eq!(store.outbox(100).await.unwrap().len(), 5);
    }
    let mut worker = Worker(
        std::process::Command::new(env!("CARGO_BIN_EXE_pchat"))
            .args(["compliance", "worker", "--data-dir"])
            .arg(&w.server.data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exported = read_export(out.path());
        if exported.iter().filter(|e| e.kind == "CHAT").count() == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker exported {} of 5", exported.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::process::Command::new("kill").args(["-TERM", &worker.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(worker.0.wait().unwrap().success(), "the worker stops cleanly on SIGTERM");
    let store = pchat_store_sqlite::SqliteStore::open(&w.server.data_dir.join("mgc.db"), Default::default()).unwrap();
    assert!(store.outbox(100).await.unwrap().is_empty(), "archived, then cleared from the outbox");
    drop(store);
    w.server.restart().await;
    let admin = w.server.admin().await;
    let contents: Vec<String> =
        archived(&admin).await.into_iter().map(|e| e["content"].as_str().unwrap().to_owned()).collect();
    assert!((0..5).all(|n| contents.contains(&format!("left behind {n}"))));
    let verify = w.server.cli(&["--json", "compliance", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Two servers of a pool export concurrently (their workers and on-demand runs at once) into one directory:
/// every event is exported once.
#[tokio::test]
async fn two_servers_export_each_event_once() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("[database]\nurl = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let other = Server::start_with(&config).await;
    let out = tempfile::tempdir().unwrap();
    enable_into(&w.admin, out.path().to_str().unwrap()).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "R", json!({ "privacy": "open" })).await;
    let other_admin = other.admin().await;
    let apis = [w.user("alice@example.com").await, other.api(None).signed_in("bob@example.com", PASSWORD).await];
    let mut tasks = vec![];
    for (i, api) in apis.iter().enumerate() {
        let (api, room) = (api.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..150 {
                let body = json!({ "text": format!("{i}-{n}"), "client_id": format!("{i}-{n}") });
                api.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
            }
        }));
    }
    for admin in [w.admin.clone(), other_admin.clone()] {
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settled(&w.admin, |e| e["type"] == "CHAT", 300).await;
    w.admin.post("/api/v1/compliance/export", json!({})).await.expect(200);
    let events = archived(&w.admin).await;
    let exported = read_export(out.path());
    assert_eq!(
        sorted(exported.iter().filter(|e| e.kind == "CHAT").map(|e| e.id).collect()),
        ids_of(&events, |k| k == "CHAT"),
        "every post exported once"
    );
    assert!(metric(&w.server, "pchat_compliance_exported_total").await > 0.0);
    drop((other, w));
    drop(database);
}

/// A `pchat compliance worker` process, killed if the test ends without stopping it (a failed assertion).
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
