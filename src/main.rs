//! The `fkp` binary: parses the arguments, runs the command
//! ([`fkp::commands`]) and turns how it ended into the exit status.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use fkp::commands::Cli;
use fkp::console::Console;

fn main() -> ExitCode {
    // Before any thread starts: it decides how training keeps its buffers.
    fkp::training::host_memory::keep_freed_memory();
    let cli = Cli::parse();
    let console = Console::new(cli.verbosity());
    match cli.execute(&console) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(error) => {
            if let Some(message) = error.message() {
                let _ = writeln!(std::io::stderr(), "error: {message}");
            }
            ExitCode::from(error.code())
        }
    }
}
