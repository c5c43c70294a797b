//! The administration CLI against a running server: every verb, locally (no flags, via the data directory) and
//! remotely (`--url`/`--token`), JSON output for scripts, readable errors, and `pchat check`.

use std::process::Command;

use serde_json::Value;

use crate::harness::Server;

struct Cli<'a> {
    server: &'a Server,
}

impl Cli<'_> {
    /// Runs `pchat ARGS` locally (only `PCHAT_DATA_DIR` set) and returns (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pchat"))
            .args(args)
            .env("PCHAT_DATA_DIR", &self.server.data_dir)
            .env_remove("PCHAT_URL")
            .env_remove("PCHAT_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "pchat {args:?} failed: {err}{out}");
        out
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    #[track_caller]
    fn fails(&self, args: &[&str], expect: &str) {
        let (ok, out, err) = self.run(args);
        assert!(!ok, "pchat {args:?} should fail: {out}");
        assert!(err.contains(expect), "pchat {args:?}: expected {expect:?} in {err:?}");
    }
}

#[tokio::test]
async fn every_admin_verb_works_against_a_running_server() {
    let server = Server::start().await;
    let cli = Cli { server: &server };
    let pw = crate::harness::PASSWORD;

    // Users and policy.
    cli.ok(&["user", "add", "alice@example.com", "--name", "Alice", "--password", pw]);
    cli.ok(&["user", "add", "bob@example.com", "--name", "Bob", "--password", pw]);
    cli.ok(&["user", "add", "gone@example.com", "--name", "Gone", "--password", pw]);
    assert_eq!(cli.json(&["user", "get", "alice@example.com"])["display_name"], "Alice");
    assert!(cli.ok(&["user", "list"]).contains("bob@example.com"));
    cli.ok(&["user", "remove", "gone@example.com"]);
    cli.fails(&["user", "get", "gone@example.com"], "not_found");
    cli.fails(&["user", "add", "alice@example.com", "--name", "A", "--password", pw], "name_taken");
    assert_eq!(cli.json(&["policy", "set", "global", "--enable", "true"])["enable_persistent_chat"], true);
    cli.ok(&["policy", "set", "user:bob@example.com", "--enable", "false"]);
    assert_eq!(cli.json(&["policy", "get", "user:bob@example.com"])["enable_persistent_chat"], false);
    assert_eq!(cli.json(&["policy", "effective", "bob@example.com"])["from_scope"], "user:bob@example.com");
    cli.ok(&["policy", "remove", "user:bob@example.com"]);
    assert_eq!(cli.json(&["policy", "effective", "bob@example.com"])["from_scope"], "global");

    // Groups and admin roles.
    cli.ok(&["group", "new", "traders"]);
    cli.ok(&["group", "set", "traders", "--add-member", "alice@example.com,bob@example.com"]);
    cli.ok(&["group", "set", "traders", "--remove-member", "bob@example.com"]);
    assert_eq!(cli.json(&["group", "get", "traders"])["members"], serde_json::json!(["alice@example.com"]));
    assert!(cli.ok(&["group", "list"]).contains("traders"));
    cli.ok(&["group", "new", "temp"]);
    cli.ok(&["group", "remove", "temp"]);
    cli.ok(&["admin", "add", "alice@example.com", "--role", "user_admin"]);
    assert!(cli.ok(&["admin", "list"]).contains("alice@example.com"));
    cli.ok(&["admin", "remove", "alice@example.com", "--role", "user_admin"]);
    assert!(!cli.ok(&["admin", "list"]).contains("alice@example.com"));

    // Configuration: changing one setting keeps the others.
    assert_eq!(cli.json(&["config", "set", "--default-chat-history", "40"])["default_chat_history"], 40);
    let config = cli.json(&["config", "set", "pool:default", "--participant-update-limit", "10"]);
    assert_eq!(
        (config["participant_update_limit"].as_u64(), config["default_chat_history"].as_u64()),
        (Some(10), Some(40))
    );
    assert_eq!(cli.json(&["config", "get", "pool:default"])["participant_update_limit"], 10);
    cli.fails(&["config", "set", "--default-chat-history", "0"], "default_chat_history");
    cli.ok(&["config", "remove", "pool:default"]);

    // Add-ins, categories, rooms.
    cli.ok(&["addin", "new", "Tracker", "--url", "https://tracker.example.com"]);
    cli.ok(&["addin", "set", "Tracker", "--url", "https://tracker2.example.com"]);
    assert_eq!(cli.json(&["addin", "get", "Tracker"])["url"], "https://tracker2.example.com");
    assert!(cli.ok(&["addin", "get"]).contains("Tracker"));
    cli.ok(&["category", "new", "Trading", "--allowed", "domain:example.com", "--creators", "group:traders"]);
    cli.ok(&["category", "set", "Trading", "--add-denied", "bob@example.com", "--file-upload", "true"]);
    let cat = cli.json(&["category", "get", "Trading"]);
    assert_eq!(
        (cat["denied_members"][0].as_str(), cat["file_upload"].as_bool()),
        (Some("bob@example.com"), Some(true))
    );
    assert!(cli.ok(&["category", "get"]).contains("Trading"));
    cli.ok(&["room", "new", "Desk", "--category", "Trading", "--members", "alice@example.com", "--addin", "Tracker"]);
    cli.fails(
        &["room", "new", "Wall", "--category", "Trading", "--members", "bob@example.com"],
        "principal_out_of_scope",
    );
    cli.ok(&["room", "set", "Desk", "--privacy", "secret", "--description", "the desk"]);
    let room = cli.json(&["room", "get", "Desk"]);
    assert_eq!((room["privacy"].as_str(), room["addin"].as_str()), (Some("secret"), Some("Tracker")));
    assert!(cli.ok(&["room", "get", "--query", "des"]).contains("Desk"));

    // Messages: post as alice through the API, then clear and remove through the CLI.
    let alice = server.api(None).signed_in("alice@example.com", pw).await;
    let id = room["id"].as_str().unwrap();
    for text in ["sell bonds", "buy bonds", "coffee"] {
        alice.post(&format!("/api/v1/rooms/{id}/messages"), serde_json::json!({ "text": text })).await.expect(201);
    }
    assert_eq!(
        cli.json(&["message", "remove", "Desk", "--keywords", "bonds", "--replace", "[removed]"])["affected"],
        2
    );
    assert_eq!(cli.json(&["message", "remove", "Desk", "--keywords", "coffee"])["affected"], 1);
    assert_eq!(cli.json(&["room", "clear", "Desk", "--end-date", "2999-01-01T00:00:00Z"])["removed"], 2);
    cli.ok(&["room", "remove", "Desk"]);
    cli.fails(&["room", "get", "Desk"], "not_found");
    cli.ok(&["addin", "remove", "Tracker"]);
    cli.ok(&["category", "remove", "Trading"]);

    // Remotely with --url and --token (here: alice, who is no administrator).
    let token = alice.token.clone().unwrap();
    let remote = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["--url", &server.url, "--token", &token, "category", "new", "X"])
        .env("PCHAT_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!remote.status.success());
    assert!(String::from_utf8_lossy(&remote.stderr).contains("forbidden"));
    let remote = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["--url", &server.url, "--token", &server.local_token, "--json", "user", "get", "alice@example.com"])
        .output()
        .unwrap();
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));

    // Without a server to find, a clear error.
    let lost = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["user", "list"])
        .env("PCHAT_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!lost.status.success());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("no local server found"));
}

#[tokio::test]
async fn pchat_check_passes_and_reports_the_round_trip() {
    let server = Server::start().await;
    let cli = Cli { server: &server };
    let report = cli.json(&["check"]);
    assert_eq!(report["result"], "pass", "{report}");
    let rtt = report["round_trip_ms"].as_array().unwrap();
    assert!(rtt.iter().all(|t| t.as_f64().unwrap() > 0.0));
    // Running it again reuses the provisioned room and passes again.
    assert!(cli.ok(&["check"]).starts_with("PASS"));
    // Explicit users that cannot sign in fail with a clear report and a non-zero exit.
    let (ok, out, _) = cli.run(&[
        "check",
        "--sender",
        "a@example.com",
        "--sender-password",
        "x",
        "--receiver",
        "b@example.com",
        "--receiver-password",
        "y",
        "--room",
        "name:pchat-check",
    ]);
    assert!(!ok);
    assert!(out.starts_with("FAIL"), "{out}");
}
