//! On-the-fly augmentation of training faces: horizontal flip with left/right
//! keypoint swapping, shift, rotation, scale, brightness and contrast. Every
//! random choice comes from the caller's seeded RNG, so a run is reproducible.
//!
//! Coordinates follow the Kaggle convention: pixel `i`'s centre is at `i`, so a
//! mirror maps `x` to `(side - 1) - x`.

use rand::{Rng, RngExt};

/// The transforms and their strength; all zero/false is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Augment {
    /// Mirror each face with probability 0.5.
    pub hflip: bool,
    /// Largest shift in pixels, drawn uniformly in [-shift_px, shift_px] for x and y.
    pub shift_px: f32,
    /// Largest rotation in degrees, drawn uniformly in [-rotate_deg, rotate_deg].
    pub rotate_deg: f32,
    /// Largest relative zoom: a factor in [1 - scale, 1 + scale].
    pub scale: f32,
    /// Largest brightness offset, in [0, 1] intensity units.
    pub brightness: f32,
    /// Largest relative contrast change: a factor in [1 - contrast, 1 + contrast].
    pub contrast: f32,
}

/// Which keypoint a mirror turns each keypoint into: `left_eye_center` and
/// `right_eye_center` swap, `nose_tip` stays.
#[derive(Debug, Clone, PartialEq)]
pub struct FlipMap {
    partner: Vec<usize>,
}

impl FlipMap {
    pub fn from_keypoint_names(names: &[String]) -> FlipMap {
        let partner = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let mirrored = if name.contains("left") {
                    name.replace("left", "right")
                } else {
                    name.replace("right", "left")
                };
                names.iter().position(|n| *n == mirrored).unwrap_or(index)
            })
            .collect();
        FlipMap { partner }
    }

    pub fn partner(&self, keypoint: usize) -> usize {
        self.partner[keypoint]
    }
}

/// One face being augmented: the image as [0, 1] floats, row-major, and its
/// coordinates `x0 y0 x1 y1 ...` with a flag per coordinate saying whether it
/// counts (a point pushed out of the picture stops counting).
pub struct Sample<'a> {
    pub image: &'a mut [f32],
    pub coords: &'a mut [f32],
    pub counts: &'a mut [bool],
    pub side: usize,
}

impl Augment {
    pub fn is_identity(&self) -> bool {
        *self == Augment::default()
    }

