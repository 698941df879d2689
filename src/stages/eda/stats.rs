//! The numbers of `[eda]`, computed with polars: per-coordinate summaries,
//! pairwise-complete Pearson correlations, missing-label patterns, pixel statistics.

use std::collections::HashMap;

use polars::prelude::*;

use crate::data::FaceTable;
use crate::data::summary::{Summary, describe};

/// Present values of one coordinate column, as f64.
fn coordinate(faces: &FaceTable, column: usize) -> impl Iterator<Item = Option<f64>> + '_ {
    (0..faces.len()).map(move |row| {
        let v = faces.row_coords(row)[column];
        (!v.is_nan()).then_some(f64::from(v))
    })
}

pub fn coordinate_summaries(faces: &FaceTable) -> Vec<Summary> {
    (0..faces.coordinate_names.len())
        .map(|column| describe(coordinate(faces, column)))
        .collect()
}

/// Pearson's r of two equally long columns; None when either has no spread.
pub fn pearson(a: Vec<f64>, b: Vec<f64>) -> Option<f64> {
    if a.len() < 2 {
        return None;
    }
    let a = Float64Chunked::from_vec("a".into(), a);
    let b = Float64Chunked::from_vec("b".into(), b);
    let da = &a - a.mean()?;
    let db = &b - b.mean()?;
    let cross = (&da * &db).sum()?;
    let spread = ((&da * &da).sum()? * (&db * &db).sum()?).sqrt();
    (spread > 0.0).then(|| cross / spread)
}

/// The correlation of every pair of coordinates over the rows where both are
/// present, in column order.
pub fn correlation_matrix(faces: &FaceTable) -> Vec<Vec<Option<f64>>> {
    let n = faces.coordinate_names.len();
    let mut matrix = vec![vec![None; n]; n];
    for i in 0..n {
        for j in i..n {
            let (a, b): (Vec<f64>, Vec<f64>) = (0..faces.len())
                .filter_map(|row| {
                    let coords = faces.row_coords(row);
                    (!coords[i].is_nan() && !coords[j].is_nan())
                        .then(|| (f64::from(coords[i]), f64::from(coords[j])))
                })
                .unzip();
            let r = pearson(a, b);
            matrix[i][j] = r;
            matrix[j][i] = r;
        }
    }
    matrix
}

/// A set of present keypoints and how many rows have exactly that set.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub present: Vec<bool>,
    pub rows: usize,
}

/// Rows grouped by which keypoints are present (a keypoint counts when both its
/// coordinates are), most common first.
pub fn missing_patterns(faces: &FaceTable) -> Vec<Pattern> {
    let keypoints = faces.coordinate_names.len() / 2;
    let mut counts: HashMap<Vec<bool>, usize> = HashMap::new();
    for row in 0..faces.len() {
        let coords = faces.row_coords(row);
        let present: Vec<bool> = (0..keypoints)
            .map(|k| !coords[2 * k].is_nan() && !coords[2 * k + 1].is_nan())
            .collect();
        *counts.entry(present).or_default() += 1;
    }
    let mut patterns: Vec<Pattern> = counts
        .into_iter()
        .map(|(present, rows)| Pattern { present, rows })
        .collect();
    // Most rows first; ties broken by the pattern itself so the order is stable.
    patterns.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| b.present.cmp(&a.present)));
    patterns
}

pub struct PixelStats {
    /// Mean grey level of each pixel over all images, row-major.
    pub mean_face: Vec<f64>,
    /// How many pixels (over all images) have each grey level.
    pub histogram: Vec<u64>,
    pub image_means: Summary,
    pub image_stds: Summary,
}

