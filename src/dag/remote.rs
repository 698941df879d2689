//! A cache shared between machines on an object store: `s3://bucket/prefix`
//! (credentials and endpoint from the standard `AWS_*` environment variables),
//! or a folder (`file:///shared/fkp-cache`, or a plain path) on a network
//! filesystem. An entry is `<prefix>/<stage>/<key>/` with the same files as in
//! `.fkp/entries/`.
//!
//! Uploads put every file first and the manifest last, so a reader never sees
//! a manifest whose files are not all there; a reader trusts a remote entry only
//! when every file it lists (reports included) has the listed hash, and
//! otherwise recomputes it, with a warning. Two machines pushing one key write
//! the same bytes (outputs are a function of the key): neither breaks the other.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::hashing::hash_bytes;
use super::store::{MANIFEST, Manifest, Store, TIMING};
use crate::stages::StageKind;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote cache `{url}`: {message}")]
    Open { url: String, message: String },
    #[error("remote cache `{url}`: {action} {path}: {source}")]
    Transfer {
        url: String,
        action: &'static str,
        path: String,
        source: Box<object_store::Error>,
    },
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: std::io::Error },
}

/// What fetching an entry found.
pub enum Fetched {
    /// Downloaded, checked and installed in the local cache.
    Entry(Box<Manifest>),
    /// The remote has no (complete) entry for the key.
    Absent,
    /// The remote entry does not match its manifest: it is ignored.
    Corrupt(String),
}

pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: tokio::runtime::Runtime,
}

/// Whether `url` names a remote fkp can use: `s3://bucket[/prefix]`, or a
/// folder (`file:///path`, or a path). Says what is wrong otherwise.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the remote is empty: write s3://bucket/prefix or a folder".to_string());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        return match valid {
            true => Ok(()),
            false => Err(format!(
                "`{bucket}` is not an S3 bucket name (3-63 lowercase letters, digits, `.` and `-`): \
                 write s3://bucket/prefix"
            )),
        };
    }
    match url.split_once("://") {
        Some(("file", path)) if path.starts_with('/') => Ok(()),
        Some(("file", _)) => Err("a file:// remote needs an absolute path: file:///shared/fkp".to_string()),
        Some((scheme, _)) => Err(format!(
            "fkp does not speak {scheme}:// remotes: write s3://bucket/prefix, file:///path or a folder"
        )),
        None => Ok(()),
    }
}

/// Whether an S3 endpoint is an http(s) URL with a host.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("not a URL ({e})"))?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) if !host.is_empty() => Ok(()),
        ("http" | "https", _) => Err("the URL names no host".to_string()),
        (scheme, _) => Err(format!("an S3 endpoint is http:// or https://, not {scheme}://")),
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

