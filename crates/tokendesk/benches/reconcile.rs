//! One reconciliation pass over many tracked tokens against the Canvas simulator, beside the
//! fastest time Canvas's leaky bucket allows (see `support`).
//!
//! `cargo bench -p tokendesk --bench reconcile [-- --tokens N] [--only-main]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

fn main() -> std::process::ExitCode {
    support::main(support::Pass::Reconcile)
}
