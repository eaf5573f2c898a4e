//! tokendesk's integration tests, in one binary (link time dominates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod email;
mod store;
mod story;
mod support;
