//! Parser for the Kaggle "Facial Keypoints Detection" layout: keypoint coordinate
//! columns (`<name>_x`, `<name>_y`, discovered from the header), an optional
//! `ImageId`, and `Image` holding `side * side` space-separated grey levels.
//!
//! The layout holds only numbers, so the parser handles plain comma-separated
//! fields (optionally wrapped in double quotes) and no embedded commas or newlines.
//! That restriction buys speed: rows are parsed in parallel straight from the
//! file's bytes.

use std::path::Path;

use indicatif::ProgressBar;
use rayon::prelude::*;

use super::source::Member;
use super::{DataError, FaceTable};
use crate::console::{Console, Unit};
use crate::text::{excerpt, excerpt_bytes};

pub const IMAGE_COLUMN: &str = "Image";
pub const IMAGE_ID_COLUMN: &str = "ImageId";

#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// Skip rows that fail validation instead of failing the whole file.
    pub skip_bad_rows: bool,
    /// How far outside `[0, side)` a coordinate may fall, in pixels.
    pub coordinate_tolerance: f32,
    /// Leave coordinate columns unread (all missing): for files that are only
    /// predicted on, whatever their labels say.
    pub ignore_coordinates: bool,
    /// The image side when it is known, with where it comes from for messages
    /// (`"as [ingest] image_side says"`); otherwise the side of most rows' images.
    pub side: Option<(usize, &'static str)>,
}

/// A parsed file and the rows that were skipped (each as its error).
#[derive(Debug)]
pub struct Parsed {
    pub table: FaceTable,
    pub skipped: Vec<DataError>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    Coordinate(usize),
    ImageId,
    Image,
}

struct Layout {
    columns: Vec<Column>,
    names: Vec<String>,
    /// The header line as written, for messages about a row's width.
    header: String,
    coordinate_names: Vec<String>,
    has_image_id: bool,
}

/// A row's fault, before it is turned into a [`DataError`] naming file and line.
struct RowFault {
    column: String,
    message: String,
}

/// Reads a Kaggle-layout file (plain, gzip, zip, or `member` of Kaggle's
/// competition archive) and parses it.
pub fn read(
    path: &Path,
    member: Member,
    options: ParseOptions,
    console: &Console,
) -> Result<Parsed, DataError> {
    let bytes = super::source::read_text_file(path, member, console)?;
    parse(path, &bytes, options, console)
}

pub fn parse(
    path: &Path,
    bytes: &[u8],
    options: ParseOptions,
    console: &Console,
) -> Result<Parsed, DataError> {
    let bytes = super::source::without_bom(bytes);
    let header_end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    let layout = parse_header(path, trim_line(&bytes[..header_end]))?;
    let rows = data_lines(bytes, header_end);
    if rows.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let side = find_side(path, &layout, &rows, options)?;
    let rules = RowRules {
        side,
        side_from: options.side.map_or("like most rows", |(_, from)| from),
        low: -options.coordinate_tolerance,
        high: side as f32 + options.coordinate_tolerance,
        ignore_coordinates: options.ignore_coordinates,
    };
    let show_progress = bytes.len() > 32 << 20;
    let bar = console.progress(rows.len() as u64, show_progress, "parsing", Unit::Items);
    let (values, faults) = parse_rows(&rows, &layout, &rules, &bar);
    bar.finish_and_clear();
    let (keep, skipped) = sort_out_faults(path, &rows, faults, options.skip_bad_rows)?;
    let table = values.keep(&layout, side, &keep);
    Ok(Parsed { table, skipped })
}

/// (1-based line number, line bytes) of every non-blank line after the header,
/// which ends at `header_end`.
fn data_lines(bytes: &[u8], header_end: usize) -> Vec<(usize, &[u8])> {
    let mut rows = Vec::new();
    let mut start = header_end + 1;
    let ends = memchr::memchr_iter(b'\n', bytes).skip(1);
    for (index, end) in ends.chain(std::iter::once(bytes.len())).enumerate() {
        if start <= end {
            let line = trim_line(&bytes[start..end]);
            if !line.iter().all(u8::is_ascii_whitespace) {
                rows.push((index + 2, line));
            }
        }
        start = end + 1;
    }
    rows
}

