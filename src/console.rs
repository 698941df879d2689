//! What fkp says to the person at the terminal: stage lines and progress on
//! stderr, results on stdout, all quietened by `-q`. By default a run says one
//! line per stage (two when it builds: why, then what it found) and the
//! training's epochs; `-v` adds detail and each stage's tables, which its
//! reports under `reports/` hold anyway.

use std::io::{IsTerminal, Write};

use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// Starts every line when several pipelines run at once (`fkp run -j`), so
    /// each line says whose it is.
    prefix: Option<Arc<str>>,
    /// Shared by every stage running at once, so their bars and lines take
    /// turns on the terminal instead of overwriting each other.
    bars: Option<MultiProgress>,
}

impl Console {
    pub fn new(verbosity: Verbosity) -> Self {
        Console {
            verbosity,
            interactive: std::io::stderr().is_terminal(),
            prefix: None,
            bars: None,
        }
    }

    /// The console for stages that run side by side: bars share the terminal
    /// (and lines are printed between them) instead of fighting over it.
    pub fn shared(&self) -> Console {
        Console {
            bars: self.interactive.then(MultiProgress::new),
            ..self.clone()
        }
    }

    /// This console, with every line it prints starting with `prefix`.
    pub fn prefixed(&self, prefix: &str) -> Console {
        Console {
            prefix: Some(Arc::from(prefix)),
            ..self.clone()
        }
    }

    /// A console that prints nothing: for library use and tests.
    pub fn silent() -> Self {
        Console {
            verbosity: Verbosity::Quiet,
            interactive: false,
            prefix: None,
            bars: None,
        }
    }

    /// A line of progress news on stderr (suppressed by `-q`).
    pub fn status(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.say(&mut std::io::stderr(), line);
        }
    }

    /// Detail shown with `-v` only.
    pub fn detail(&self, line: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.say(&mut std::io::stderr(), line);
        }
    }

    /// A warning: shown unless `-q`.
    pub fn warn(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.say(&mut std::io::stderr(), &format!("warning: {line}"));
        }
    }

    /// An error that does not end the command (a bad save during `fkp watch`):
    /// shown even with `-q`.
    pub fn error(&self, line: &str) {
        self.failure(&format!("error: {line}"));
    }

    /// A line saying what failed, as written: shown even with `-q`.
    pub fn failure(&self, line: &str) {
        self.say(&mut std::io::stderr(), line);
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
            self.say(&mut std::io::stdout(), text);
        }
    }

    /// Tables and other results that only `-v` prints (on stdout): a stage's
    /// tables, which its reports keep anyway.
    pub fn result_detail(&self, text: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.say(&mut std::io::stdout(), text);
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
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is a constant")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{}{message}", self.prefix.as_deref().unwrap_or("")));
        match &self.bars {
            Some(bars) => bars.add(bar),
            None => {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar
            }
        }
    }

    /// Writes text, each line after the prefix, ignoring failure: news is not
    /// worth failing (or panicking, as `println!` does) a run whose terminal or
    /// pipe has gone away.
    fn say(&self, out: &mut impl Write, text: &str) {
        let text = match &self.prefix {
            Some(prefix) => text.lines().map(|line| format!("{prefix}{line}\n")).collect(),
            None => format!("{text}\n"),
        };
        match &self.bars {
            Some(bars) => bars.suspend(|| out.write_all(text.as_bytes())),
            None => out.write_all(text.as_bytes()),
        }
        .unwrap_or(());
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Bytes,
    Items,
}
