//! Ctrl-C, SIGTERM and SIGHUP for the commands that build stages (`run`, and
//! `predict` and `export`, which may train first): the first signal stops the
//! running stage at its next safe point so the command can say what it kept;
//! a second ends the process at once, as a kill does.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use super::{Error, Exit};
use crate::console::Console;
use crate::dag::{self, DagError};

/// Catches the signals for a command: the first requests `cancel` to stop
/// (training between batches, keeping its checkpoint) and starts no other
/// stage; a second ends at once. Slurm jobs run on without this process (the
/// next run reattaches to them), so under Slurm the first one ends at once.
/// Returns where the signal's number is put (0 until one comes).
pub(super) fn stop_on_signals(
    cancel: &dag::Cancel,
    slurm: bool,
    console: &Console,
) -> Result<Arc<AtomicI32>, Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let cannot = |e| Error::io("cannot catch Ctrl-C and SIGTERM", e);
    let received = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(cannot)?;
    let (cancel, console, seen) = (cancel.clone(), console.clone(), received.clone());
    std::thread::Builder::new()
        .name("fkp-signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                let first = seen
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if slurm {
                    console.failure(&format!(
                        "interrupted by {}: the submitted Slurm jobs run on; the next `fkp run` \
                         reattaches to them and builds nothing twice",
                        signal_name(signal)
                    ));
                    std::process::exit(i32::from(Exit::Signal(signal).code()));
                }
                if first {
                    cancel.request(dag::Stop::Now);
                    console.failure(
                        "stopping: the running stage stops at its next safe point \
                         (press Ctrl-C again to stop at once)",
                    );
                } else {
                    console.failure(
                        "stopped at once: the entries already built are kept, and the next \
                         `fkp run` resumes training from its last checkpoint",
                    );
                    std::process::exit(i32::from(Exit::Signal(signal).code()));
                }
            }
        })
        .map_err(cannot)?;
    Ok(received)
}

/// Interrupted: says what the next run finds, rather than an error.
pub(super) fn say_interrupted(error: &DagError, signal: i32, console: &Console) -> Exit {
    // Pipelines that failed before the signal are still failures.
    if let DagError::Several(errors) = error {
        for failed in errors.iter().filter(|e| e.kept().is_none()) {
            console.error(&crate::text::error_chain(failed));
        }
    }
    console.failure(&format!(
        "interrupted by {}: nothing half-written is left",
        signal_name(signal)
    ));
    for line in error.kept().map(dag::Kept::lines).unwrap_or_default() {
        console.failure(&line);
    }
    Exit::Signal(signal)
}

/// Runs a command that may train first (`predict`, `export`) with Ctrl-C and
/// SIGTERM stopping that training at a safe point, as `fkp run` does. `dag`
/// finds the run's error in the command's. Returns how a signal that stopped
/// it ended the command, or the command's result.
pub(super) fn interruptible<T, E: Into<Error>>(
    console: &Console,
    work: impl FnOnce(&dag::Cancel) -> Result<T, E>,
    dag: impl Fn(&E) -> Option<&DagError>,
) -> Result<Result<T, Exit>, Error> {
    let cancel = dag::Cancel::default();
    let signal = stop_on_signals(&cancel, false, console)?;
    let result = work(&cancel);
    let signal = signal.load(Ordering::SeqCst);
    match result {
        Err(error) if signal != 0 && dag(&error).is_some_and(|e| e.kept().is_some()) => {
            let run_error = dag(&error).expect("checked above");
            Ok(Err(say_interrupted(run_error, signal, console)))
        }
        Err(error) => Err(error.into()),
        Ok(_) if signal != 0 => Ok(Err(Exit::Signal(signal))),
        Ok(value) => Ok(Ok(value)),
    }
}

pub(super) fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "Ctrl-C",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