/// Every row's values, parsed in place, with a slot per row even where the row
/// is faulty (which `keep` then leaves out).
struct RowValues {
    /// Row-major, one slot per coordinate (one unused slot for unlabelled files).
    coords: Vec<f32>,
    pixels: Vec<u8>,
    ids: Vec<i64>,
}

/// Parses every row in parallel; returns the values and each row's fault, if any.
fn parse_rows(
    rows: &[(usize, &[u8])],
    layout: &Layout,
    rules: &RowRules,
    bar: &ProgressBar,
) -> (RowValues, Vec<Option<RowFault>>) {
    let pixel_count = rules.side * rules.side;
    let n_coords = layout.coordinate_names.len();
    // Unlabelled files still get one (unused) slot per row, so the chunks below line up.
    let coord_width = n_coords.max(1);
    let mut values = RowValues {
        coords: vec![f32::NAN; rows.len() * coord_width],
        pixels: vec![0u8; rows.len() * pixel_count],
        ids: vec![0i64; rows.len()],
    };
    // Chunks of rows rather than single rows keep rayon's overhead negligible.
    const CHUNK: usize = 64;
    let faults = rows
        .par_chunks(CHUNK)
        .zip(values.coords.par_chunks_mut(CHUNK * coord_width))
        .zip(values.pixels.par_chunks_mut(CHUNK * pixel_count))
        .zip(values.ids.par_chunks_mut(CHUNK))
        .flat_map_iter(|(((rows, coords), pixels), ids)| {
            let faults: Vec<Option<RowFault>> = rows
                .iter()
                .enumerate()
                .map(|(i, (_, line))| {
                    let row_coords = &mut coords[i * coord_width..i * coord_width + n_coords];
                    let row_pixels = &mut pixels[i * pixel_count..(i + 1) * pixel_count];
                    parse_row(line, layout, row_coords, row_pixels, &mut ids[i], rules).err()
                })
                .collect();
            bar.inc(rows.len() as u64);
            faults
        })
        .collect();
    (values, faults)
}

/// The rows to keep, and the errors of those skipped (`skip_bad_rows`); without
/// it, the first faulty row is the error. Every row faulty is an error too.
fn sort_out_faults(
    path: &Path,
    rows: &[(usize, &[u8])],
    faults: Vec<Option<RowFault>>,
    skip_bad_rows: bool,
) -> Result<(Vec<usize>, Vec<DataError>), DataError> {
    let mut skipped = Vec::new();
    let mut keep = Vec::with_capacity(rows.len());
    for (index, fault) in faults.into_iter().enumerate() {
        match fault {
            None => keep.push(index),
            Some(fault) => {
                let error = DataError::BadRow {
                    path: path.to_path_buf(),
                    line: rows[index].0,
                    column: excerpt(&fault.column),
                    message: fault.message,
                };
                if !skip_bad_rows {
                    return Err(error);
                }
                skipped.push(error);
            }
        }
    }
    if keep.is_empty() {
        return Err(DataError::AllSkipped {
            path: path.to_path_buf(),
            rows: rows.len(),
            first: skipped.first().map(ToString::to_string).unwrap_or_default(),
        });
    }
    Ok((keep, skipped))
}

impl RowValues {
    /// The table of the rows in `keep` (indices into the parsed rows).
    fn keep(self, layout: &Layout, side: usize, keep: &[usize]) -> FaceTable {
        let (n_coords, pixel_count) = (layout.coordinate_names.len(), side * side);
        let RowValues { coords, pixels, ids } = self;
        let all_kept = keep.len() == ids.len();
        FaceTable {
            coordinate_names: layout.coordinate_names.clone(),
            side,
            source_rows: keep.iter().map(|&i| i as u32).collect(),
            image_ids: layout.has_image_id.then(|| match all_kept {
                true => ids,
                false => keep.iter().map(|&i| ids[i]).collect(),
            }),
            coords: match (n_coords, all_kept) {
                (0, _) => Vec::new(),
                (_, true) => coords,
                (_, false) => gather(&coords, n_coords, keep),
            },
            pixels: match all_kept {
                true => pixels,
                false => gather(&pixels, pixel_count, keep),
            },
        }
    }
}