impl Remote {
    /// Connects to the remote named by `url`. Nothing is read yet.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        let open_error = |message: String| RemoteError::Open {
            url: url.to_string(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| open_error(format!("cannot start its I/O runtime: {e}")))?;
        // TLS for https endpoints; once per process (a second install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        check_url(url).map_err(open_error)?;
        // object_store panics on an endpoint it cannot parse: it is checked first.
        for variable in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"] {
            if let Ok(endpoint) = std::env::var(variable)
                && url.starts_with("s3://")
            {
                check_endpoint(&endpoint)
                    .map_err(|why| open_error(format!("{variable}={endpoint:?}: {why}")))?;
            }
        }
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // An endpoint that does not answer costs seconds, not the default's minutes of retries.
            let retry = object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..object_store::RetryConfig::default()
            };
            // A server that accepts but never answers is given up on after 15 s of silence.
            let client = object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_read_timeout(Duration::from_secs(15))
                .with_timeout(Duration::from_secs(600));
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client);
            // The name the AWS CLI and SDKs read for a custom endpoint (MinIO, moto, Ceph).
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            let store = builder.build().map_err(|e| open_error(e.to_string()))?;
            (Arc::new(store), prefix.to_string())
        } else {
            let folder = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            std::fs::create_dir_all(&folder)
                .map_err(|e| open_error(format!("cannot create the folder: {e}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&folder)
                .map_err(|e| open_error(e.to_string()))?;
            (Arc::new(store), String::new())
        };
        Ok(Remote {
            url: url.to_string(),
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn object(&self, kind: StageKind, key: &str, file: &str) -> Path {
        let mut path = self.prefix.clone().join(kind.name()).join(key);
        for part in file.split('/') {
            path = path.join(part);
        }
        path
    }

    fn transfer_error(&self, action: &'static str, path: &Path, source: object_store::Error) -> RemoteError {
        RemoteError::Transfer {
            url: self.url.clone(),
            action,
            path: path.to_string(),
            source: Box::new(source),
        }
    }

    /// The remote's bytes at `path`; `None` when there is no such object.
    fn get(&self, path: &Path) -> Result<Option<Vec<u8>>, RemoteError> {
        let result = self.runtime.block_on(async {
            match self.store.get(path).await {
                Ok(found) => found.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        });
        result
            .map(|bytes| bytes.map(|b| b.to_vec()))
            .map_err(|e| self.transfer_error("cannot read", path, e))
    }

    fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.runtime
            .block_on(self.store.put(path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.transfer_error("cannot write", path, e))
    }

    /// Whether the remote holds the manifest of this entry (its files are
    /// checked only when fetched).
    pub fn has(&self, kind: StageKind, key: &str) -> Result<bool, RemoteError> {
        let path = self.object(kind, key, MANIFEST);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(self.transfer_error("cannot look up", &path, error)),
        }
    }

    /// Downloads the entry `kind`/`key` into the local cache: its files into a
    /// pending entry, each checked against the manifest, then the manifest.
    pub fn fetch(&self, store: &Store, kind: StageKind, key: &str) -> Result<Fetched, RemoteError> {
        let Some(bytes) = self.get(&self.object(kind, key, MANIFEST))? else {
            return Ok(Fetched::Absent);
        };
        let Some(manifest) = Manifest::parse(&bytes, key) else {
            return Ok(Fetched::Corrupt(
                "its manifest is not one this fkp reads".to_string(),
            ));
        };
        let local = |path: &FsPath, source| RemoteError::Local {
            path: path.to_path_buf(),
            source,
        };
        let pending = store.begin(kind, key).map_err(|e| local(store.root(), e))?;
        for file in manifest.outputs.iter().chain(&manifest.reports) {
            let relative = file.path.to_string_lossy().replace('\\', "/");
            let Some(bytes) = self.get(&self.object(kind, key, &relative))? else {
                return Ok(Fetched::Corrupt(format!("{relative} is missing")));
            };
            // Checked in memory: nothing unsound is written.
            if bytes.len() as u64 != file.bytes || hash_bytes(&bytes) != file.hash {
                return Ok(Fetched::Corrupt(format!("{relative} does not match its hash")));
            }
            let target = pending.dir().join(&file.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| local(parent, e))?;
            }
            std::fs::write(&target, &bytes).map_err(|e| local(&target, e))?;
        }
        // Volatile, never hashed: kept when there, not required.
        if let Some(timing) = self.get(&self.object(kind, key, TIMING))? {
            let target = pending.dir().join(TIMING);
            std::fs::write(&target, timing).map_err(|e| local(&target, e))?;
        }
        store
            .commit_fetched(pending, &manifest)
            .map_err(|e| local(&store.entry_dir(kind, key), e))?;
        Ok(Fetched::Entry(Box::new(manifest)))
    }

    /// Uploads the local entry `kind`/`key`: every file, then the manifest.
    pub fn push(&self, store: &Store, kind: StageKind, key: &str) -> Result<(), RemoteError> {
        let dir = store.entry_dir(kind, key);
        let read = |path: PathBuf| std::fs::read(&path).map_err(|source| RemoteError::Local { path, source });
        let manifest_bytes = read(dir.join(MANIFEST))?;
        let manifest = Manifest::parse(&manifest_bytes, key).ok_or_else(|| RemoteError::Local {
            path: dir.join(MANIFEST),
            source: std::io::Error::other("not a manifest of this fkp"),
        })?;
        let mut files: Vec<PathBuf> = manifest
            .outputs
            .iter()
            .chain(&manifest.reports)
            .map(|file| file.path.clone())
            .collect();
        if dir.join(TIMING).is_file() {
            files.push(PathBuf::from(TIMING));
        }
        for file in files {
            let bytes = read(dir.join(&file))?;
            self.put(
                &self.object(kind, key, &file.to_string_lossy().replace('\\', "/")),
                bytes,
            )?;
        }
        self.put(&self.object(kind, key, MANIFEST), manifest_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_checked_before_use() {
        for good in [
            "s3://fkp-cache/study",
            "s3://my.bucket",
            "/shared/fkp",
            "file:///shared/fkp",
            "rel/dir",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "s3://",
            "s3://Bad_Bucket/x",
            "s3://ab",
            "ftp://x",
            "file://relative",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_endpoint("http://127.0.0.1:5555").is_ok());
        for bad in ["not a url", "http://", "http://[::1", "ftp://127.0.0.1:5555"] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
