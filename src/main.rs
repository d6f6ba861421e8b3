//! The `flexgate` binary: parse the command line, run the one command asked for (`cli/`, one
//! file per command) and turn its failure into an exit code: 2 for bad usage or configuration
//! (clap's own errors included), 1 for a failed check.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::Cli::parse().command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let msg = format!("{:#}", f.err);
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            ExitCode::from(f.code)
        }
    }
}
