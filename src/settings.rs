//! `fkp.toml` at the workspace root: settings of the workspace rather than of a
//! pipeline. `[executor]` says where stages build (on this machine, or as Slurm
//! jobs); `[cache]` names a remote cache shared with other machines. Flags and
//! environment variables override them (`--executor`, `-j`, `--remote`,
//! `FKP_EXECUTOR`, `FKP_REMOTE`). Every key is documented in docs/execution.md.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ConfigErrorKind, ConfigErrors, Document, Location, TableReader, Value};

pub const SETTINGS_FILE: &str = "fkp.toml";

/// The keys of `[executor]`, for the hint when one is written outside it.
const EXECUTOR_KEYS: &[&str] = &[
    "kind",
    "jobs",
    "partition",
    "time",
    "mem",
    "cpus",
    "account",
    "gpu_gres",
    "sbatch_args",
    "poll_seconds",
];

crate::config_choice! {
    /// Where stages build.
    pub enum ExecutorKind {
        /// Threads of this process, `jobs` at once.
        Local = "local",
        /// One Slurm job per stage, submitted with `sbatch`.
        Slurm = "slurm",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file they came from, when the workspace has one.
    pub file: Option<PathBuf>,
    pub executor: ExecutorKind,
    /// `[executor] jobs`: stages building at once on this machine (`-j`).
    pub jobs: usize,
    pub slurm: SlurmSettings,
    /// `[cache] remote`: where entries are shared (`s3://bucket/prefix`, a path).
    pub remote: Option<String>,
}

/// What each Slurm job asks for: `[executor]` keys passed to `sbatch`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    /// `--time`, as Slurm writes it (`30`, `4:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// `--mem` (`16G`).
    pub mem: Option<String>,
    /// `--cpus-per-task`; the job's kernels then use that many threads.
    pub cpus: Option<u64>,
    pub account: Option<String>,
    /// `--gres` of a stage that trains or evaluates on `device = "cuda"`.
    pub gpu_gres: String,
    /// Passed to every `sbatch` as they are (`["--qos=short", "--constraint=avx512"]`).
    pub sbatch_args: Vec<String>,
    /// How often job states are read, in seconds.
    pub poll_seconds: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            file: None,
            executor: ExecutorKind::Local,
            jobs: 1,
            slurm: SlurmSettings {
                partition: None,
                time: None,
                mem: None,
                cpus: None,
                account: None,
                gpu_gres: "gpu:1".to_string(),
                sbatch_args: Vec::new(),
                poll_seconds: 2.0,
            },
            remote: None,
        }
    }
}

impl Settings {
    /// The settings of the workspace at `root`: its `fkp.toml`, or the defaults
    /// when it has none. Mistakes are reported with file, line and key.
    pub fn load(root: &Path) -> Result<Settings, ConfigErrors> {
        let path = root.join(SETTINGS_FILE);
        if !path.exists() {
            return Ok(Settings::default());
        }
        let doc = Document::load(&path)?;
        let mut settings = Settings {
            file: Some(path),
            ..Settings::default()
        };
        let mut errors = Vec::new();
        for (name, entry) in &doc.table.entries {
            let Value::Table(table) = &entry.node.value else {
                let kind = ConfigErrorKind::WrongType {
                    key: name.clone(),
                    expected: "a table",
                    found: entry.node.value.type_name(),
                };
                let help = match EXECUTOR_KEYS.contains(&name.as_str()) {
                    true => format!("`{name}` goes under [executor]"),
                    false if name == "remote" => "`remote` goes under [cache]".to_string(),
                    false => format!("write it as [{name}]"),
                };
                errors.push(ConfigError::new(kind, &entry.key_at).with_help(help));
                continue;
            };
            let mut reader = TableReader::new(table, name.clone(), entry.key_at.clone());
            match name.as_str() {
                "executor" => settings.read_executor(&mut reader),
                "cache" => {
                    settings.remote = reader.string("remote");
                    if let Some(Err(why)) = settings.remote.as_deref().map(crate::dag::remote::check_url) {
                        reader.invalid("remote", why);
                    }
                }
                _ => {
                    errors.push(unknown_table(name, &entry.key_at));
                    continue;
                }
            }
            errors.extend(reader.finish());
        }
        match errors.is_empty() {
            true => Ok(settings),
            false => Err(ConfigErrors(errors)),
        }
    }

