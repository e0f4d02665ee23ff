//! Diagnostics: a stable code, a severity, a message, where (byte span, line and column) and a
//! hint. A check reports every problem it finds, not only the first.

use serde::Serialize;

/// Bytes `start..end` of the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; the rule still compiles.
    Warning,
    /// The rule does not compile.
    Error,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem in a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// A stable code (`E020`); `docs/rules.md` lists them.
    pub code: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// Where (bytes).
    pub span: Span,
    /// Line of the span's start, from 1.
    pub line: usize,
    /// Column (in characters) of the span's start, from 1.
    pub column: usize,
    /// How to fix it, where there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// `LINE:COL: severity: message [CODE]` (the CLI prefixes the file name).
    pub fn headline(&self) -> String {
        format!(
            "{}:{}: {}: {} [{}]",
            self.line,
            self.column,
            self.severity.as_str(),
            self.message,
            self.code
        )
    }
}

/// Collects diagnostics for one source.
#[derive(Debug)]
pub struct Diagnostics<'s> {
    source: &'s str,
    items: Vec<Diagnostic>,
}

/// At most this many diagnostics per check; past it, one more says how many were left out.
pub const MAX_DIAGNOSTICS: usize = 100;

impl<'s> Diagnostics<'s> {
    /// An empty collection for `source`.
    pub fn new(source: &'s str) -> Self {
        Self {
            source,
            items: Vec::new(),
        }
    }

    /// Reports an error.
    pub fn error(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(code, Severity::Error, span, message.into())
    }

    /// Reports a warning.
    pub fn warning(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(code, Severity::Warning, span, message.into())
    }

    fn push(
        &mut self,
        code: &'static str,
        severity: Severity,
        span: Span,
        message: String,
    ) -> &mut Diagnostic {
        let (line, column) = line_col(self.source, span.start);
        self.items.push(Diagnostic {
            code,
            severity,
            message,
            span,
            line,
            column,
            hint: None,
        });
        self.items.last_mut().expect("just pushed")
    }

    /// Line and column of byte `offset` of the source.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.source, offset)
    }

    /// Whether an error was reported.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics, in source order, bounded by [`MAX_DIAGNOSTICS`].
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.span.start, d.span.end));
        self.items
            .dedup_by(|a, b| a.span == b.span && a.code == b.code);
        if self.items.len() > MAX_DIAGNOSTICS {
            let left = self.items.len() - MAX_DIAGNOSTICS;
            self.items.truncate(MAX_DIAGNOSTICS);
            let last = self.items.last().map(|d| d.span).unwrap_or_default();
            let (line, column) = line_col(self.source, last.start);
            self.items.push(Diagnostic {
                code: "E099",
                severity: Severity::Error,
                message: format!("{left} more problems not shown"),
                span: last,
                line,
                column,
                hint: None,
            });
        }
        self.items
    }
}

impl Diagnostic {
    /// Adds a hint.
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Line and column (both from 1, the column in characters) of byte `offset`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = &source[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(source: &str, mut offset: usize) -> usize {
    while offset > 0 && !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters() {
        let source = "ab\nçd e\n";
        assert_eq!(line_col(source, 0), (1, 1));
        assert_eq!(line_col(source, 3), (2, 1));
        assert_eq!(line_col(source, 6), (2, 3));
        assert_eq!(line_col(source, 100), (3, 1));
    }

    #[test]
    fn diagnostics_are_sorted_deduplicated_and_bounded() {
        let source = "x".repeat(300);
        let mut d = Diagnostics::new(&source);
        for i in (0..150).rev() {
            d.error("E001", Span::new(i, i + 1), "bad");
        }
        d.error("E001", Span::new(0, 1), "bad");
        let items = d.finish();
        assert_eq!(items.len(), MAX_DIAGNOSTICS + 1);
        assert_eq!(items[0].span.start, 0);
        assert_eq!(items.last().unwrap().message, "50 more problems not shown");
    }
}
