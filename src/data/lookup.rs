//! Kaggle's `IdLookupTable.csv`: which coordinate of which test image each row of a
//! submission must give (`RowId,ImageId,FeatureName,Location`).

use std::path::Path;

use super::DataError;

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

/// Reads the table (plain, gzip or zip) and checks it as [`parse_lookup`] does.
pub fn read_lookup(
    path: &Path,
    coordinate_names: &[String],
    test_ids: Option<&[i64]>,
    console: &crate::console::Console,
) -> Result<LookupTable, DataError> {
    let bytes = super::source::read_text_file(path, console)?;
    parse_lookup(path, &bytes, coordinate_names, test_ids)
}

/// Parses the table and checks every `FeatureName` against the training file's
/// coordinate columns and every `ImageId` against the test file's ids (when given).
pub fn parse_lookup(
    path: &Path,
    bytes: &[u8],
    coordinate_names: &[String],
    test_ids: Option<&[i64]>,
) -> Result<LookupTable, DataError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader.headers().map_err(|e| DataError::Header {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let positions: Vec<usize> = COLUMNS
        .iter()
        .map(|name| {
            header
                .iter()
                .position(|h| h == *name)
                .ok_or_else(|| DataError::Header {
                    path: path.to_path_buf(),
                    message: format!(
                        "no `{name}` column (an IdLookupTable has RowId,ImageId,FeatureName,Location)"
                    ),
                })
        })
        .collect::<Result<_, _>>()?;
    let known_ids: Option<std::collections::HashSet<i64>> = test_ids.map(|ids| ids.iter().copied().collect());
    let mut table = LookupTable {
        row_ids: Vec::new(),
        image_ids: Vec::new(),
        feature_names: Vec::new(),
    };
    for record in reader.records() {
        let record = record.map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let bad = |column: &str, message: String| DataError::BadRow {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            message,
        };
        let field = |i: usize| record.get(positions[i]).unwrap_or("");
        let row_id: i64 = field(0)
            .parse()
            .map_err(|_| bad("RowId", format!("`{}` is not an integer", field(0))))?;
        let image_id: i64 = field(1)
            .parse()
            .map_err(|_| bad("ImageId", format!("`{}` is not an integer", field(1))))?;
        if let Some(known) = &known_ids
            && !known.contains(&image_id)
        {
            return Err(bad(
                "ImageId",
                format!("image {image_id} is not in the test file"),
            ));
        }
        let feature = field(2);
        if !coordinate_names.iter().any(|c| c == feature) {
            return Err(bad(
                "FeatureName",
                format!("`{feature}` is not a coordinate column of the training file"),
            ));
        }
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
}
