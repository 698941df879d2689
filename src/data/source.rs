//! Reads a whole data file into memory, undoing gzip or zip compression. The format
//! is told by the file's first bytes, not its name, so `training.zip`,
//! `training.csv.gz` and `training.csv` all just work, and so does Kaggle's
//! competition archive (`facial-keypoints-detection.zip`, holding `training.zip`,
//! `test.zip`, `IdLookupTable.csv` and `SampleSubmission.csv`): a reader names the
//! [`Member`] it wants and gets it, one level of nested zip undone.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::DataError;
use crate::console::{Console, Unit};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// An empty zip archive is only its end-of-central-directory record.
const EMPTY_ZIP_MAGIC: [u8; 4] = *b"PK\x05\x06";
/// Inputs above this size get a progress bar (when stderr is a terminal).
const BAR_THRESHOLD: u64 = 32 << 20;

/// Which of Kaggle's files a reader wants, for an archive that holds several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// `training.csv` or `training.zip`.
    Training,
    /// `test.csv` or `test.zip`.
    Test,
    /// `IdLookupTable.csv`.
    Lookup,
}

impl Member {
    /// The member's file name without its extension, lower-cased, as Kaggle names it.
    fn stem(self) -> &'static str {
        match self {
            Member::Training => "training",
            Member::Test => "test",
            Member::Lookup => "idlookuptable",
        }
    }

    fn kaggle_names(self) -> &'static str {
        match self {
            Member::Training => "`training.csv` or `training.zip`",
            Member::Test => "`test.csv` or `test.zip`",
            Member::Lookup => "`IdLookupTable.csv`",
        }
    }
}

/// The Kaggle files that `path` holds when it is a zip archive of several, as
/// Kaggle's competition archive holds the test file and lookup table beside the
/// training file; none otherwise. Anything unreadable holds none: the reader
/// reports it when the file is read.
pub fn archive_members(path: &Path) -> Vec<Member> {
    // Checked before opening: a FIFO would block the open.
    if check_readable(path).is_err() {
        return Vec::new();
    }
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(archive) = zip::ZipArchive::new(BufReader::new(file)) else {
        return Vec::new();
    };
    let candidates = data_members(&archive);
    if candidates.len() < 2 {
        return Vec::new();
    }
    [Member::Training, Member::Test, Member::Lookup]
        .into_iter()
        .filter(|member| candidates.iter().any(|name| stem_of(name) == member.stem()))
        .collect()
}

/// The text without a UTF-8 byte-order mark, which Windows tools write first.
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// Checks that `path` is a regular file that can be opened, without reading it
/// (a FIFO would block the open, `/dev/zero` never end): before every read, and
/// for commands that must know before a long training that their input is there.
pub fn check_readable(path: &Path) -> Result<(), DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    File::open(path).map(drop).map_err(io_error)
}

pub fn read_text_file(path: &Path, member: Member, console: &Console) -> Result<Vec<u8>, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: a FIFO would block the open, /dev/zero never end.
    check_readable(path)?;
    let mut file = File::open(path).map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_error)?;
    let magic = &magic[..n];
    drop(file);

    if magic.starts_with(&ZIP_MAGIC) {
        let file = File::open(path).map_err(io_error)?;
        return read_zip(path, BufReader::new(file), member, true);
    }
    if magic.starts_with(&EMPTY_ZIP_MAGIC) {
        return Err(DataError::Archive {
            path: path.to_path_buf(),
            message: "the zip archive is empty: it holds no .csv file".to_string(),
        });
    }
    let file = File::open(path).map_err(io_error)?;
    let bar = console.progress(size, size > BAR_THRESHOLD, "reading", Unit::Bytes);
    let reader = BufReader::with_capacity(1 << 20, bar.wrap_read(file));
    let mut bytes = Vec::with_capacity(if magic.starts_with(&GZIP_MAGIC) {
        (size as usize).saturating_mul(4)
    } else {
        size as usize
    });
    let result = if magic.starts_with(&GZIP_MAGIC) {
        flate2::read::MultiGzDecoder::new(reader).read_to_end(&mut bytes)
    } else {
        let mut reader = reader;
        reader.read_to_end(&mut bytes)
    };
    bar.finish_and_clear();
    result.map_err(|e| corrupt_or_io(path, e))?;
    Ok(bytes)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn corrupt_or_io(path: &Path, error: std::io::Error) -> DataError {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::InvalidData | ErrorKind::InvalidInput => DataError::Corrupt {
            path: path.to_path_buf(),
            message: error.to_string(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source: error,
        },
    }
}

/// The data files of an archive: `.csv` files and nested `.zip` archives, in the
/// archive's order, without macOS's resource forks.
fn data_members<R: Read + std::io::Seek>(archive: &zip::ZipArchive<R>) -> Vec<String> {
    archive
        .file_names()
        .filter_map(Result::ok)
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            (lower.ends_with(".csv") || lower.ends_with(".zip")) && !name.starts_with("__MACOSX/")
        })
        .map(|name| name.into_owned())
        .collect()
}

/// A member's file name without folders and extension, lower-cased.
fn stem_of(name: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    stem.to_ascii_lowercase()
}