fn gather<T: Copy>(values: &[T], width: usize, rows: &[usize]) -> Vec<T> {
    rows.iter()
        .flat_map(|&r| &values[r * width..(r + 1) * width])
        .copied()
        .collect()
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn unquote(field: &[u8]) -> &[u8] {
    let field = field.trim_ascii();
    match field {
        [b'"', inner @ .., b'"'] => inner,
        _ => field,
    }
}

fn parse_header(path: &Path, line: &[u8]) -> Result<Layout, DataError> {
    let header_error = |message: String| DataError::Header {
        path: path.to_path_buf(),
        message,
    };
    let text =
        std::str::from_utf8(line).map_err(|_| header_error("the header is not UTF-8 text".to_string()))?;
    let names: Vec<String> = text
        .split(',')
        .map(|n| String::from_utf8_lossy(unquote(n.as_bytes())).into_owned())
        .collect();
    let mut columns = Vec::with_capacity(names.len());
    let mut coordinate_names = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let name = &names[i];
        if names[..i].contains(name) {
            return Err(header_error(format!("column `{}` appears twice", excerpt(name))));
        }
        // Names end up in tables, Markdown and SVG: no terminal escapes, no bells.
        if name.chars().any(char::is_control) {
            return Err(header_error(format!(
                "column `{}` has a control character in its name",
                excerpt(name)
            )));
        }
        match name.as_str() {
            IMAGE_COLUMN => columns.push(Column::Image),
            IMAGE_ID_COLUMN => columns.push(Column::ImageId),
            _ => {
                let Some(stem) = name.strip_suffix("_x") else {
                    return Err(header_error(format!(
                        "column `{}` is neither `{IMAGE_COLUMN}`, `{IMAGE_ID_COLUMN}` nor a keypoint coordinate \
                         (`<keypoint>_x` followed by `<keypoint>_y`)",
                        excerpt(name)
                    )));
                };
                let expected_y = format!("{stem}_y");
                if names.get(i + 1) != Some(&expected_y) {
                    return Err(header_error(format!(
                        "column `{}` must be followed by `{}`",
                        excerpt(name),
                        excerpt(&expected_y)
                    )));
                }
                columns.push(Column::Coordinate(coordinate_names.len()));
                coordinate_names.push(name.clone());
                columns.push(Column::Coordinate(coordinate_names.len()));
                coordinate_names.push(expected_y);
                i += 1;
            }
        }
        i += 1;
    }
    if !columns.contains(&Column::Image) {
        return Err(header_error(format!(
            "no `{IMAGE_COLUMN}` column (found: {})",
            excerpt(&names.join(", "))
        )));
    }
    Ok(Layout {
        header: excerpt(text),
        has_image_id: columns.contains(&Column::ImageId),
        columns,
        names,
        coordinate_names,
    })
}

