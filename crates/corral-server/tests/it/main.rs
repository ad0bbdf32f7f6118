//! Integration tests: the gateway over real HTTP in front of real simulators.

// Test helpers fail the test on any error, which is what `unwrap` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod balance;
mod config;
mod console;
mod exchange;
mod fleet;
mod hardening;
mod limits;
mod models;
mod observability;
mod openai;
mod passthrough;
mod replicas;
mod sockets;
mod support;
mod usage;
