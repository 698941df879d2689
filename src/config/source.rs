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
    /// Where relative paths written in it resolve: its folder, or, when `path`
    /// is a symbolic link, the folder of the file it points to, so a pipeline
    /// linked from elsewhere finds what it `extends` and reads beside itself.
    dir: PathBuf,
    pub text: String,
    /// Text from the command line (`--set`), not a file: its errors quote the
    /// argument, without a line number.
    pub command_line: bool,
    /// Byte offset where each line starts, so a location is found in O(log n):
    /// a file with thousands of errors is reported in linear time.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1))
            .collect();
        let linked = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let real = linked.then(|| std::fs::canonicalize(&path).ok()).flatten();
        let dir = real
            .as_deref()
            .unwrap_or(&path)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        SourceFile {
            path,
            dir,
            text,
            command_line: false,
            line_starts,
        }
    }

    /// An argument of the command line, e.g. `--set train.epochs=2`, shown as
    /// written; relative paths in it resolve against the current directory.
    pub fn command_line(text: String) -> SourceFile {
        SourceFile {
            command_line: true,
            ..SourceFile::new(PathBuf::from("--set"), text)
        }
    }

    /// 0-based line index of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset) - 1
    }

    /// Line `index` (0-based) without its line break.
    fn line(&self, index: usize) -> &str {
        let start = self.line_starts[index];
        let end = self
            .line_starts
            .get(index + 1)
            .map_or(self.text.len(), |&next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }
}

/// A byte range inside a [`SourceFile`].
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

/// Longest stretch of a source line shown under an error.
const SNIPPET_CHARS: usize = 100;

impl Location {
    pub fn new(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> Self {
        Location {
            file: Arc::clone(file),
            span: span.unwrap_or(0..0),
        }
    }

    /// The directory that relative paths written at this location resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.file.dir
    }

    fn start(&self) -> usize {
        let text = &self.file.text;
        let mut start = self.span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        start
    }

    /// 1-based line and column (in characters) of the start of the span.
    pub fn line_col(&self) -> (usize, usize) {
        let start = self.start();
        let line = self.file.line_of(start);
        let line_start = self.file.line_starts[line];
        let col = self.file.text[line_start..start].chars().count() + 1;
        (line + 1, col)
    }

    /// Width of the line-number gutter in a rendered snippet.
    pub fn gutter(&self) -> usize {
        match self.file.command_line {
            true => 1,
            false => self.line_col().0.to_string().len(),
        }
    }

    /// Writes the `--> file:line:col` header, the source line and a caret under the
    /// span. A long line is cut to a window around the caret.
    pub fn render_snippet(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        let gutter = self.gutter();
        writeln!(f, "{:gutter$}--> {}", "", self)?;
        let source_line = self.file.line(line - 1);
        let width = self.file.text[self.start()..]
            .chars()
            .take(self.span.len().max(1))
            .take_while(|c| *c != '\n')
            .count()
            .clamp(1, SNIPPET_CHARS / 2);
        // Show SNIPPET_CHARS characters, starting early enough to keep the caret in view.
        let skip = (col - 1).saturating_sub(SNIPPET_CHARS / 2);
        let total = source_line.chars().count();
        let shown: String = source_line.chars().skip(skip).take(SNIPPET_CHARS).collect();
        let (lead, tail) = (
            if skip > 0 { "…" } else { "" },
            if skip + SNIPPET_CHARS < total { "…" } else { "" },
        );
        writeln!(f, "{:gutter$} |", "")?;
        // One character for one character, so the caret stays under the fault.
        let shown: String = shown
            .chars()
            .map(|c| match c {
                '\t' => ' ',
                c if c.is_control() => '\u{fffd}',
                c => c,
            })
            .collect();
        let number = match self.file.command_line {
            true => " ".to_string(),
            false => line.to_string(),
        };
        writeln!(f, "{number} | {lead}{shown}{tail}")?;
        let pad = col - 1 - skip + lead.chars().count();
        write!(f, "{:gutter$} | {}{}", "", " ".repeat(pad), "^".repeat(width))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.command_line {
            return write!(f, "the command line");
        }
        let (line, col) = self.line_col();
        write!(f, "{}:{}:{}", self.file.path.display(), line, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str, span: Range<usize>) -> Location {
        let file = Arc::new(SourceFile::new(PathBuf::from("p.toml"), text.to_string()));
        Location::new(&file, Some(span))
    }

    struct Snippet(Location);
    impl fmt::Display for Snippet {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.render_snippet(f)
        }
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "[ingest]\ntarin = \"a.csv\"\n";
        let at = location(text, 9..14);
        assert_eq!(at.line_col(), (2, 1));
        assert_eq!(at.to_string(), "p.toml:2:1");
        let at = location(text, 17..24);
        assert_eq!(at.line_col(), (2, 9));
        assert_eq!(location(text, 0..0).line_col(), (1, 1));
        assert_eq!(location(text, 26..26).line_col(), (3, 1));
    }

    #[test]
    fn snippet_puts_a_caret_under_the_span() {
        let text = "[ingest]\r\ntarin = \"a.csv\"\r\n";
        let rendered = Snippet(location(text, 10..15)).to_string();
        assert!(rendered.contains("2 | tarin = \"a.csv\"\n"), "{rendered}");
        assert!(rendered.ends_with("  | ^^^^^"), "{rendered}");
    }

    #[test]
    fn a_long_line_is_cut_around_the_caret() {
        let text = format!("k = \"{}\" zz = 1\n", "x".repeat(100_000));
        let at = text.find("zz").unwrap();
        let rendered = Snippet(location(&text, at..at + 2)).to_string();
        assert!(rendered.len() < 400, "{} bytes", rendered.len());
        let lines: Vec<Vec<char>> = rendered.lines().map(|l| l.chars().collect()).collect();
        let caret = lines[3].iter().position(|&c| c == '^').unwrap();
        assert_eq!(lines[2][caret..caret + 2], ['z', 'z'], "{rendered}");
    }
}