/// The image side: the one given, or the side of the images most rows hold, so one
/// bad row (first or not) never decides for the others.
fn find_side(
    path: &Path,
    layout: &Layout,
    rows: &[(usize, &[u8])],
    options: ParseOptions,
) -> Result<usize, DataError> {
    if let Some((side, _)) = options.side {
        return Ok(side);
    }
    let image_index = layout
        .columns
        .iter()
        .position(|c| *c == Column::Image)
        .expect("parse_header requires an Image column");
    let counts: Vec<usize> = rows
        .par_iter()
        .map(|(_, row)| nth_field(row, image_index).map_or(0, |field| count_tokens(unquote(field))))
        .collect();
    // (pixel count, rows with it, first row with it); most rows win, then the earliest.
    let mut tally: Vec<(usize, usize, usize)> = Vec::new();
    for (index, &count) in counts.iter().enumerate() {
        match tally.iter_mut().find(|(c, _, _)| *c == count) {
            Some(entry) => entry.1 += 1,
            None => tally.push((count, 1, index)),
        }
        if tally.len() > 64 {
            // Rows this varied are not an image table; the commonest of the first
            // 64 shapes is as good a guess as any for naming the bad rows.
            break;
        }
    }
    tally.sort_by_key(|&(_, rows, first)| (std::cmp::Reverse(rows), first));
    let is_square = |count: usize| count > 0 && count.isqrt() * count.isqrt() == count;
    let chosen = if options.skip_bad_rows {
        tally.iter().find(|(count, _, _)| is_square(*count))
    } else {
        tally.first()
    };
    match chosen {
        Some(&(count, _, _)) if is_square(count) => Ok(count.isqrt()),
        Some(&(count, _, first)) => Err(DataError::BadRow {
            path: path.to_path_buf(),
            line: rows[first].0,
            column: IMAGE_COLUMN.to_string(),
            message: format!("{count} pixels do not make a square image (and most rows have {count})"),
        }),
        // Skipping, and no row's pixel count is a square.
        None => Err(DataError::AllSkipped {
            path: path.to_path_buf(),
            rows: rows.len(),
            first: DataError::BadRow {
                path: path.to_path_buf(),
                line: rows[0].0,
                column: IMAGE_COLUMN.to_string(),
                message: format!("{} pixels do not make a square image", counts[0]),
            }
            .to_string(),
        }),
    }
}

/// Field `index` of a row, found with SIMD searches: the `Image` field is most
/// of every row, and this runs over all of them.
fn nth_field(row: &[u8], index: usize) -> Option<&[u8]> {
    let start = match index {
        0 => 0,
        _ => memchr::memchr_iter(b',', row).nth(index - 1)? + 1,
    };
    let end = memchr::memchr(b',', &row[start..]).map_or(row.len(), |i| start + i);
    Some(&row[start..end])
}

/// Space-separated tokens in a field. Kaggle's files separate pixels by single
/// spaces, which a SIMD count of spaces settles; other spacing takes the slow
/// count.
fn count_tokens(field: &[u8]) -> usize {
    let single_spaced = field.first().is_some_and(|&b| b != b' ')
        && field.last().is_some_and(|&b| b != b' ')
        && memchr::memmem::find(field, b"  ").is_none();
    if single_spaced {
        return memchr::memchr_iter(b' ', field).count() + 1;
    }
    let mut count = 0;
    let mut previous = b' ';
    for &byte in field {
        count += usize::from(byte != b' ' && previous == b' ');
        previous = byte;
    }
    count
}

/// What every row is checked against.
#[derive(Clone, Copy)]
struct RowRules {
    side: usize,
    /// Where the side came from, for messages.
    side_from: &'static str,
    /// Coordinates must lie in `[low, high)`.
    low: f32,
    high: f32,
    ignore_coordinates: bool,
}

fn parse_row(
    line: &[u8],
    layout: &Layout,
    coords: &mut [f32],
    pixels: &mut [u8],
    id: &mut i64,
    rules: &RowRules,
) -> Result<(), RowFault> {
    let RowRules {
        side,
        side_from,
        low,
        high,
        ignore_coordinates,
    } = *rules;
    let mut fields = line.split(|b| *b == b',');
    for (column, name) in layout.columns.iter().zip(&layout.names) {
        let fault = |message: String| RowFault {
            column: name.clone(),
            message,
        };
        let Some(field) = fields.next() else {
            return Err(fault(width_message(line, layout, "ends early")));
        };
        let field = unquote(field);
        match column {
            Column::Image => parse_pixels(field, pixels, side, side_from).map_err(fault)?,
            Column::ImageId => {
                *id = std::str::from_utf8(field)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| fault(format!("`{}` is not an integer id", excerpt_bytes(field))))?;
            }
            Column::Coordinate(_) if ignore_coordinates => {}
            Column::Coordinate(index) => {
                if field.is_empty() {
                    continue; // a missing label: stays NaN
                }
                let value: f32 = std::str::from_utf8(field)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| fault(format!("`{}` is not a number", excerpt_bytes(field))))?;
                if !value.is_finite() || value < low || value >= high {
                    return Err(fault(format!(
                        "{value} is outside the image [0, {side}) (tolerance {} px)",
                        -low
                    )));
                }
                coords[*index] = value;
            }
        }
    }
    if fields.next().is_some() {
        return Err(RowFault {
            column: layout.names.last().cloned().unwrap_or_default(),
            message: width_message(line, layout, "is too long"),
        });
    }
    Ok(())
}

