//! Honest keypoint metrics: errors in pixels over labelled points only (a filled
//! value is never a label), per keypoint, and PCK against the inter-ocular
//! distance. One rule for every metric: with no labelled point there is no
//! number (`None`), never a 0 or a NaN that reads like a score.

/// RMSE and MAE in pixels over every labelled coordinate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PixelErrors {
    pub rmse: f64,
    pub mae: f64,
    /// Labelled coordinates scored.
    pub count: usize,
}

/// `pred` and `target` in pixels, row-major `rows x coords`; `labelled` 1 where
/// the target is a real label. None when no coordinate is labelled.
pub fn pixel_errors(pred: &[f32], target: &[f32], labelled: &[u8]) -> Option<PixelErrors> {
    let (mut squared, mut absolute, mut count) = (0.0f64, 0.0f64, 0usize);
    for ((p, t), &l) in pred.iter().zip(target).zip(labelled) {
        if l == 1 {
            let d = f64::from(*p) - f64::from(*t);
            squared += d * d;
            absolute += d.abs();
            count += 1;
        }
    }
    let n = count as f64;
    (count > 0).then(|| PixelErrors {
        rmse: (squared / n).sqrt(),
        mae: absolute / n,
        count,
    })
}

/// RMSE per keypoint over its labelled coordinates (x and y together); None for
/// a keypoint never labelled.
pub fn per_keypoint(
    pred: &[f32],
    target: &[f32],
    labelled: &[u8],
    coords: usize,
) -> Vec<(Option<f64>, usize)> {
    (0..coords / 2)
        .map(|k| {
            let (mut squared, mut count) = (0.0f64, 0usize);
            for row in 0..pred.len() / coords {
                for c in [2 * k, 2 * k + 1] {
                    let i = row * coords + c;
                    if labelled[i] == 1 {
                        let d = f64::from(pred[i]) - f64::from(target[i]);
                        squared += d * d;
                        count += 1;
                    }
                }
            }
            ((count > 0).then(|| (squared / count as f64).sqrt()), count)
        })
        .collect()
}

/// Percentage of labelled keypoints predicted within `alpha` times the
/// inter-ocular distance (between the true eye centres), over rows whose eye
/// centres are both labelled. None when the point set has no eye centres or no
/// row has both.
pub fn pck(
    pred: &[f32],
    target: &[f32],
    labelled: &[u8],
    keypoint_names: &[String],
    alpha: f64,
) -> Option<f64> {
    let coords = keypoint_names.len() * 2;
    let left = keypoint_names.iter().position(|n| n == "left_eye_center")?;
    let right = keypoint_names.iter().position(|n| n == "right_eye_center")?;
    let point = |values: &[f32], row: usize, k: usize| {
        (
            f64::from(values[row * coords + 2 * k]),
            f64::from(values[row * coords + 2 * k + 1]),
        )
    };
    let has =
        |row: usize, k: usize| labelled[row * coords + 2 * k] == 1 && labelled[row * coords + 2 * k + 1] == 1;
    let (mut hits, mut total) = (0usize, 0usize);
    for row in 0..pred.len() / coords {
        if !(has(row, left) && has(row, right)) {
            continue;
        }
        let (lx, ly) = point(target, row, left);
        let (rx, ry) = point(target, row, right);
        let threshold = alpha * ((lx - rx).powi(2) + (ly - ry).powi(2)).sqrt();
        for k in 0..keypoint_names.len() {
            if has(row, k) {
                let (px, py) = point(pred, row, k);
                let (tx, ty) = point(target, row, k);
                total += 1;
                hits += usize::from(((px - tx).powi(2) + (py - ty).powi(2)).sqrt() <= threshold);
            }
        }
    }
    (total > 0).then(|| 100.0 * hits as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_labelled_coordinates_only() {
        let pred = [1.0, 2.0, 50.0, 4.0];
        let target = [0.0, 0.0, 0.0, 0.0];
        let labelled = [1, 1, 0, 1];
        let e = pixel_errors(&pred, &target, &labelled).unwrap();
        assert_eq!(e.count, 3);
        assert!((e.rmse - (21.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((e.mae - 7.0 / 3.0).abs() < 1e-12);
        let per = per_keypoint(&pred, &target, &labelled, 4);
        assert!((per[0].0.unwrap() - (5.0f64 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(per[1], (Some(4.0), 1));
    }

    #[test]
    fn pck_uses_the_inter_ocular_distance() {
        let names: Vec<String> = ["left_eye_center", "right_eye_center", "nose_tip"]
            .map(String::from)
            .to_vec();
        // Eyes 20 px apart; the nose is off by 1.5 px, the left eye by 3 px.
        let target = [60.0, 40.0, 40.0, 40.0, 50.0, 55.0];
        let pred = [63.0, 40.0, 40.0, 40.0, 50.0, 56.5];
        let labelled = [1, 1, 1, 1, 1, 1];
        // 5% of 20 = 1 px: only the right eye; 10% = 2 px: right eye and nose.
        assert!((pck(&pred, &target, &labelled, &names, 0.05).unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert!((pck(&pred, &target, &labelled, &names, 0.10).unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(pck(&pred, &target, &[1, 1, 0, 0, 1, 1], &names, 0.1), None);
    }

    #[test]
    fn no_labelled_point_means_no_number() {
        let names: Vec<String> = ["left_eye_center", "right_eye_center"].map(String::from).to_vec();
        let (pred, target, nothing) = ([1.0, 2.0, 3.0, 4.0], [0.0; 4], [0u8; 4]);
        assert_eq!(pixel_errors(&pred, &target, &nothing), None);
        assert_eq!(pixel_errors(&[], &[], &[]), None);
        assert_eq!(per_keypoint(&pred, &target, &nothing, 4), [(None, 0), (None, 0)]);
        assert_eq!(pck(&pred, &target, &nothing, &names, 0.1), None);
        // One labelled point is a number, and it is its error.
        let one = pixel_errors(&pred, &target, &[0, 0, 1, 0]).unwrap();
        assert_eq!((one.rmse, one.mae, one.count), (3.0, 3.0, 1));
    }
}
