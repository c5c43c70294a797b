//! A pool: three servers on one PostgreSQL database. Clients spread over the servers see every message posted
//! through any of them, once, in order; a directory change made through one server reaches the others.

use serde_json::json;

use crate::harness::{PASSWORD, Server, World, Ws};
use pchat_store_postgres::testing::TempDatabase;

#[tokio::test]
async fn three_servers_deliver_every_message_once_in_order() {
    let (database, _) = TempDatabase::create().await;
    let config = format!("database_url = \"{}\"\n", database.url());
    let w = World::with_config(&config).await;
    let second = Server::start_with(&config).await;
    let third = Server::start_with(&config).await;
    let cat = w.category("C").await;
    let room = w.room(&cat, "Floor", json!({ "privacy": "open" })).await;

    // Each user signs in to a different server and follows the room live there.
    let servers = [&w.server, &second, &third];
    let users = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let mut apis = vec![];
    let mut sockets = vec![];
    for (server, user) in servers.iter().zip(users) {
        let api = server.api(None).signed_in(user, PASSWORD).await;
        let mut ws = Ws::connect(&server.url, api.token.as_deref().unwrap()).await;
        ws.join(&room, None).await;
        apis.push(api);
        sockets.push(ws);
    }

    // Each posts 100 messages through its own server, all at once.
    let mut writers = vec![];
    for (i, api) in apis.iter().enumerate() {
        let (api, room) = (api.clone(), room.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..100 {
                let body = json!({ "text": format!("from server {i} #{n}"), "client_id": format!("{i}-{n}") });
                api.post(&format!("/api/v1/rooms/{room}/messages"), body).await.expect(201);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for (ws, user) in sockets.iter_mut().zip(users) {
        let mut seqs = vec![];
        while seqs.len() < 300 {
            seqs.push(ws.next_of("message").await["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "{user} saw every message once, in order");
    }

    // A policy switched off through the first server applies on the third server's open connection.
    w.admin
        .put("/api/v1/policies/user:carol@example.com", json!({ "enable_persistent_chat": false }))
        .await
        .expect(200);
    let carol = &mut sockets[2];
    let mut refused = false;
    for attempt in 0..50 {
        carol
            .send(
                json!({ "op": "post", "room": room, "text": "still allowed?", "client_id": format!("late-{attempt}") }),
            )
            .await;
        loop {
            let f = carol.next().await;
            match f["type"].as_str() {
                Some("ack") => break,
                Some("error") => {
                    assert_eq!(f["code"], "chat_disabled_by_policy");
                    refused = true;
                    break;
                }
                _ => {}
            }
        }
        if refused {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the policy change never reached the third server");
    drop((second, third, w));
    drop(database);
}
