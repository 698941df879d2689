//! A pandas-style `describe()` of one column, computed with polars.

use polars::prelude::*;

/// Count, missing, mean, std with ddof = 1, min, quartiles with linear
/// interpolation (pandas' and numpy's default) and max.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub missing: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub q25: Option<f64>,
    pub median: Option<f64>,
    pub q75: Option<f64>,
    pub max: Option<f64>,
}

pub fn describe(values: impl IntoIterator<Item = Option<f64>>) -> Summary {
    let column: Float64Chunked = values.into_iter().collect();
    let quantile = |q: f64| column.quantile(q, QuantileMethod::Linear).ok().flatten();
    let count = column.len() - column.null_count();
    Summary {
        count,
        missing: column.null_count(),
        mean: column.mean(),
        std: if count > 1 { column.std(1) } else { None },
        min: column.min(),
        q25: quantile(0.25),
        median: quantile(0.5),
        q75: quantile(0.75),
        max: column.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn describe_matches_hand_computed_values() {
        // values 1, 2, 4, 10 and a missing one.
        let s = describe([Some(1.0), None, Some(2.0), Some(4.0), Some(10.0)]);
        assert_eq!((s.count, s.missing), (4, 1));
        assert!(close(s.mean, 4.25));
        // deviations -3.25 -2.25 -0.25 5.75: squares sum 10.5625+5.0625+0.0625+33.0625 = 48.75; /3
        assert!(close(s.std, (48.75f64 / 3.0).sqrt()));
        assert!(close(s.min, 1.0) && close(s.max, 10.0));
        // linear: position 0.75 -> 1 + 0.75 * (2 - 1); 1.5 -> 3; 2.25 -> 4 + 0.25 * 6
        assert!(close(s.q25, 1.75));
        assert!(close(s.median, 3.0));
        assert!(close(s.q75, 5.5));
    }

    #[test]
    fn describe_of_one_value_has_no_std() {
        let s = describe([Some(3.0), None]);
        assert_eq!(s.std, None);
        assert!(close(s.median, 3.0));
    }
}
