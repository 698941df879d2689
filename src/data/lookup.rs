//! Kaggle's `IdLookupTable.csv`: which coordinate of which test image each row of a
//! submission must give (`RowId,ImageId,FeatureName,Location`).

use std::path::Path;

use super::DataError;
use crate::text::{excerpt, excerpt_bytes};

#[derive(Debug, Clone, PartialEq)]
pub struct LookupTable {
    pub row_ids: Vec<i64>,
    pub image_ids: Vec<i64>,
    pub feature_names: Vec<String>,
}

impl LookupTable {
    pub fn len(&self) -> usize {
        self.row_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_ids.is_empty()
    }
}

const COLUMNS: [&str; 3] = ["RowId", "ImageId", "FeatureName"];

/// Reads the table (plain, gzip, zip, or the competition archive's member) and
/// checks it as [`parse_lookup`] does.
pub fn read_lookup(
    path: &Path,
    coordinate_names: &[String],
    test_ids: Option<&[i64]>,
    console: &crate::console::Console,
) -> Result<LookupTable, DataError> {
    let bytes = super::source::read_text_file(path, super::source::Member::Lookup, console)?;
    parse_lookup(path, &bytes, coordinate_names, test_ids)
}

/// Parses the table and checks every `FeatureName` against the training file's
/// coordinate columns and every `ImageId` against the test file's ids (when given).
///
/// Kaggle's own file has CRLF line endings and rows of three fields under a header
/// of four: the empty `Location` has no trailing comma. So a row may stop after
/// `FeatureName`; fewer fields, or more than the header's, is an error naming it.
pub fn parse_lookup(
    path: &Path,
    bytes: &[u8],
    coordinate_names: &[String],
    test_ids: Option<&[i64]>,
) -> Result<LookupTable, DataError> {
    let bytes = super::source::without_bom(bytes);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| DataError::Header {
            path: path.to_path_buf(),
            message: format!("the header is not CSV text: {e}"),
        })?
        .clone();
    let rows = RowReader {
        path,
        positions: column_positions(path, &header)?,
        header,
        coordinate_names,
        known_ids: test_ids.map(|ids| ids.iter().copied().collect()),
    };
    let mut table = LookupTable {
        row_ids: Vec::new(),
        image_ids: Vec::new(),
        feature_names: Vec::new(),
    };
    let mut record = csv::ByteRecord::new();
    let mut lines = LineCounter::default();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    {
        let line = lines.line_of(bytes, &record);
        let (row_id, image_id, feature) = rows.read(&record, line)?;
        table.row_ids.push(row_id);
        table.image_ids.push(image_id);
        table.feature_names.push(feature.to_string());
    }
    if table.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(table)
}

/// Where each of [`COLUMNS`] is in the header.
fn column_positions(path: &Path, header: &csv::StringRecord) -> Result<Vec<usize>, DataError> {
    COLUMNS
        .iter()
        .map(|name| {
            header.iter().position(|h| h == *name).ok_or_else(|| DataError::Header {
                path: path.to_path_buf(),
                message: format!(
                    "no `{name}` column (an IdLookupTable has RowId,ImageId,FeatureName,Location; found: {})",
                    excerpt(&header.iter().collect::<Vec<_>>().join(","))
                ),
            })
        })
        .collect()
}

/// Lines counted from byte offsets: the csv reader's own count drifts on CRLF.
struct LineCounter {
    counted_to: usize,
    line: usize,
}

impl Default for LineCounter {
    fn default() -> Self {
        LineCounter {
            counted_to: 0,
            line: 1,
        }
    }
}

impl LineCounter {
    /// The 1-based line `record` starts on; records come in order.
    fn line_of(&mut self, bytes: &[u8], record: &csv::ByteRecord) -> usize {
        let mut start = record
            .position()
            .map_or(self.counted_to, |p| p.byte() as usize)
            .min(bytes.len());
        // After a CR the reader may place the record at the LF that ends that line.
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        self.line += memchr::memchr_iter(b'\n', &bytes[self.counted_to..start]).count();
        self.counted_to = start;
        self.line
    }
}

/// Reads and checks one row of the table.
struct RowReader<'a> {
    path: &'a Path,
    header: csv::StringRecord,
    /// Where each of [`COLUMNS`] is.
    positions: Vec<usize>,
    coordinate_names: &'a [String],
    /// The test file's image ids, when it is known.
    known_ids: Option<std::collections::HashSet<i64>>,
}

