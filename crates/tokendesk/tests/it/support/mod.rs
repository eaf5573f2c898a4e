//! Shared test helpers.
pub mod app;
pub mod db;
pub mod smtp;
pub mod world;
