//! One bulk revocation of every token (10,000 of 5,000 people by default) against the Canvas
//! simulator at 50 ms latency and the default bucket, beside the fastest time the bucket allows
//! (see `support`).
//!
//! `cargo bench -p tokendesk --bench revoke [-- --tokens N]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

fn main() -> std::process::ExitCode {
    support::main(support::Pass::Revoke)
}