    pub fn apply(&self, rng: &mut impl Rng, flips: &FlipMap, sample: &mut Sample) {
        if self.hflip && rng.random_bool(0.5) {
            mirror(flips, sample);
        }
        let angle = uniform(rng, self.rotate_deg).to_radians();
        let zoom = 1.0 + uniform(rng, self.scale);
        let shift = (uniform(rng, self.shift_px), uniform(rng, self.shift_px));
        if angle != 0.0 || zoom != 1.0 || shift != (0.0, 0.0) {
            warp(sample, angle, zoom, shift);
        }
        let contrast = 1.0 + uniform(rng, self.contrast);
        let brightness = uniform(rng, self.brightness);
        if contrast != 1.0 || brightness != 0.0 {
            for v in sample.image.iter_mut() {
                *v = ((*v - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0);
            }
        }
    }
}

/// A draw from [-limit, limit]; exactly 0 (and no draw) when the limit is 0.
fn uniform(rng: &mut impl Rng, limit: f32) -> f32 {
    if limit > 0.0 {
        rng.random_range(-limit..=limit)
    } else {
        0.0
    }
}

/// Mirrors the image left-right, maps x to (side - 1) - x and swaps each
/// keypoint with its mirror partner.
pub fn mirror(flips: &FlipMap, sample: &mut Sample) {
    let side = sample.side;
    for row in sample.image.chunks_mut(side) {
        row.reverse();
    }
    let keypoints = sample.coords.len() / 2;
    for k in 0..keypoints {
        sample.coords[2 * k] = (side as f32 - 1.0) - sample.coords[2 * k];
    }
    for k in 0..keypoints {
        let p = flips.partner(k);
        if p > k {
            for offset in 0..2 {
                sample.coords.swap(2 * k + offset, 2 * p + offset);
                sample.counts.swap(2 * k + offset, 2 * p + offset);
            }
        }
    }
}

/// Rotates by `angle` and zooms by `zoom` about the centre, then shifts; the
/// image is resampled bilinearly with edges repeated.
fn warp(sample: &mut Sample, angle: f32, zoom: f32, (dx, dy): (f32, f32)) {
    let side = sample.side;
    let centre = (side as f32 - 1.0) / 2.0;
    let (sin, cos) = angle.sin_cos();
    let forward = |x: f32, y: f32| {
        let (u, v) = (x - centre, y - centre);
        (
            zoom * (cos * u - sin * v) + centre + dx,
            zoom * (sin * u + cos * v) + centre + dy,
        )
    };
    let inverse = |x: f32, y: f32| {
        let (u, v) = ((x - centre - dx) / zoom, (y - centre - dy) / zoom);
        (cos * u + sin * v + centre, -sin * u + cos * v + centre)
    };
    let source = sample.image.to_vec();
    let at = |x: isize, y: isize| {
        let clamp = |v: isize| v.clamp(0, side as isize - 1) as usize;
        source[clamp(y) * side + clamp(x)]
    };
    for y in 0..side {
        for x in 0..side {
            let (sx, sy) = inverse(x as f32, y as f32);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
            let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
            sample.image[y * side + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    let limit = -0.5..(side as f32 - 0.5);
    for k in 0..sample.coords.len() / 2 {
        let (x, y) = forward(sample.coords[2 * k], sample.coords[2 * k + 1]);
        sample.coords[2 * k] = x;
        sample.coords[2 * k + 1] = y;
        if !limit.contains(&x) || !limit.contains(&y) {
            sample.counts[2 * k] = false;
            sample.counts[2 * k + 1] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn names() -> Vec<String> {
        [
            "left_eye_center",
            "right_eye_center",
            "nose_tip",
            "mouth_left_corner",
            "mouth_right_corner",
        ]
        .map(String::from)
        .to_vec()
    }

    struct Face {
        image: Vec<f32>,
        coords: Vec<f32>,
        counts: Vec<bool>,
    }

    fn face() -> Face {
        let side = 6;
        Face {
            image: (0..side * side).map(|i| i as f32 / 36.0).collect(),
            // left eye (subject's left, picture's right) at x = 4, right eye at x = 1.
            coords: vec![4.0, 2.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.5, 1.5, 4.5],
            counts: vec![true, true, false, false, true, true, true, true, true, true],
        }
    }

    fn flip(face: &mut Face) {
        let flips = FlipMap::from_keypoint_names(&names());
        mirror(
            &flips,
            &mut Sample {
                image: &mut face.image,
                coords: &mut face.coords,
                counts: &mut face.counts,
                side: 6,
            },
        );
    }

    #[test]
    fn partners_swap_left_and_right_and_keep_the_centre() {
        let flips = FlipMap::from_keypoint_names(&names());
        assert_eq!(
            (0..5).map(|k| flips.partner(k)).collect::<Vec<_>>(),
            [1, 0, 2, 4, 3]
        );
    }

    #[test]
    fn a_flipped_left_eye_is_where_the_right_eye_was_mirrored() {
        let original = face();
        let mut flipped = face();
        flip(&mut flipped);
        // New left eye = old right eye, mirrored: x = 5 - 1 = 4, y unchanged.
        assert_eq!(
            &flipped.coords[0..2],
            &[5.0 - original.coords[2], original.coords[3]]
        );
        assert_eq!(
            &flipped.coords[2..4],
            &[5.0 - original.coords[0], original.coords[1]]
        );
        // The label flags travel with their keypoints.
        assert_eq!(&flipped.counts[0..4], &[false, false, true, true]);
        // The nose stays the nose, mirrored.
        assert_eq!(&flipped.coords[4..6], &[2.5, 3.0]);
        // The first pixel row is reversed.
        assert_eq!(flipped.image[0], original.image[5]);
    }

    #[test]
    fn a_flip_twice_is_the_identity() {
        let original = face();
        let mut twice = face();
        flip(&mut twice);
        flip(&mut twice);
        assert_eq!(twice.image, original.image);
        assert_eq!(twice.coords, original.coords);
        assert_eq!(twice.counts, original.counts);
    }

    #[test]
    fn warps_move_keypoints_with_the_image() {
        let side = 16;
        let mut image = vec![0.0; side * side];
        image[5 * side + 9] = 1.0; // a bright dot at x = 9, y = 5
        let mut coords = vec![9.0, 5.0];
        let mut counts = vec![true, true];
        let mut sample = Sample {
            image: &mut image,
            coords: &mut coords,
            counts: &mut counts,
            side,
        };
        warp(&mut sample, 90f32.to_radians(), 1.0, (1.0, -2.0));
        let (x, y) = (sample.coords[0], sample.coords[1]);
        // Rotating (1.5, -2.5) from the centre 7.5 by 90 degrees gives (2.5, 1.5), then the shift.
        assert!(
            (x - (7.5 + 2.5 + 1.0)).abs() < 1e-4 && (y - (7.5 + 1.5 - 2.0)).abs() < 1e-4,
            "{x} {y}"
        );
        let brightest = (0..side * side)
            .max_by(|&a, &b| image[a].total_cmp(&image[b]))
            .unwrap();
        assert_eq!(
            (brightest % side, brightest / side),
            (x.round() as usize, y.round() as usize)
        );
    }

    #[test]
    fn points_pushed_out_of_the_picture_stop_counting() {
        let mut image = vec![0.0; 64];
        let mut coords = vec![7.0, 4.0];
        let mut counts = vec![true, true];
        warp(
            &mut Sample {
                image: &mut image,
                coords: &mut coords,
                counts: &mut counts,
                side: 8,
            },
            0.0,
            1.0,
            (2.0, 0.0),
        );
        assert_eq!(counts, [false, false]);
    }

    /// Normalised cross-correlation of two equal-sized patches.
    fn ncc(a: &[f32], b: &[f32]) -> f32 {
        let mean = |p: &[f32]| p.iter().sum::<f32>() / p.len() as f32;
        let (ma, mb) = (mean(a), mean(b));
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            ab += (x - ma) * (y - mb);
            aa += (x - ma) * (x - ma);
            bb += (y - mb) * (y - mb);
        }
        ab / (aa * bb).sqrt().max(1e-6)
    }

    /// The 9x9 patch around (x, y), mirrored left-right when asked; `None`
    /// near the border.
    fn patch(image: &[f32], side: usize, (x, y): (f32, f32), mirrored: bool) -> Option<Vec<f32>> {
        const R: isize = 4;
        let (cx, cy) = (x.round() as isize, y.round() as isize);
        let inside = |v: isize| v - R >= 0 && v + R < side as isize;
        if !(inside(cx) && inside(cy)) {
            return None;
        }
        let mut out = Vec::new();
        for dy in -R..=R {
            for dx in -R..=R {
                let dx = if mirrored { -dx } else { dx };
                out.push(image[(cy + dy) as usize * side + (cx + dx) as usize]);
            }
        }
        Some(out)
    }

    /// Real faces (the quickstart's fully labelled sample), through every
    /// combination of the transforms at strong settings. Two checks that do
    /// not reuse the transform code: the labels keep the face's anatomy (the
    /// subject's left eye right of the right eye in the picture, top lip above
    /// the bottom lip, ...), which a flip that forgot to swap partners breaks;
    /// and the picture under each label looks like the original around that
    /// keypoint (or its mirror partner, mirrored), far more than a few pixels
    /// off does, which a transform applied to the image and not the labels, or
    /// the wrong way round, breaks. `reports/<pipeline>/train/augmented.png`
    /// draws the same faces for the eye.
    #[test]
    fn every_combination_keeps_each_keypoint_on_its_face_part() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/faces300-full.csv.gz");
        let options = crate::data::kaggle_csv::ParseOptions {
            skip_bad_rows: false,
            coordinate_tolerance: 0.0,
            ignore_coordinates: false,
            side: None,
        };
        let faces = crate::data::kaggle_csv::read(
            &path,
            crate::data::source::Member::Training,
            options,
            &crate::console::Console::silent(),
        )
        .unwrap()
        .table;
        let names = faces.keypoint_names();
        let index = |name: &str| names.iter().position(|n| n == name).unwrap();
        // (a, b, axis): coordinate `axis` of keypoint a exceeds b's.
        let anatomy = [
            (index("left_eye_center"), index("right_eye_center"), 0),
            (index("left_eye_outer_corner"), index("left_eye_inner_corner"), 0),
            (
                index("right_eye_inner_corner"),
                index("right_eye_outer_corner"),
                0,
            ),
            (index("mouth_left_corner"), index("mouth_right_corner"), 0),
            (index("mouth_center_bottom_lip"), index("mouth_center_top_lip"), 1),
            (index("nose_tip"), index("left_eye_center"), 1),
        ];
        let flips = FlipMap::from_keypoint_names(&names);
        let side = faces.side;
        let complete: Vec<usize> = (0..faces.len())
            .filter(|&r| faces.row_coords(r).iter().all(|v| !v.is_nan()))
            .take(24)
            .collect();
        assert_eq!(complete.len(), 24);
        let (mut orders, mut broken) = (0usize, 0usize);
        let (mut on, mut off, mut compared) = (0.0f64, 0.0f64, 0usize);
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
        for combination in 1..64u32 {
            let on_if = |bit: u32, value: f32| if combination & (1 << bit) != 0 { value } else { 0.0 };
            let augment = Augment {
                hflip: combination & 1 != 0,
                shift_px: on_if(1, 4.0),
                rotate_deg: on_if(2, 15.0),
                scale: on_if(3, 0.1),
                brightness: on_if(4, 0.2),
                contrast: on_if(5, 0.3),
            };
            for &row in &complete {
                let original: Vec<f32> = faces.image(row).iter().map(|&p| f32::from(p) / 255.0).collect();
                let (mut image, mut coords) = (original.clone(), faces.row_coords(row).to_vec());
                let mut counts = vec![true; coords.len()];
                let mut sample = Sample {
                    image: &mut image,
                    coords: &mut coords,
                    counts: &mut counts,
                    side,
                };
                augment.apply(&mut rng, &flips, &mut sample);
                let point = |k: usize| (coords[2 * k], coords[2 * k + 1]);
                for &(a, b, axis) in &anatomy {
                    if counts[2 * a] && counts[2 * b] {
                        orders += 1;
                        broken += usize::from(coords[2 * a + axis] <= coords[2 * b + axis]);
                    }
                }
                for k in 0..names.len() {
                    let at = point(k);
                    let source = |partner: usize, mirrored: bool| {
                        let (x, y) = (
                            faces.row_coords(row)[2 * partner],
                            faces.row_coords(row)[2 * partner + 1],
                        );
                        patch(&original, side, (x, y), mirrored)
                    };
                    let (Some(here), Some(shifted), Some(plain), Some(mirror)) = (
                        patch(&image, side, at, false),
                        patch(&image, side, (at.0 + 7.0, at.1 + 7.0), false),
                        source(k, false),
                        source(flips.partner(k), true),
                    ) else {
                        continue;
                    };
                    let best = |p: &[f32]| ncc(p, &plain).max(ncc(p, &mirror));
                    on += f64::from(best(&here));
                    off += f64::from(best(&shifted));
                    compared += 1;
                }
            }
        }
        let (on, off) = (on / compared as f64, off / compared as f64);
        assert!(compared > 10_000, "{compared}");
        assert!(
            (broken as f64) < 0.01 * orders as f64,
            "{broken} of {orders} left/right or top/bottom orders broken"
        );
        assert!(
            on > 0.8 && on > off + 0.3,
            "correlation under the labels {on:.3}, 7 px off {off:.3}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_augmentation() {
        let augment = Augment {
            hflip: true,
            shift_px: 2.0,
            rotate_deg: 10.0,
            scale: 0.1,
            brightness: 0.1,
            contrast: 0.2,
        };
        let flips = FlipMap::from_keypoint_names(&names());
        let run = |seed| {
            let mut f = face();
            let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
            augment.apply(
                &mut rng,
                &flips,
                &mut Sample {
                    image: &mut f.image,
                    coords: &mut f.coords,
                    counts: &mut f.counts,
                    side: 6,
                },
            );
            (f.image, f.coords)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).0.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
