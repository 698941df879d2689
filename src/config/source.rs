//! Source text of pipeline files and locations inside them, rendered as
//! `file:line:col` plus the offending line with a caret, the way compilers do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One pipeline file as read from disk.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A byte range inside a [`SourceFile`].
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl Location {
    pub fn new(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> Self {
        Location {
            file: Arc::clone(file),
            span: span.unwrap_or(0..0),
        }
    }

    /// The directory that relative paths written at this location resolve against.
    pub fn base_dir(&self) -> &Path {
        self.file.path.parent().unwrap_or(Path::new("."))
    }

    /// 1-based line and column (in characters) of the start of the span.
    pub fn line_col(&self) -> (usize, usize) {
        let text = &self.file.text;
        let start = self.span.start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..start].chars().count() + 1;
        (line, col)
    }

    /// Width of the line-number gutter in a rendered snippet.
    pub fn gutter(&self) -> usize {
        self.line_col().0.to_string().len()
    }

    /// Writes the `--> file:line:col` header, the source line and a caret under the span.
    pub fn render_snippet(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        let gutter = self.gutter();
        writeln!(
            f,
            "{:gutter$}--> {}:{}:{}",
            "",
            self.file.path.display(),
            line,
            col
        )?;
        let Some(source_line) = self.file.text.lines().nth(line - 1) else {
            return Ok(());
        };
        let width = self.file.text[self.span.start.min(self.file.text.len())..]
            .chars()
            .take(self.span.len().max(1))
            .take_while(|c| *c != '\n')
            .count()
            .max(1);
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{line} | {source_line}")?;
        write!(f, "{:gutter$} | {}{}", "", " ".repeat(col - 1), "^".repeat(width))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{}:{}", self.file.path.display(), line, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str, span: Range<usize>) -> Location {
        let file = Arc::new(SourceFile {
            path: PathBuf::from("p.toml"),
            text: text.to_string(),
        });
        Location::new(&file, Some(span))
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "[ingest]\ntarin = \"a.csv\"\n";
        let at = location(text, 9..14);
        assert_eq!(at.line_col(), (2, 1));
        assert_eq!(at.to_string(), "p.toml:2:1");
        let at = location(text, 17..24);
        assert_eq!(at.line_col(), (2, 9));
    }

    #[test]
    fn snippet_puts_a_caret_under_the_span() {
        struct Snippet(Location);
        impl fmt::Display for Snippet {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.render_snippet(f)
            }
        }
        let text = "[ingest]\ntarin = \"a.csv\"\n";
        let rendered = Snippet(location(text, 9..14)).to_string();
        assert!(rendered.contains("2 | tarin = \"a.csv\""), "{rendered}");
        assert!(rendered.ends_with("  | ^^^^^"), "{rendered}");
    }
}
