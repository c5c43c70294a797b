//! TLS: with a certificate and key in the configuration the server speaks HTTPS and WSS only, and the local CLI
//! (including `pchat check`) reaches it over TLS.

use std::process::Command;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{ADMIN, ADMIN_PASSWORD, Server};

struct Cert {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    pem: String,
}

fn self_signed() -> Cert {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let pem = generated.cert.pem();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    Cert { _dir: dir, cert, key, pem }
}

fn client_config(pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn https_and_wss_with_a_configured_certificate() {
    let cert = self_signed();
    let config = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.cert.display(), cert.key.display());
    let server = Server::start_with(&config).await;
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(https.get(format!("{}/healthz", server.url)).send().await.unwrap().status(), 200);
    let session: Value = https
        .post(format!("{}/api/v1/sessions", server.url))
        .json(&json!({ "user": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap().to_owned();

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = server.url.replacen("https://", "http://", 1);
    assert!(!reqwest::get(format!("{plain}/healthz")).await.is_ok_and(|r| r.status().is_success()));

    // The local CLI finds the server and trusts its certificate through server.json, with no flags.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pchat")).args(args).env("PCHAT_DATA_DIR", &server.data_dir).output().unwrap()
    };
    let out = run(&["policy", "set", "global", "--enable", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["category", "new", "Secure", "--allowed", "*"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["room", "new", "Vault", "--category", "Secure", "--privacy", "open"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Remotely, --ca-cert names the certificate to trust; without it the connection is refused.
    let remote = |extra: &[&str]| {
        let mut args = vec!["--url", server.url.as_str(), "--token", token.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["room", "get", "Vault"]);
        Command::new(env!("CARGO_BIN_EXE_pchat")).args(&args).output().unwrap()
    };
    assert!(!remote(&[]).status.success(), "an untrusted self-signed certificate is refused");
    let ca = cert.cert.to_str().unwrap();
    assert!(remote(&["--ca-cert", ca]).status.success());

    // WSS: join and receive a post.
    let ws_url = format!("{}/api/v1/stream?token={token}", server.url.replacen("https://", "wss://", 1));
    let connector = tokio_tungstenite::Connector::Rustls(client_config(&cert.pem));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(ws_url, None, false, Some(connector)).await.unwrap();
    ws.send(Message::text(json!({ "op": "join", "room": "name:Vault" }).to_string())).await.unwrap();
    ws.send(Message::text(
        json!({ "op": "post", "room": "name:Vault", "text": "over tls", "client_id": "t1" }).to_string(),
    ))
    .await
    .unwrap();
    let mut got = None;
    while got.is_none() {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("stream ended") };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "message" {
            got = Some(v["message"]["text"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got.as_deref(), Some("over tls"));

    // The synthetic transaction runs over HTTPS and WSS too.
    let out = run(&["check"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_missing_certificate_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pchat.toml");
    std::fs::write(&config, "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pchat"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read TLS certificate /nonexistent/cert.pem"), "{err}");
}
