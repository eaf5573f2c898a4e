//! tokendesk: request, approve, create, deliver, activate and revoke Canvas LMS access tokens.
//!
//! Data flows one way: `web` (auth, parsing) → `domain` (rules; pure, clock passed in) →
//! `store` (one transaction: new state + audit event + queued work) → `jobs` (Canvas, email).

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod jobs;
pub mod limits;
pub mod logging;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod web;
