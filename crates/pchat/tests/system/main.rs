//! System tests: the real `pchat` binary on 127.0.0.1:0 with a fresh data directory per test, driven through
//! its HTTP API, WebSocket stream and CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod access;
mod audit;
mod bad_input;
mod cli;
mod compliance;
mod convert;
mod crash;
mod export;
mod failover;
mod failures;
mod feeds;
mod files;
mod flow;
mod harness;
mod hostile;
mod pgcluster;
mod pool;
mod postgres;
mod races;
mod search;
mod secrecy;
mod sessions;
mod stream;
mod tamper;
mod tls;
