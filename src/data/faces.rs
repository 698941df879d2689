//! A table of faces in memory: pixels and keypoint coordinates, row-major.

/// Faces read from a Kaggle-layout file or from an ingested Parquet file.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceTable {
    /// Coordinate column names in file order: `left_eye_center_x`, `left_eye_center_y`, ...
    /// Empty for unlabelled files (Kaggle's `test.csv`).
    pub coordinate_names: Vec<String>,
    /// Images are `side` x `side` pixels.
    pub side: usize,
    /// 0-based index of each row among the data rows of the source file.
    pub source_rows: Vec<u32>,
    /// The `ImageId` column, for files that have one.
    pub image_ids: Option<Vec<i64>>,
    /// `len() * coordinate_names.len()` values; NaN marks a missing label.
    pub coords: Vec<f32>,
    /// `len() * side * side` grey levels, row-major within each image.
    pub pixels: Vec<u8>,
}

impl FaceTable {
    pub fn len(&self) -> usize {
        self.source_rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source_rows.is_empty()
    }

    pub fn pixel_count(&self) -> usize {
        self.side * self.side
    }

    pub fn image(&self, row: usize) -> &[u8] {
        let n = self.pixel_count();
        &self.pixels[row * n..(row + 1) * n]
    }

    pub fn row_coords(&self, row: usize) -> &[f32] {
        let n = self.coordinate_names.len();
        &self.coords[row * n..(row + 1) * n]
    }

    /// Keypoint names: the coordinate names without `_x`/`_y`, one per pair.
    pub fn keypoint_names(&self) -> Vec<String> {
        keypoint_names(&self.coordinate_names)
    }

    /// How many rows have each coordinate present.
    pub fn presence(&self) -> Vec<usize> {
        let mut present = vec![0; self.coordinate_names.len()];
        for row in 0..self.len() {
            for (count, value) in present.iter_mut().zip(self.row_coords(row)) {
                *count += usize::from(!value.is_nan());
            }
        }
        present
    }

    /// Rows with every coordinate present.
    pub fn complete_rows(&self) -> usize {
        (0..self.len())
            .filter(|&row| self.row_coords(row).iter().all(|v| !v.is_nan()))
            .count()
    }
}

pub fn keypoint_names(coordinate_names: &[String]) -> Vec<String> {
    coordinate_names
        .iter()
        .step_by(2)
        .map(|name| name.strip_suffix("_x").unwrap_or(name).to_string())
        .collect()
}
