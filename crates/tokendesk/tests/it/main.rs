//! tokendesk's integration tests, in one binary (link time dominates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod authz;
mod cli;
mod db_copy;
mod docs;
mod email;
mod faults;
mod incidents;
mod instances;
mod lifecycle;
mod pages;
mod reports;
mod sessions;
mod smtp_delivery;
mod store;
mod story;
mod support;
mod views;