pub fn pixel_stats(faces: &FaceTable) -> PixelStats {
    let pixels = faces.pixel_count();
    let mut sums = vec![0u64; pixels];
    let mut histogram = vec![0u64; 256];
    let mut means = Vec::with_capacity(faces.len());
    let mut stds = Vec::with_capacity(faces.len());
    for row in 0..faces.len() {
        let image = faces.image(row);
        let mut total = 0u64;
        let mut total_sq = 0u64;
        for (sum, &p) in sums.iter_mut().zip(image) {
            *sum += u64::from(p);
            histogram[usize::from(p)] += 1;
            total += u64::from(p);
            total_sq += u64::from(p) * u64::from(p);
        }
        let n = pixels as f64;
        let mean = total as f64 / n;
        // Sample std (ddof = 1) of the image's pixels, from exact integer sums.
        let variance = (total_sq as f64 - n * mean * mean) / (n - 1.0);
        means.push(Some(mean));
        stds.push(Some(variance.max(0.0).sqrt()));
    }
    let rows = faces.len().max(1) as f64;
    PixelStats {
        mean_face: sums.iter().map(|&s| s as f64 / rows).collect(),
        histogram,
        image_means: describe(means),
        image_stds: describe(stds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn pearson_matches_hand_computed_values() {
        assert!(close(pearson(vec![1.0, 2.0, 3.0], vec![2.0, 4.0, 6.0]), 1.0));
        assert!(close(pearson(vec![1.0, 2.0, 3.0], vec![3.0, 2.0, 1.0]), -1.0));
        // x = 1 2 3 4, y = 1 3 2 4: dx = -1.5 -.5 .5 1.5, dy = -1.5 .5 -.5 1.5
        // sum dx dy = 2.25 - .25 - .25 + 2.25 = 4; sum dx^2 = sum dy^2 = 5; r = 0.8
        assert!(close(
            pearson(vec![1.0, 2.0, 3.0, 4.0], vec![1.0, 3.0, 2.0, 4.0]),
            0.8
        ));
        assert_eq!(pearson(vec![1.0, 1.0], vec![1.0, 2.0]), None);
    }

    fn faces(coords: Vec<f32>, pixels: Vec<u8>) -> FaceTable {
        let rows = coords.len() / 4;
        FaceTable {
            coordinate_names: vec!["a_x".into(), "a_y".into(), "b_x".into(), "b_y".into()],
            side: 1,
            source_rows: (0..rows as u32).collect(),
            image_ids: None,
            coords,
            pixels,
        }
    }

    #[test]
    fn correlations_use_pairwise_complete_rows() {
        let nan = f32::NAN;
        let t = faces(
            vec![
                1.0, 1.0, 1.0, nan, //
                2.0, 3.0, 2.0, nan, //
                3.0, 2.0, nan, nan, //
                4.0, 4.0, 4.0, nan,
            ],
            vec![0; 4],
        );
        let m = correlation_matrix(&t);
        assert!(close(m[0][1], 0.8));
        assert!(close(m[0][2], 1.0), "rows 0, 1, 3 only");
        assert_eq!(m[0][3], None, "b_y is never present");
        assert!(close(m[1][1], 1.0));
    }

    #[test]
    fn patterns_count_rows_per_set_of_present_keypoints() {
        let nan = f32::NAN;
        let t = faces(
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, nan, nan, 1.0, 1.0, 1.0, nan],
            vec![0; 3],
        );
        let p = missing_patterns(&t);
        assert_eq!(
            p[0],
            Pattern {
                present: vec![true, false],
                rows: 2
            }
        );
        assert_eq!(
            p[1],
            Pattern {
                present: vec![true, true],
                rows: 1
            }
        );
    }

    #[test]
    fn pixel_statistics_are_exact() {
        let t = FaceTable {
            coordinate_names: vec![],
            side: 2,
            source_rows: vec![0, 1],
            image_ids: None,
            coords: vec![],
            pixels: vec![0, 0, 0, 4, 255, 255, 255, 255],
        };
        let s = pixel_stats(&t);
        assert_eq!(s.mean_face, [127.5, 127.5, 127.5, 129.5]);
        assert_eq!(s.histogram[0], 3);
        assert_eq!(s.histogram[255], 4);
        assert!(close(s.image_means.min, 1.0));
        assert!(close(s.image_means.max, 255.0));
        // image 0: 0 0 0 4, mean 1, squares of deviations 1 1 1 9 = 12, /3 = 4, std 2
        assert!(close(s.image_stds.min, 0.0));
        assert!(close(s.image_stds.max, 2.0));
    }
}
