//! The `tokendesk` command: parses arguments and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tokendesk::cli::Cli::parse();
    tokendesk::cli::run(cli)
}