/// A row whose field count differs from the header's, quoting both.
fn width_message(line: &[u8], layout: &Layout, what: &str) -> String {
    format!(
        "the row {what}: it has {} fields where the header `{}` has {}: `{}`",
        memchr::memchr_iter(b',', line).count() + 1,
        layout.header,
        layout.names.len(),
        excerpt_bytes(line)
    )
}

/// Hot loop of the ingest stage: decimal grey levels separated by single or
/// repeated spaces. Anything unexpected is described by [`describe_bad_pixels`].
fn parse_pixels(field: &[u8], out: &mut [u8], side: usize, side_from: &str) -> Result<(), String> {
    let mut count = 0;
    let mut value: u32 = 0;
    let mut in_number = false;
    for &byte in field {
        match byte {
            b'0'..=b'9' => {
                value = value * 10 + u32::from(byte - b'0');
                if value > 255 {
                    return Err(describe_bad_pixels(field, side, side_from));
                }
                in_number = true;
            }
            b' ' if in_number => {
                if count == out.len() {
                    return Err(describe_bad_pixels(field, side, side_from));
                }
                out[count] = value as u8;
                count += 1;
                value = 0;
                in_number = false;
            }
            b' ' => {}
            _ => return Err(describe_bad_pixels(field, side, side_from)),
        }
    }
    if in_number {
        if count == out.len() {
            return Err(describe_bad_pixels(field, side, side_from));
        }
        out[count] = value as u8;
        count += 1;
    }
    if count != out.len() {
        return Err(describe_bad_pixels(field, side, side_from));
    }
    Ok(())
}