/// The archive's one data file, or, when it holds several, the one named as Kaggle
/// names `member`. A member that is itself a zip (`training.zip` inside the
/// competition archive) is opened in turn, one level deep.
fn read_zip<R: Read + std::io::Seek>(
    path: &Path,
    reader: R,
    member: Member,
    may_nest: bool,
) -> Result<Vec<u8>, DataError> {
    let corrupt = |e: zip::result::ZipError| DataError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let archive_error = |message: String| DataError::Archive {
        path: path.to_path_buf(),
        message,
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(corrupt)?;
    let candidates = data_members(&archive);
    let name = match candidates.as_slice() {
        [one] => one.clone(),
        [] => return Err(archive_error("the zip archive holds no .csv file".to_string())),
        many => many
            .iter()
            .find(|name| stem_of(name) == member.stem())
            .cloned()
            .ok_or_else(|| {
                archive_error(format!(
                    "the zip archive holds several files ({}) and none is Kaggle's {}; unpack the one you mean",
                    crate::text::excerpt(&many.join(", ")),
                    member.kaggle_names()
                ))
            })?,
    };
    let mut entry = archive.by_name(&name).map_err(corrupt)?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    // The zip reader checks the CRC at the end, so a damaged member fails here.
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt_or_io(path, e))?;
    if !bytes.starts_with(&ZIP_MAGIC) {
        return Ok(bytes);
    }
    if !may_nest {
        return Err(archive_error(format!(
            "`{}` is a zip inside a zip inside a zip: unpack the outer archive",
            crate::text::excerpt(&name)
        )));
    }
    read_zip(path, std::io::Cursor::new(bytes), member, false).map_err(|error| match error {
        DataError::Archive { path, message } => DataError::Archive {
            path,
            message: format!("in `{}`: {message}", crate::text::excerpt(&name)),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"a,b\n1,2\n3,4\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn read(bytes: &[u8], name: &str) -> Result<Vec<u8>, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        read_text_file(&path, Member::Training, &Console::silent())
    }

    #[test]
    fn plain_gzip_and_zip_read_the_same() {
        assert_eq!(read(TEXT, "a.csv").unwrap(), TEXT);
        assert_eq!(read(&gzip(TEXT), "a.csv.gz").unwrap(), TEXT);
        assert_eq!(read(&zip_of(&[("training.csv", TEXT)]), "t.zip").unwrap(), TEXT);
    }

    #[test]
    fn a_truncated_gzip_is_an_error_not_a_short_file() {
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i},{}\n", i * 7).into_bytes())
            .collect();
        let gz = gzip(&big);
        let error = read(&gz[..gz.len() / 2], "t.csv.gz").unwrap_err();
        assert!(matches!(error, DataError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn a_truncated_zip_is_an_error() {
        let zipped = zip_of(&[("training.csv", TEXT)]);
        let error = read(&zipped[..zipped.len() - 30], "t.zip").unwrap_err();
        assert!(matches!(error, DataError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn an_empty_zip_or_a_folder_is_named_as_such() {
        let error = read(&zip_of(&[]), "t.zip").unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(": the zip archive is empty: it holds no .csv file"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let error = read_text_file(dir.path(), Member::Training, &Console::silent()).unwrap_err();
        assert!(error.to_string().ends_with("is not a regular file"), "{error}");
    }

    #[test]
    fn a_zip_of_several_files_must_hold_the_one_asked_for() {
        let error = read(&zip_of(&[("a.csv", TEXT), ("b.csv", TEXT)]), "t.zip").unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("holds several files (a.csv, b.csv) and none is Kaggle's `training.csv` or `training.zip`; unpack the one you mean"),
            "{error}"
        );
        let error = read(&zip_of(&[("readme.txt", TEXT)]), "t.zip").unwrap_err();
        assert!(error.to_string().contains("no .csv file"), "{error}");
    }

    #[test]
    fn the_competition_archive_gives_each_member_its_file() {
        let train = zip_of(&[("training.csv", b"train\n")]);
        let test = zip_of(&[("test.csv", b"test\n")]);
        let archive = zip_of(&[
            ("IdLookupTable.csv", b"lookup\n"),
            ("SampleSubmission.csv", b"sample\n"),
            ("test.zip", &test),
            ("training.zip", &train),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("facial-keypoints-detection.zip");
        std::fs::write(&path, &archive).unwrap();
        let read = |member| read_text_file(&path, member, &Console::silent()).unwrap();
        assert_eq!(read(Member::Training), b"train\n");
        assert_eq!(read(Member::Test), b"test\n");
        assert_eq!(read(Member::Lookup), b"lookup\n");
        assert_eq!(
            archive_members(&path),
            [Member::Training, Member::Test, Member::Lookup]
        );
        // A plain training.zip is not an archive of several files.
        let single = dir.path().join("training.zip");
        std::fs::write(&single, &train).unwrap();
        assert!(archive_members(&single).is_empty());
        assert_eq!(
            read_text_file(&single, Member::Test, &Console::silent()).unwrap(),
            b"train\n"
        );
    }

    #[test]
    fn zips_nest_one_level_only() {
        let inner = zip_of(&[("training.csv", TEXT)]);
        let middle = zip_of(&[("training.zip", &inner)]);
        let outer = zip_of(&[("training.zip", &middle)]);
        assert_eq!(read(&middle, "m.zip").unwrap(), TEXT);
        let error = read(&outer, "o.zip").unwrap_err();
        assert!(
            error.to_string().contains("a zip inside a zip inside a zip"),
            "{error}"
        );
    }
}
