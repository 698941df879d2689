//! A running stage's live progress, for `fkp serve` to follow:
//! `.fkp/live/<stage>-<key>.jsonl`, one JSON record per line, appended while the
//! stage runs. It is not part of any entry and enters no key; a stage that
//! succeeds removes it (its entry then holds the whole story), and one that fails,
//! is cancelled or killed leaves it, so a resumed run continues the same curve.
//!
//! Each record is written with one `write` on a file opened for appending, so a
//! reader sees whole lines, plus at most a partial last one that it leaves for
//! its next read ([`LiveReader`]). Writing is best effort: a full disk or a
//! read-only cache costs the live view, never the stage.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::stages::StageKind;
use crate::stages::train::EpochLog;

/// Under the cache folder.
pub const LIVE_DIR: &str = "live";

/// Batch records come at most this often: enough for a progress bar that moves
/// every second, few enough that an hours-long training writes a few MB.
const BATCH_RECORD_EVERY: Duration = Duration::from_millis(400);

/// The live log of a stage's key.
pub fn live_path(cache_dir: &Path, kind: StageKind, key: &str) -> PathBuf {
    cache_dir
        .join(LIVE_DIR)
        .join(format!("{}-{key}.jsonl", kind.name()))
}

/// One line of a live log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveRecord {
    /// A process began building the key.
    Start {
        pid: u32,
        host: String,
        pipeline: String,
        at_ms: u64,
    },
    /// Training starts after `after_epoch` epochs (0: from the start; more:
    /// resumed from a checkpoint). Earlier records of later epochs are void.
    Resume {
        after_epoch: usize,
        epochs: usize,
        batches: usize,
        at_ms: u64,
    },
    /// `batch` of `of` batches of `epoch` are done.
    Batch {
        epoch: usize,
        batch: usize,
        of: usize,
        at_ms: u64,
    },
    /// An epoch ended: what `history.csv` and `timing.json` will hold for it.
    Epoch {
        #[serde(flatten)]
        log: EpochLog,
        images_per_s: f64,
        seconds: f64,
        at_ms: u64,
    },
    /// The process stopped building the key without success (a killed one
    /// writes nothing; a successful one removes the log).
    End {
        outcome: EndOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        at_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndOutcome {
    Cancelled,
    Failed,
}

/// Milliseconds since the Unix epoch, as records carry them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The machine's name, so that a reader on another machine (a Slurm node's
/// run) does not judge the process by its own process table.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Whether the process that wrote a `Start` record is gone. Only a process of
/// this machine can be looked up; one elsewhere (a Slurm node) is taken to run
/// until its log says otherwise.
pub fn process_is_gone(pid: u32, host: &str) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && host == host_name() && !proc.join(pid.to_string()).exists()
}

/// Whether a live log is a leftover: its last run ended, or its process is
/// gone. (`fkp clean` removes such logs with the checkpoints they belong to.)
pub fn is_leftover(path: &Path) -> bool {
    let LiveRead::Restarted(records) = LiveReader::new(path.to_path_buf()).read() else {
        return true;
    };
    let mut running = None;
    for record in records {
        match record {
            LiveRecord::Start { pid, host, .. } => running = Some((pid, host)),
            LiveRecord::End { .. } => running = None,
            _ => {}
        }
    }
    running.is_none_or(|(pid, host)| process_is_gone(pid, &host))
}

/// The writing end, handed to a running stage.
#[derive(Debug, Default)]
pub struct LiveLog {
    file: Option<Mutex<File>>,
    last_batch: Mutex<Option<Instant>>,
}

impl LiveLog {
    /// A log that writes nothing (a stage run outside a cache, tests).
    pub fn off() -> LiveLog {
        LiveLog::default()
    }

    /// Opens (creates) the key's log for appending; `fresh` empties it first
    /// (a forced rerun starts a new story). Cannot fail: without a file the log
    /// is off.
    pub fn open(path: &Path, fresh: bool) -> LiveLog {
        let open = || -> std::io::Result<File> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if fresh {
                let _ = std::fs::remove_file(path);
            }
            OpenOptions::new().create(true).append(true).open(path)
        };
        LiveLog {
            file: open().ok().map(Mutex::new),
            last_batch: Mutex::new(None),
        }
    }

    pub fn record(&self, record: &LiveRecord) {
        let Some(file) = &self.file else { return };
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut file) = file.lock() {
            // (best effort, as the module says)
            let _ = file.write_all(&line);
        }
    }

    /// Records batch progress, at most every [`BATCH_RECORD_EVERY`] (and always
    /// an epoch's first batch, so a new epoch shows at once).
    pub fn batch(&self, epoch: usize, batch: usize, of: usize) {
        if self.file.is_none() {
            return;
        }
        {
            let Ok(mut last) = self.last_batch.lock() else {
                return;
            };
            let due = batch == 1 || last.is_none_or(|at| at.elapsed() >= BATCH_RECORD_EVERY);
            if !due {
                return;
            }
            *last = Some(Instant::now());
        }
        self.record(&LiveRecord::Batch {
            epoch,
            batch,
            of,
            at_ms: now_ms(),
        });
    }
}

