//! Shared test helpers.
pub mod db;
pub mod smtp;
pub mod world;
