//! Reads a whole data file into memory, undoing gzip or zip compression. The format
//! is told by the file's first bytes, not its name, so `training.zip`,
//! `training.csv.gz` and `training.csv` all just work.

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

pub fn read_text_file(path: &Path, console: &Console) -> Result<Vec<u8>, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: a FIFO would block the open, /dev/zero never end.
    if !std::fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut file = File::open(path).map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_error)?;
    let magic = &magic[..n];
    drop(file);

    if magic.starts_with(&ZIP_MAGIC) {
        return read_zip(path);
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

/// The one `.csv` inside a zip archive (Kaggle ships `training.zip` holding `training.csv`).
fn read_zip(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |e: zip::result::ZipError| DataError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(corrupt)?;
    let csv_names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .filter(|name| name.to_ascii_lowercase().ends_with(".csv") && !name.starts_with("__MACOSX/"))
        .map(|name| name.into_owned())
        .collect();
    let name = match csv_names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(DataError::Archive {
                path: path.to_path_buf(),
                message: "the zip archive holds no .csv file".to_string(),
            });
        }
        many => {
            return Err(DataError::Archive {
                path: path.to_path_buf(),
                message: format!(
                    "the zip archive holds several .csv files ({}); unpack the one you mean",
                    many.join(", ")
                ),
            });
        }
    };
    let mut entry = archive.by_name(&name).map_err(corrupt)?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    // The zip reader checks the CRC at the end, so a damaged member fails here.
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt_or_io(path, e))?;
    Ok(bytes)
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
        read_text_file(&path, &Console::silent())
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
        let error = read_text_file(dir.path(), &Console::silent()).unwrap_err();
        assert!(error.to_string().ends_with("is not a regular file"), "{error}");
    }

    #[test]
    fn a_zip_must_hold_exactly_one_csv() {
        let error = read(&zip_of(&[("a.csv", TEXT), ("b.csv", TEXT)]), "t.zip").unwrap_err();
        assert!(error.to_string().contains("several .csv files"), "{error}");
        let error = read(&zip_of(&[("readme.txt", TEXT)]), "t.zip").unwrap_err();
        assert!(error.to_string().contains("no .csv file"), "{error}");
    }
}
