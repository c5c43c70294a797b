//! Test support, used by this crate's tests and the system tests: a database that exists for one test, on the
//! server named by `PCHAT_TEST_POSTGRES_URL` (default: the local one on 127.0.0.1:5432). Without a server, creating
//! one panics: PostgreSQL tests fail rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use tokio_postgres::NoTls;

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("PCHAT_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A uniquely named database, dropped (with its connections) when this value is, unless it is [kept](Self::kept).
pub struct TempDatabase {
    server: String,
    pub name: String,
    keep: bool,
}

/// A connection to the server the tests use.
async fn connect_server(server: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(server, NoTls)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL tests need a server at {server} (PCHAT_TEST_POSTGRES_URL): {e}"));
    tokio::spawn(connection);
    client
}

impl TempDatabase {
    /// Creates the database; returns it with a connection configuration for it.
    pub async fn create() -> (Self, tokio_postgres::Config) {
        Self::create_as("").await
    }

    /// Creates the database as a copy of `template` (an empty string: of the server's default template).
    pub async fn create_as(template: &str) -> (Self, tokio_postgres::Config) {
        let server = server_url();
        let name = format!("pchat_test_{}", uuid::Uuid::new_v4().simple());
        let copy = if template.is_empty() { String::new() } else { format!(" TEMPLATE \"{template}\"") };
        connect_server(&server).await.batch_execute(&format!("CREATE DATABASE \"{name}\"{copy}")).await.unwrap();
        Self::named(server, name, false)
    }

    /// The database `name`, created if it does not exist and never dropped (benchmarks keep a generated history
    /// in it); the flag says whether it existed.
    pub async fn kept(name: &str) -> (Self, tokio_postgres::Config, bool) {
        let server = server_url();
        let client = connect_server(&server).await;
        let existed =
            client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some();
        if !existed {
            client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        }
        let (database, config) = Self::named(server, name.to_owned(), true);
        (database, config, existed)
    }

    fn named(server: String, name: String, keep: bool) -> (Self, tokio_postgres::Config) {
        let mut config = tokio_postgres::Config::from_str(&server).unwrap();
        config.dbname(&name);
        (Self { server, name, keep }, config)
    }

    /// A `postgres://` URL for the database (the server URL with its database name replaced).
    pub fn url(&self) -> String {
        let base = self.server.split('?').next().unwrap_or(&self.server);
        let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
        format!("{root}/{}", self.name)
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop cannot await; a thread with its own runtime removes the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&server, NoTls).await.unwrap();
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.unwrap();
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