/// The slow path: say exactly what is wrong with an `Image` field.
fn describe_bad_pixels(field: &[u8], side: usize, side_from: &str) -> String {
    let tokens: Vec<&[u8]> = field.split(|b| *b == b' ').filter(|t| !t.is_empty()).collect();
    for (index, token) in tokens.iter().enumerate() {
        let ok = token.len() <= 3
            && token.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse::<u16>().ok())
                .is_some_and(|v| v <= 255);
        if !ok {
            return format!(
                "pixel {} is `{}`, not an integer in 0..=255",
                index + 1,
                excerpt_bytes(token)
            );
        }
    }
    format!(
        "{} pixels, expected {} ({side}x{side} {side_from})",
        tokens.len(),
        side * side
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "a_x,a_y,b_x,b_y,Image";

    fn options() -> ParseOptions {
        ParseOptions {
            skip_bad_rows: false,
            coordinate_tolerance: 0.0,
            ignore_coordinates: false,
            side: None,
        }
    }

    fn parse_text(text: &str, options: ParseOptions) -> Result<Parsed, DataError> {
        parse(Path::new("f.csv"), text.as_bytes(), options, &Console::silent())
    }

    #[test]
    fn reads_coordinates_missing_labels_and_pixels() {
        let text = format!("{HEADER}\n1.5,1,,,0 1 2 255\r\n0,0,1,1.25,\"9 8 7 6\"\n");
        let parsed = parse_text(&text, options()).unwrap();
        let t = parsed.table;
        assert_eq!(t.side, 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.coordinate_names, ["a_x", "a_y", "b_x", "b_y"]);
        assert_eq!(t.keypoint_names(), ["a", "b"]);
        assert_eq!(&t.coords[..2], &[1.5, 1.0]);
        assert!(t.coords[2].is_nan() && t.coords[3].is_nan());
        assert_eq!(&t.coords[4..], &[0.0, 0.0, 1.0, 1.25]);
        assert_eq!(t.pixels, [0, 1, 2, 255, 9, 8, 7, 6]);
        assert_eq!(t.presence(), [2, 2, 1, 1]);
        assert_eq!(t.complete_rows(), 1);
        assert!(t.image_ids.is_none());
    }

    #[test]
    fn reads_the_unlabelled_test_layout() {
        let parsed = parse_text("ImageId,Image\n1,0 0 0 0\n2,1 1 1 1\n", options()).unwrap();
        assert_eq!(parsed.table.image_ids, Some(vec![1, 2]));
        assert!(parsed.table.coordinate_names.is_empty());
        assert_eq!(parsed.table.pixels, [0, 0, 0, 0, 1, 1, 1, 1]);
    }

    fn bad_row(row: &str) -> String {
        let text = format!("{HEADER}\n1,1,1,1,0 0 0 0\n{row}\n1,1,1,1,0 0 0 0\n");
        parse_text(&text, options()).unwrap_err().to_string()
    }

    #[test]
    fn bad_rows_name_file_line_and_column() {
        assert_eq!(
            bad_row("1,1,1,1,0 0 0"),
            "f.csv:3: column `Image`: 3 pixels, expected 4 (2x2 like most rows)"
        );
        assert_eq!(
            bad_row("1,1,1,1,0 0 0 0 0"),
            "f.csv:3: column `Image`: 5 pixels, expected 4 (2x2 like most rows)"
        );
        assert_eq!(
            bad_row("1,1,1,1,0 256 0 0"),
            "f.csv:3: column `Image`: pixel 2 is `256`, not an integer in 0..=255"
        );
        assert_eq!(
            bad_row("1,1,1,1,0 -1 0 0"),
            "f.csv:3: column `Image`: pixel 2 is `-1`, not an integer in 0..=255"
        );
        assert_eq!(
            bad_row("1,1,1,1,0 1.5 0 0"),
            "f.csv:3: column `Image`: pixel 2 is `1.5`, not an integer in 0..=255"
        );
        assert_eq!(
            bad_row("1,x,1,1,0 0 0 0"),
            "f.csv:3: column `a_y`: `x` is not a number"
        );
        assert_eq!(
            bad_row("1,1,2,1,0 0 0 0"),
            "f.csv:3: column `b_x`: 2 is outside the image [0, 2) (tolerance 0 px)"
        );
        assert_eq!(
            bad_row("1,1,nan,1,0 0 0 0"),
            "f.csv:3: column `b_x`: NaN is outside the image [0, 2) (tolerance 0 px)"
        );
        assert_eq!(
            bad_row("1,1,1,1"),
            "f.csv:3: column `Image`: the row ends early: it has 4 fields where the header \
             `a_x,a_y,b_x,b_y,Image` has 5: `1,1,1,1`"
        );
        assert_eq!(
            bad_row("1,1,1,1,0 0 0 0,7"),
            "f.csv:3: column `Image`: the row is too long: it has 6 fields where the header \
             `a_x,a_y,b_x,b_y,Image` has 5: `1,1,1,1,0 0 0 0,7`"
        );
    }

    #[test]
    fn tolerance_admits_labels_just_outside_the_image() {
        let text = format!("{HEADER}\n-0.4,2.3,1,1,0 0 0 0\n");
        let loose = ParseOptions {
            coordinate_tolerance: 0.5,
            ..options()
        };
        assert!(parse_text(&text, loose).is_ok());
        assert!(parse_text(&text, options()).is_err());
    }

    #[test]
    fn skipping_keeps_good_rows_in_order_with_their_source_rows() {
        let text = format!("{HEADER}\n1,1,1,1,0 0 0 0\n1,1,1,1,0 0 0\n0,0,0,0,5 5 5 5\n");
        let skip = ParseOptions {
            skip_bad_rows: true,
            ..options()
        };
        let parsed = parse_text(&text, skip).unwrap();
        assert_eq!(parsed.table.source_rows, [0, 2]);
        assert_eq!(parsed.table.pixels, [0, 0, 0, 0, 5, 5, 5, 5]);
        assert_eq!(parsed.skipped.len(), 1);
        assert!(parsed.skipped[0].to_string().starts_with("f.csv:3:"));
    }

    #[test]
    fn header_problems_are_clear() {
        let err = |h: &str| parse_text(&format!("{h}\n"), options()).unwrap_err().to_string();
        assert!(err("a_x,a_y").contains("no `Image` column"));
        assert!(err("a_x,b_y,Image").contains("`a_x` must be followed by `a_y`"));
        assert!(err("foo,Image").contains("column `foo` is neither"));
        assert!(err("Image,Image").contains("appears twice"));
        assert_eq!(err(HEADER), "f.csv: no data rows");
    }

    #[test]
    fn ignored_coordinates_are_neither_read_nor_checked() {
        let text = format!("{HEADER}\n99,x,,,0 0 0 0\n");
        let ignore = ParseOptions {
            ignore_coordinates: true,
            ..options()
        };
        let parsed = parse_text(&text, ignore).unwrap();
        assert!(parsed.table.coords.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn a_non_square_image_is_an_error() {
        let err = parse_text(&format!("{HEADER}\n1,1,1,1,0 0 0\n"), options()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.csv:2: column `Image`: 3 pixels do not make a square image (and most rows have 3)"
        );
    }

    #[test]
    fn the_side_comes_from_most_rows_not_the_first() {
        let good = "1,1,1,1,0 0 0 0";
        let text = format!("{HEADER}\n1,1,1,1,0 0 0 0 0 0 0 0 0\n{good}\n{good}\n");
        let err = parse_text(&text, options()).unwrap_err().to_string();
        assert_eq!(
            err,
            "f.csv:2: column `Image`: 9 pixels, expected 4 (2x2 like most rows)"
        );
        let skip = ParseOptions {
            skip_bad_rows: true,
            ..options()
        };
        let parsed = parse_text(&text, skip).unwrap();
        assert_eq!(parsed.table.side, 2);
        assert_eq!(parsed.table.source_rows, [1, 2]);
        let given = ParseOptions {
            side: Some((3, "as given")),
            ..skip
        };
        let parsed = parse_text(&text, given).unwrap();
        assert_eq!(parsed.table.source_rows, [0]);
    }

    #[test]
    fn tokens_are_counted_however_they_are_spaced() {
        for (field, tokens) in [
            (&b"1 2 3"[..], 3),
            (b"1  2 3", 3),
            (b" 1 2 3 ", 3),
            (b"255", 1),
            (b"", 0),
            (b"   ", 0),
        ] {
            assert_eq!(
                count_tokens(field),
                tokens,
                "{:?}",
                String::from_utf8_lossy(field)
            );
        }
        assert_eq!(nth_field(b"a,b,,c", 2), Some(&b""[..]));
        assert_eq!(nth_field(b"a,b,,c", 3), Some(&b"c"[..]));
        assert_eq!(nth_field(b"a,b", 0), Some(&b"a"[..]));
        assert_eq!(nth_field(b"a,b", 2), None);
    }

    #[test]
    fn quoted_input_is_short() {
        let header = format!("{}_x,Image", "k".repeat(10_000_000));
        let err = parse_text(&format!("{header}\n"), options())
            .unwrap_err()
            .to_string();
        assert!(err.len() < 300, "{} bytes", err.len());
        let row = format!("{HEADER}\n{},1,1,1,0 0 0 0\n", "9".repeat(1_000_000));
        let err = parse_text(&row, options()).unwrap_err().to_string();
        assert!(err.len() < 300, "{} bytes", err.len());
    }
}
