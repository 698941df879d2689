//! What ingest learned about the data: kept in `ingest.json`, shown as tables.

use comfy_table::{CellAlignment, Table, presets};

use crate::data::{DataError, FaceTable};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IngestMeta {
    pub side: usize,
    pub coordinate_names: Vec<String>,
    pub keypoint_names: Vec<String>,
    pub train_rows: usize,
    pub train_complete_rows: usize,
    pub train_skipped: usize,
    /// Rows with each coordinate present, in `coordinate_names` order.
    pub train_presence: Vec<usize>,
    pub test_rows: Option<usize>,
    pub test_skipped: Option<usize>,
    pub lookup_rows: Option<usize>,
}

impl IngestMeta {
    pub fn of_train(train: &FaceTable, skipped: &[DataError]) -> IngestMeta {
        IngestMeta {
            side: train.side,
            coordinate_names: train.coordinate_names.clone(),
            keypoint_names: train.keypoint_names(),
            train_rows: train.len(),
            train_complete_rows: train.complete_rows(),
            train_skipped: skipped.len(),
            train_presence: train.presence(),
            test_rows: None,
            test_skipped: None,
            lookup_rows: None,
        }
    }

    fn overview(&self) -> Table {
        let mut table = Table::new();
        table.set_header(["file", "rows", "complete rows", "skipped rows"]);
        table.add_row([
            "train".to_string(),
            self.train_rows.to_string(),
            format!(
                "{} ({})",
                self.train_complete_rows,
                percent(self.train_complete_rows, self.train_rows)
            ),
            self.train_skipped.to_string(),
        ]);
        if let Some(rows) = self.test_rows {
            let skipped = self.test_skipped.unwrap_or(0).to_string();
            table.add_row(["test".to_string(), rows.to_string(), "-".to_string(), skipped]);
        }
        if let Some(rows) = self.lookup_rows {
            table.add_row([
                "lookup".to_string(),
                rows.to_string(),
                "-".to_string(),
                "0".to_string(),
            ]);
        }
        right_align_numbers(&mut table, 1..4);
        table
    }

    /// Presence per keypoint: a keypoint counts as present when its x is (x and y
    /// are missing together in the Kaggle data).
    fn presence(&self) -> Table {
        let mut table = Table::new();
        table.set_header(["keypoint", "present", "share"]);
        for (name, present) in self
            .keypoint_names
            .iter()
            .zip(self.train_presence.iter().step_by(2))
        {
            table.add_row([
                name.clone(),
                present.to_string(),
                percent(*present, self.train_rows),
            ]);
        }
        right_align_numbers(&mut table, 1..3);
        table
    }

    /// `300 rows (95 complete), 96x96 pixels, 15 keypoints`, with what was
    /// skipped and the test and lookup rows when there are.
    pub fn headline(&self) -> String {
        let mut line = format!(
            "{} rows ({} complete), {side}x{side} pixels, {} keypoints",
            self.train_rows,
            self.train_complete_rows,
            self.keypoint_names.len(),
            side = self.side,
        );
        if self.train_skipped > 0 {
            line.push_str(&format!(", {} skipped", self.train_skipped));
        }
        if let Some(rows) = self.test_rows {
            line.push_str(&format!("; test {rows} rows"));
            if let Some(skipped @ 1..) = self.test_skipped {
                line.push_str(&format!(" ({skipped} skipped)"));
            }
        }
        if let Some(rows) = self.lookup_rows {
            line.push_str(&format!("; lookup {rows} rows"));
        }
        line
    }

    pub fn terminal_tables(&self) -> String {
        let mut overview = self.overview();
        let mut presence = self.presence();
        overview.load_style(presets::UTF8_FULL_CONDENSED);
        presence.load_style(presets::UTF8_FULL_CONDENSED);
        format!("{overview}\n{presence}")
    }

    pub fn markdown(&self) -> String {
        let mut overview = self.overview();
        let mut presence = self.presence();
        overview.load_style(presets::ASCII_MARKDOWN);
        presence.load_style(presets::ASCII_MARKDOWN);
        format!(
            "# Ingest\n\nImages are {side}x{side} pixels; {n} keypoints.\n\n{overview}\n\n## Labels present per keypoint\n\n{presence}\n",
            side = self.side,
            n = self.keypoint_names.len(),
        )
    }
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    format!("{:.1}%", 100.0 * part as f64 / whole as f64)
}

fn right_align_numbers(table: &mut Table, columns: std::ops::Range<usize>) {
    for index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}
