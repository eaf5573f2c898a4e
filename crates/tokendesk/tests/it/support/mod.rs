//! Shared test helpers.
pub mod app;
pub mod db;
pub mod openapi;
pub mod smtp;
pub mod world;