    fn read_executor(&mut self, r: &mut TableReader) {
        let defaults = Settings::default();
        self.executor = r.choice("kind", ExecutorKind::Local);
        self.jobs = r.usize_in("jobs", 1, 1..=256);
        let slurm = &mut self.slurm;
        slurm.partition = r.string("partition");
        slurm.time = r.string("time");
        slurm.mem = r.string("mem");
        slurm.cpus = r.states("cpus").then(|| r.u64("cpus", 1));
        if slurm.cpus == Some(0) {
            r.invalid("cpus", "a job needs at least 1 CPU");
        }
        slurm.account = r.string("account");
        slurm.gpu_gres = r.string("gpu_gres").unwrap_or(defaults.slurm.gpu_gres);
        slurm.sbatch_args = r.string_list("sbatch_args");
        slurm.poll_seconds = r.f64_in("poll_seconds", defaults.slurm.poll_seconds, 0.05..=600.0);
        for (key, value) in [
            ("partition", slurm.partition.as_deref()),
            ("time", slurm.time.as_deref()),
            ("mem", slurm.mem.as_deref()),
            ("account", slurm.account.as_deref()),
            ("gpu_gres", Some(slurm.gpu_gres.as_str())),
        ] {
            if value.is_some_and(|v| v.is_empty() || v.contains(char::is_whitespace)) {
                r.invalid(
                    key,
                    "sbatch takes it as one word without spaces (see docs/execution.md)",
                );
            }
        }
        // `16G`, `500M`, `16000` (megabytes): what sbatch --mem takes.
        if let Some(mem) = &slurm.mem {
            let digits = mem.trim_end_matches(['K', 'M', 'G', 'T']);
            if digits.is_empty()
                || !digits.chars().all(|c| c.is_ascii_digit())
                || mem.len() - digits.len() > 1
            {
                r.invalid(
                    "mem",
                    "write a size as sbatch --mem takes it: 16G, 500M or 16000 (MB)",
                );
            }
        }
    }
}

fn unknown_table(name: &str, at: &Location) -> ConfigError {
    let kind = ConfigErrorKind::UnknownTable {
        name: crate::text::excerpt(name),
    };
    ConfigError::new(kind, at).with_help(format!("{SETTINGS_FILE} takes [executor] and [cache]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), text).unwrap();
        Settings::load(dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_workspace_without_the_file_has_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
    }

    #[test]
    fn reads_every_key() {
        let settings = load(
            "[executor]\nkind = \"slurm\"\njobs = 3\npartition = \"gpu\"\ntime = \"4:00:00\"\n\
             mem = \"16G\"\ncpus = 8\naccount = \"lab\"\ngpu_gres = \"gpu:a100:1\"\n\
             sbatch_args = [\"--qos=short\"]\npoll_seconds = 0.5\n[cache]\nremote = \"s3://lab-cache/p\"\n",
        )
        .unwrap();
        assert_eq!(settings.executor, ExecutorKind::Slurm);
        assert_eq!(settings.jobs, 3);
        assert_eq!(settings.slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(settings.slurm.cpus, Some(8));
        assert_eq!(settings.slurm.gpu_gres, "gpu:a100:1");
        assert_eq!(settings.slurm.sbatch_args, ["--qos=short"]);
        assert_eq!(settings.slurm.poll_seconds, 0.5);
        assert_eq!(settings.remote.as_deref(), Some("s3://lab-cache/p"));
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let error = load("[executor]\nkind = \"pbs\"\n").unwrap_err();
        assert!(
            error.contains("fkp.toml:2") && error.contains("executor.kind"),
            "{error}"
        );
        let error = load("[executor]\npartiton = \"gpu\"\n").unwrap_err();
        assert!(error.contains("partition"), "did you mean: {error}");
        let error = load("[executor]\ncpus = 0\n").unwrap_err();
        assert!(error.contains("executor.cpus"), "{error}");
        let error = load("[executor]\ntime = \"4 hours\"\n").unwrap_err();
        assert!(error.contains("executor.time"), "{error}");
        let error = load("[train]\nepochs = 2\n").unwrap_err();
        assert!(error.contains("[executor] and [cache]"), "{error}");
        let error = load("jobs = 2\n").unwrap_err();
        assert!(error.contains("goes under [executor]"), "{error}");
        for bad in [
            "[executor]\ngpu_gres = \"\"\n",
            "[executor]\nmem = \"lots\"\n",
            "[cache]\nremote = \"ftp://x\"\n",
            "[cache]\nremote = \"\"\n",
        ] {
            let error = load(bad).unwrap_err();
            assert!(error.contains("fkp.toml:2"), "{bad}: {error}");
        }
    }
}