/// The reading end: follows one log, returning the records appended since the
/// last read. It keeps the file open, so the last records of a log that its
/// successful stage removed meanwhile are still read; a log that was replaced
/// (a forced rerun) or shrank is read again from its start.
#[derive(Debug)]
pub struct LiveReader {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
}

/// What a read found.
#[derive(Debug, PartialEq)]
pub enum LiveRead {
    /// Records appended since the last read (maybe none).
    More(Vec<LiveRecord>),
    /// The log is new or was started over: these are all its records.
    Restarted(Vec<LiveRecord>),
    /// There is no log.
    Absent,
}

impl LiveReader {
    pub fn new(path: PathBuf) -> LiveReader {
        LiveReader {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    pub fn read(&mut self) -> LiveRead {
        let restarted = self.file.is_none();
        if restarted {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(_) => return LiveRead::Absent,
            }
            self.offset = 0;
            self.partial.clear();
        }
        let Some(file) = self.file.as_mut() else {
            return LiveRead::Absent;
        };
        if file.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
            self.partial.clear();
        }
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_ok() && file.read_to_end(&mut bytes).is_ok() {
            self.offset += bytes.len() as u64;
            self.partial.extend_from_slice(&bytes);
        }
        let records = self.complete_records();
        // Removed or replaced since it was opened: what it held is read; the
        // next read finds the new log, or none.
        if !self.still_at_path() {
            self.file = None;
        }
        match restarted {
            true => LiveRead::Restarted(records),
            false => LiveRead::More(records),
        }
    }

    /// The whole lines read so far; a partial last one waits for its end. A
    /// damaged line (a crash mid-write on a file system without atomic appends)
    /// is skipped: the next record is whole again.
    fn complete_records(&mut self) -> Vec<LiveRecord> {
        let complete = self
            .partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()
    }

    fn still_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Some(file), Ok(at_path)) = (&self.file, std::fs::metadata(&self.path)) else {
            return false;
        };
        file.metadata()
            .is_ok_and(|open| (open.dev(), open.ino()) == (at_path.dev(), at_path.ino()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: usize) -> LiveRecord {
        LiveRecord::Epoch {
            log: EpochLog {
                epoch: n,
                train_loss: 0.5,
                train_dsnt: None,
                val_loss: 0.25,
                val_rmse_px: 3.0,
                val_mae_px: 2.0,
                lr: 1e-3,
            },
            images_per_s: 100.0,
            seconds: 1.5,
            at_ms: 7,
        }
    }

    #[test]
    fn a_reader_sees_whole_records_once_and_a_restart_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = live_path(dir.path(), StageKind::Train, "k");
        let mut reader = LiveReader::new(path.clone());
        assert_eq!(reader.read(), LiveRead::Absent);

        let log = LiveLog::open(&path, false);
        log.record(&epoch(1));
        assert_eq!(reader.read(), LiveRead::Restarted(vec![epoch(1)]));
        assert_eq!(reader.read(), LiveRead::More(Vec::new()));

        // Half a line waits for its end.
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        let line = serde_json::to_string(&epoch(2)).unwrap();
        raw.write_all(&line.as_bytes()[..10]).unwrap();
        assert_eq!(reader.read(), LiveRead::More(Vec::new()));
        raw.write_all(&line.as_bytes()[10..]).unwrap();
        raw.write_all(b"\n").unwrap();
        assert_eq!(reader.read(), LiveRead::More(vec![epoch(2)]));

        // A forced rerun replaces the log: what the old one gained is read,
        // then the new one from its start.
        log.record(&epoch(3));
        let fresh = LiveLog::open(&path, true);
        fresh.record(&epoch(1));
        assert_eq!(reader.read(), LiveRead::More(vec![epoch(3)]));
        assert_eq!(reader.read(), LiveRead::Restarted(vec![epoch(1)]));

        // A successful stage removes its log right after its last record.
        fresh.record(&epoch(2));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(reader.read(), LiveRead::More(vec![epoch(2)]));
        assert_eq!(reader.read(), LiveRead::Absent);
    }

    #[test]
    fn batch_records_are_thinned_but_each_epoch_starts_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = live_path(dir.path(), StageKind::Train, "k");
        let log = LiveLog::open(&path, false);
        for batch in 1..=50 {
            log.batch(1, batch, 50);
        }
        log.batch(2, 1, 50);
        let LiveRead::Restarted(records) = LiveReader::new(path).read() else {
            panic!("expected records")
        };
        let batches: Vec<(usize, usize)> = records
            .iter()
            .map(|r| match r {
                LiveRecord::Batch { epoch, batch, .. } => (*epoch, *batch),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(batches, vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn an_unwritable_log_is_off_and_silent() {
        let log = LiveLog::open(Path::new("/proc/no/such/dir/x.jsonl"), false);
        log.record(&epoch(1));
        log.batch(1, 1, 1);
        assert!(log.file.is_none());
    }
}
