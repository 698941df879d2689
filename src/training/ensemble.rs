//! Seed ensembles: several trainings of one network (`[train] seeds`) predict
//! together by averaging their coordinates.

use super::{Session, TrainError, predict_pixels_tta};
use crate::data::augment::FlipMap;

/// The element-wise mean of the members' predictions, summed in member order
/// in f64, so it is the same on every run.
pub fn average<M: AsRef<[f32]>>(members: &[M]) -> Vec<f32> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    let count = members.len() as f64;
    (0..first.as_ref().len())
        .map(|i| (members.iter().map(|m| f64::from(m.as_ref()[i])).sum::<f64>() / count) as f32)
        .collect()
}

/// Predictions in pixels of every member (each with the transforms of `tta`),
/// averaged (one member's, unchanged: x / 1 is exact).
pub fn predict_ensemble(
    members: &[Box<dyn Session>],
    images: &[u8],
    rows: usize,
    side: usize,
    tta: &[super::Tta],
    flips: &FlipMap,
) -> Result<Vec<f32>, TrainError> {
    let predictions = members
        .iter()
        .map(|session| predict_pixels_tta(session.as_ref(), images, rows, side, tta, flips))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(average(&predictions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_is_the_mean_of_each_coordinate() {
        let members = vec![vec![1.0, 10.0, -2.0], vec![3.0, 20.0, 2.0], vec![5.0, 30.0, 0.5]];
        assert_eq!(average(&members), [3.0, 20.0, 0.5 / 3.0]);
        assert_eq!(average(&members[..1]), members[0]);
        assert!(average::<Vec<f32>>(&[]).is_empty());
    }
}