impl RowReader<'_> {
    /// `RowId`, `ImageId` and `FeatureName` of the row on `line`, checked.
    fn read<'r>(&self, record: &'r csv::ByteRecord, line: usize) -> Result<(i64, i64, &'r str), DataError> {
        self.check_width(record, line)?;
        let bad = |column: &str, message: String| DataError::BadRow {
            path: self.path.to_path_buf(),
            line,
            column: column.to_string(),
            message,
        };
        let field = |i: usize| -> Result<&'r str, DataError> {
            std::str::from_utf8(&record[self.positions[i]])
                .map(str::trim)
                .map_err(|_| bad(COLUMNS[i], "the field is not UTF-8 text".to_string()))
        };
        let integer = |i: usize| -> Result<i64, DataError> {
            let text = field(i)?;
            text.parse()
                .map_err(|_| bad(COLUMNS[i], format!("`{}` is not an integer", excerpt(text))))
        };
        let row_id = integer(0)?;
        let image_id = integer(1)?;
        if let Some(known) = &self.known_ids
            && !known.contains(&image_id)
        {
            return Err(bad(
                "ImageId",
                format!("image {image_id} is not in the test file"),
            ));
        }
        let feature = field(2)?;
        if !self.coordinate_names.iter().any(|c| c == feature) {
            return Err(bad(
                "FeatureName",
                format!(
                    "`{}` is not a coordinate column of the training file",
                    excerpt(feature)
                ),
            ));
        }
        Ok((row_id, image_id, feature))
    }

    /// A row may stop after the last column read (Kaggle's leave out the empty
    /// `Location`), and may not be longer than the header.
    fn check_width(&self, record: &csv::ByteRecord, line: usize) -> Result<(), DataError> {
        let needed = self.positions.iter().max().map_or(0, |&p| p + 1);
        let allowed = self.header.len();
        if (needed..=allowed).contains(&record.len()) {
            return Ok(());
        }
        Err(DataError::Width {
            path: self.path.to_path_buf(),
            line,
            found: record.len(),
            expected: match needed == allowed {
                true => needed.to_string(),
                false => format!("{needed} to {allowed}"),
            },
            header: excerpt(&self.header.iter().collect::<Vec<_>>().join(",")),
            row: excerpt_bytes(&record.iter().collect::<Vec<_>>().join(&b","[..])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a_x".to_string(), "a_y".to_string()]
    }

    #[test]
    fn reads_and_checks_the_lookup_table() {
        let text = "RowId,ImageId,FeatureName,Location\n1,1,a_x,\n2,1,a_y,\n3,2,a_x,\n";
        let table = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), Some(&[1, 2])).unwrap();
        assert_eq!(table.row_ids, [1, 2, 3]);
        assert_eq!(table.image_ids, [1, 1, 2]);
        assert_eq!(table.feature_names, ["a_x", "a_y", "a_x"]);
    }

    #[test]
    fn unknown_features_and_images_are_named() {
        let text = "RowId,ImageId,FeatureName,Location\n1,1,a_x,\n2,1,nose_x,\n";
        let err = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.csv:3: column `FeatureName`: `nose_x` is not a coordinate column of the training file"
        );
        let text = "RowId,ImageId,FeatureName,Location\n1,9,a_x,\n";
        let err = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), Some(&[1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.csv:2: column `ImageId`: image 9 is not in the test file"
        );
    }

    #[test]
    fn kaggles_own_layout_reads_rows_without_the_empty_location() {
        // As Kaggle ships it: CRLF, four header columns, three fields a row.
        let text = "RowId,ImageId,FeatureName,Location\r\n1,1,a_x\r\n2,1,a_y\r\n";
        let table = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), Some(&[1])).unwrap();
        assert_eq!(table.row_ids, [1, 2]);
        assert_eq!(table.feature_names, ["a_x", "a_y"]);
    }

    #[test]
    fn bom_blank_lines_and_quotes_are_read() {
        let text = "\u{feff}RowId,ImageId,FeatureName,Location\n\"1\",1,\"a_x\",\n\n2,1,a_y,\n\n";
        let table = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), None).unwrap();
        assert_eq!(table.row_ids, [1, 2]);
        assert_eq!(table.feature_names, ["a_x", "a_y"]);
    }

    #[test]
    fn rows_of_the_wrong_width_are_format_errors_quoting_row_and_header() {
        let text = "RowId,ImageId,FeatureName,Location\r\n1,1,a_x\r\n2,1,a_y,,9\r\n";
        let err = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.csv:3: the row has 5 fields where the header `RowId,ImageId,FeatureName,Location` allows 3 to 4: `2,1,a_y,,9`"
        );
        let text = "RowId,ImageId,FeatureName,Location\n1,1\n";
        let err = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.csv:2: the row has 2 fields where the header `RowId,ImageId,FeatureName,Location` allows 3 to 4: `1,1`"
        );
        let text = "RowId,ImageId,FeatureName,Location\n1,,a_x\n";
        let err = parse_lookup(Path::new("l.csv"), text.as_bytes(), &names(), None).unwrap_err();
        assert_eq!(err.to_string(), "l.csv:2: column `ImageId`: `` is not an integer");
    }
}
