//! What `fkp watch` watches: every file a plan reads (pipeline files, the files
//! they extend, report members, stage inputs), never the workspace's own
//! outputs, and the content of each, so a save that changes nothing is no change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::dag::Graph;
use crate::workspace::Workspace;

/// The files a plan depends on, and the folders to watch for them: a
/// rename-save replaces the file, so its folder is watched, not the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    files: BTreeSet<PathBuf>,
    /// Files left out because they lie under `.fkp/` or `reports/`: watching
    /// them would make every run trigger the next.
    pub outputs: BTreeSet<PathBuf>,
}

impl WatchSet {
    /// The files named on the command line and, when the configuration loaded,
    /// every file the graph reads.
    pub fn new(named: &[PathBuf], graph: Option<&Graph>, workspace: &Workspace) -> WatchSet {
        let mut set = WatchSet::default();
        let excluded = [&workspace.cache_dir, &workspace.reports_dir].map(|dir| canonical(dir));
        let mut add = |path: &Path| {
            let path = canonical(path);
            if excluded.iter().any(|dir| path.starts_with(dir)) {
                set.outputs.insert(path);
            } else {
                set.files.insert(path);
            }
        };
        for file in named {
            add(file);
        }
        for pipeline in graph.iter().flat_map(|g| &g.pipelines) {
            for source in &pipeline.sources {
                add(source);
            }
            for stage in &pipeline.stages {
                for input in stage.file_inputs() {
                    add(&input.path);
                }
            }
        }
        set
    }

    pub fn files(&self) -> &BTreeSet<PathBuf> {
        &self.files
    }

    /// The folders to watch: each file's folder, or its nearest existing
    /// ancestor while the folder does not exist (its creation is then seen).
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|file| file.ancestors().skip(1).find(|dir| dir.is_dir()))
            .map(Path::to_path_buf)
            .collect()
    }

    /// Whether an event on `path` can concern the plan: it is a watched file,
    /// or a folder on the way to one (created, removed or renamed).
    pub fn concerns(&self, path: &Path) -> bool {
        self.files.iter().any(|file| file.starts_with(path))
    }
}

/// The path with its folder resolved (symlinks, `..`), as file events name it;
/// the file itself may not exist. Lexically absolute when the folder is missing.
fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(parent) => parent.join(name),
            Err(_) => crate::workspace::normalised(&absolute),
        },
        _ => absolute,
    }
}

/// The content of each watched file (`None`: absent or unreadable).
pub type Fingerprint = BTreeMap<PathBuf, Option<blake3::Hash>>;

/// Files up to this size are hashed on every look: the file system's clock is
/// coarse (milliseconds), so two quick saves of one length can share a time.
const ALWAYS_HASHED_BYTES: u64 = 1 << 20;

/// Content hashes of watched files; a big file is rehashed only when its size
/// or modification time moved: an edit to a pipeline must not rehash a 250 MB CSV.
#[derive(Debug, Default)]
pub struct Contents {
    known: HashMap<PathBuf, (u64, SystemTime, blake3::Hash)>,
}

impl Contents {
    pub fn fingerprint(&mut self, set: &WatchSet) -> Fingerprint {
        set.files
            .iter()
            .map(|file| (file.clone(), self.hash(file)))
            .collect()
    }

    fn hash(&mut self, file: &Path) -> Option<blake3::Hash> {
        let meta = std::fs::metadata(file).ok().filter(|m| m.is_file())?;
        let stamp = (meta.len(), meta.modified().ok()?);
        if let Some((len, modified, hash)) = self.known.get(file)
            && (*len, *modified) == stamp
            && stamp.0 > ALWAYS_HASHED_BYTES
        {
            return Some(*hash);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_mmap_rayon(file).ok()?;
        let hash = hasher.finalize();
        self.known.insert(file.to_path_buf(), (stamp.0, stamp.1, hash));
        Some(hash)
    }
}

/// The files whose content differs between two fingerprints.
pub fn changed(before: &Fingerprint, after: &Fingerprint) -> Vec<PathBuf> {
    let files: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    files
        .into_iter()
        .filter(|file| before.get(*file).copied().flatten() != after.get(*file).copied().flatten())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(root: &Path) -> Workspace {
        Workspace::new(root, None)
    }

    #[test]
    fn outputs_are_never_watched_and_folders_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("reports/p")).unwrap();
        std::fs::write(root.join("p.toml"), "").unwrap();
        let named = [
            root.join("p.toml"),
            root.join("reports/p/metrics.json"),
            root.join(".fkp/x"),
            root.join("missing/deeper/faces.csv"),
        ];
        let set = WatchSet::new(&named, None, &workspace(&root));
        assert_eq!(
            set.files().iter().cloned().collect::<Vec<_>>(),
            vec![root.join("missing/deeper/faces.csv"), root.join("p.toml")]
        );
        assert_eq!(set.outputs.len(), 2);
        // A missing folder is watched through its nearest existing ancestor.
        assert_eq!(set.dirs().into_iter().collect::<Vec<_>>(), vec![root.clone()]);
        assert!(set.concerns(&root.join("p.toml")));
        assert!(set.concerns(&root.join("missing")), "creating the folder matters");
        assert!(!set.concerns(&root.join(".p.toml.swp")));
        assert!(!set.concerns(&root.join("reports")));
    }

    #[test]
    fn a_plan_watches_what_it_extends_its_report_members_and_their_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let write = |name: &str, text: &str| std::fs::write(root.join(name), text).unwrap();
        write(
            "base.toml",
            "[ingest]\ntrain = \"data/faces.csv\"\n[eda]\n[model]\narch = \"lenet\"\n[train]\n\
             [evaluate]\ntruth = \"truth.csv\"\n",
        );
        write(
            "a.toml",
            "[pipeline]\nextends = \"base.toml\"\n[prepare]\nval_file = \"val.csv\"\n",
        );
        write("report.toml", "[report]\npipelines = [\"a.toml\"]\n");
        let graph = Graph::load(&[root.join("report.toml")]).unwrap();
        let set = WatchSet::new(&[root.join("report.toml")], Some(&graph), &workspace(&root));
        let names: Vec<String> = set
            .files()
            .iter()
            .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "a.toml",
                "base.toml",
                "data/faces.csv",
                "report.toml",
                "truth.csv",
                "val.csv"
            ]
        );
    }

    #[test]
    fn a_save_that_changes_nothing_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let file = root.join("p.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let set = WatchSet::new(std::slice::from_ref(&file), None, &workspace(&root));
        let mut contents = Contents::default();
        let before = contents.fingerprint(&set);
        // Rewritten with the same bytes (a new modification time): same content.
        std::fs::write(&file, "a = 1\n").unwrap();
        assert!(changed(&before, &contents.fingerprint(&set)).is_empty());
        std::fs::write(&file, "a = 2\n").unwrap();
        assert_eq!(changed(&before, &contents.fingerprint(&set)), vec![file.clone()]);
        std::fs::remove_file(&file).unwrap();
        let gone = contents.fingerprint(&set);
        assert_eq!(gone[&file], None);
        assert_eq!(changed(&before, &gone), vec![file]);
    }
}
