//! What fkp says to the person at the terminal: stage lines and progress on
//! stderr, tables on stdout, all quietened by `-q`.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct Console {
    pub verbosity: Verbosity,
    interactive: bool,
}

impl Console {
    pub fn new(verbosity: Verbosity) -> Self {
        Console {
            verbosity,
            interactive: std::io::stderr().is_terminal(),
        }
    }

    /// A console that prints nothing: for library use and tests.
    pub fn silent() -> Self {
        Console {
            verbosity: Verbosity::Quiet,
            interactive: false,
        }
    }

    /// A line of progress news on stderr (suppressed by `-q`).
    pub fn status(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            say(&mut std::io::stderr(), line);
        }
    }

    /// Detail shown with `-v` only.
    pub fn detail(&self, line: &str) {
        if self.verbosity >= Verbosity::Verbose {
            say(&mut std::io::stderr(), line);
        }
    }

    /// A warning: shown unless `-q`.
    pub fn warn(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            say(&mut std::io::stderr(), &format!("warning: {line}"));
        }
    }

    /// An error that does not end the command (a bad save during `fkp watch`):
    /// shown even with `-q`.
    pub fn error(&self, line: &str) {
        self.failure(&format!("error: {line}"));
    }

    /// A line saying what failed, as written: shown even with `-q`.
    pub fn failure(&self, line: &str) {
        say(&mut std::io::stderr(), line);
    }

    /// Clears the terminal and its scrollback, as `watchexec --clear` does;
    /// nothing when stderr is not a terminal (a log file keeps every round).
    pub fn clear_screen(&self) {
        if !self.interactive {
            return;
        }
        let mut err = std::io::stderr();
        let _ = err.write_all(b"\x1b[2J\x1b[3J\x1b[H").and_then(|()| err.flush());
    }

    /// Tables and other results on stdout (suppressed by `-q`).
    pub fn result(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            say(&mut std::io::stdout(), text);
        }
    }

    /// A progress bar over `total` units, drawn only on an interactive stderr and
    /// only for work big enough to be worth one.
    pub fn progress(&self, total: u64, worth_a_bar: bool, message: &str, unit: Unit) -> ProgressBar {
        if !(self.interactive && worth_a_bar && self.verbosity >= Verbosity::Normal) {
            return ProgressBar::hidden();
        }
        let template = match unit {
            Unit::Bytes => "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            Unit::Items => "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        };
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is a constant")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    }
}

/// Writes a line, ignoring failure: news is not worth failing (or panicking, as
/// `println!` does) a run whose terminal or pipe has gone away.
fn say(out: &mut impl Write, line: &str) {
    let _ = writeln!(out, "{line}");
}

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Bytes,
    Items,
}
