//! One table type for every report: rendered for the terminal (comfy-table), as
//! Markdown, and written as Parquet, so the numbers a person reads and the numbers
//! a script reads are the same.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use comfy_table::{CellAlignment, Table, presets};
use parquet::arrow::ArrowWriter;

use super::RenderError;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// Shown with the table's number of decimals; written at full precision.
    Float(f64),
    Empty,
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::Text(text.to_string())
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::Text(text)
    }
}

impl From<usize> for Cell {
    fn from(n: usize) -> Self {
        Cell::Int(n as i64)
    }
}

impl From<f64> for Cell {
    fn from(x: f64) -> Self {
        if x.is_finite() {
            Cell::Float(x)
        } else {
            Cell::Empty
        }
    }
}

impl From<Option<f64>> for Cell {
    fn from(x: Option<f64>) -> Self {
        x.map_or(Cell::Empty, Cell::from)
    }
}

#[derive(Debug, Clone)]
pub struct ReportTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Decimals shown for floats (Parquet keeps full precision).
    pub decimals: usize,
}

impl ReportTable {
    pub fn new(columns: impl IntoIterator<Item = impl Into<String>>, decimals: usize) -> Self {
        ReportTable {
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            decimals,
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    fn show(&self, cell: &Cell) -> String {
        match cell {
            Cell::Text(text) => text.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Float(x) => format!("{x:.*}", self.decimals),
            Cell::Empty => String::new(),
        }
    }

    fn comfy(&self) -> Table {
        let mut table = Table::new();
        table.set_header(&self.columns);
        for row in &self.rows {
            table.add_row(row.iter().map(|c| self.show(c)).collect::<Vec<_>>());
        }
        for (index, column) in table.column_iter_mut().enumerate() {
            let numeric = self
                .rows
                .iter()
                .all(|row| matches!(row.get(index), Some(Cell::Int(_) | Cell::Float(_) | Cell::Empty)));
            if numeric {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        table
    }

    pub fn to_terminal(&self) -> String {
        let mut table = self.comfy();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        table.to_string()
    }

    pub fn to_markdown(&self) -> String {
        let mut table = self.comfy();
        table.load_style(presets::ASCII_MARKDOWN);
        table.to_string()
    }

    /// The table as an HTML `<table>`, text escaped, numbers right-aligned.
    pub fn to_html(&self) -> String {
        let mut html = String::from("<table>\n<thead><tr>");
        for column in &self.columns {
            html.push_str(&format!("<th>{}</th>", escape_html(column)));
        }
        html.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            html.push_str("<tr>");
            for cell in row {
                let class = if matches!(cell, Cell::Text(_)) {
                    ""
                } else {
                    " class=\"num\""
                };
                html.push_str(&format!("<td{class}>{}</td>", escape_html(&self.show(cell))));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</tbody>\n</table>\n");
        html
    }

    /// Writes the table as Parquet: text columns as Utf8, integer columns as Int64,
    /// any column holding a float as Float64; empty cells are nulls.
    pub fn write_parquet(&self, path: &Path) -> Result<(), RenderError> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (index, name) in self.columns.iter().enumerate() {
            let cells = self.rows.iter().map(|row| &row[index]);
            let has = |f: fn(&Cell) -> bool| self.rows.iter().any(|row| f(&row[index]));
            let (data_type, array): (DataType, ArrayRef) = if has(|c| matches!(c, Cell::Text(_))) {
                let values: StringArray = cells
                    .map(|c| (!matches!(c, Cell::Empty)).then(|| self.show(c)))
                    .collect();
                (DataType::Utf8, Arc::new(values))
            } else if has(|c| matches!(c, Cell::Float(_))) {
                let values: Float64Array = cells
                    .map(|c| match c {
                        Cell::Float(x) => Some(*x),
                        Cell::Int(n) => Some(*n as f64),
                        _ => None,
                    })
                    .collect();
                (DataType::Float64, Arc::new(values))
            } else {
                let values: Int64Array = cells
                    .map(|c| match c {
                        Cell::Int(n) => Some(*n),
                        _ => None,
                    })
                    .collect();
                (DataType::Int64, Arc::new(values))
            };
            fields.push(Field::new(name, data_type, true));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| RenderError::write(path, e))?;
        let file = std::fs::File::create(path).map_err(|e| RenderError::write(path, e))?;
        let mut writer =
            ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| RenderError::write(path, e))?;
        writer.write(&batch).map_err(|e| RenderError::write(path, e))?;
        writer.close().map_err(|e| RenderError::write(path, e))?;
        Ok(())
    }

    /// Writes the table as CSV (full precision, empty cells empty).
    pub fn write_csv(&self, path: &Path) -> Result<(), RenderError> {
        let mut writer = csv::Writer::from_path(path).map_err(|e| RenderError::write(path, e))?;
        writer
            .write_record(&self.columns)
            .map_err(|e| RenderError::write(path, e))?;
        for row in &self.rows {
            let fields = row.iter().map(|cell| match cell {
                Cell::Text(text) => text.clone(),
                Cell::Int(n) => n.to_string(),
                Cell::Float(x) => x.to_string(),
                Cell::Empty => String::new(),
            });
            writer
                .write_record(fields)
                .map_err(|e| RenderError::write(path, e))?;
        }
        writer.flush().map_err(|e| RenderError::write(path, e))
    }

    /// Writes `<stem>.parquet` and `<stem>.md` (with a title).
    pub fn write_both(&self, dir: &Path, stem: &str, title: &str) -> Result<(), RenderError> {
        self.write_parquet(&dir.join(format!("{stem}.parquet")))?;
        let markdown = format!("# {title}\n\n{}\n", self.to_markdown());
        let path = dir.join(format!("{stem}.md"));
        std::fs::write(&path, markdown).map_err(|e| RenderError::write(&path, e))
    }
}

/// Text made safe inside HTML elements and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn sample() -> ReportTable {
        let mut table = ReportTable::new(["name", "count", "mean"], 2);
        table.push(vec!["a".into(), 3usize.into(), 1.23456.into()]);
        table.push(vec!["b".into(), 0usize.into(), Cell::Empty]);
        table
    }

    #[test]
    fn renders_markdown_with_rounded_floats() {
        let markdown = sample().to_markdown();
        assert!(markdown.contains("| name | count | mean |"), "{markdown}");
        assert!(markdown.contains("| a    |     3 | 1.23 |"), "{markdown}");
    }

    #[test]
    fn html_escapes_text_and_marks_numbers() {
        let mut table = ReportTable::new(["<name>"], 1);
        table.push(vec!["a & b".into()]);
        table.push(vec![2.25.into()]);
        let html = table.to_html();
        assert!(html.contains("<th>&lt;name&gt;</th>"), "{html}");
        assert!(html.contains("<td>a &amp; b</td>"), "{html}");
        assert!(html.contains("<td class=\"num\">2.2</td>"), "{html}");
    }

    #[test]
    fn parquet_keeps_types_nulls_and_full_precision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        sample().write_parquet(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batch = reader.into_iter().next().unwrap().unwrap();
        let mean = batch.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(mean.value(0), 1.23456);
        assert!(mean.is_null(1));
        let count = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(count.values(), &[3, 0]);
    }
}
