//! Tokens of the rule language (logos). Words are one token kind: keywords are contextual, so
//! a field may be called `type` or `event`. Newlines are insignificant; `//` and `#` start
//! comments.

use crate::diag::Span;
use logos::Logos;

/// A token kind; its text is the source at its span.
#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip r"//[^\n]*")]
#[logos(skip r"#[^\n]*")]
pub enum Tok {
    /// A word: keyword, name or field.
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Word,
    /// A number: `30`, `27.5`.
    #[regex(r"[0-9]+(\.[0-9]+)?")]
    Number,
    /// A duration: `500ms`, `30s`, `5m`, `2h`, `1d`.
    #[regex(r"[0-9]+(ms|s|m|h|d)")]
    Duration,
    /// A string in double quotes, with `\"`, `\\`, `\n` escapes and `{expr}` interpolation.
    #[regex(r#""([^"\\\n]|\\.)*""#)]
    Str,
    /// A string that reaches the end of its line.
    #[regex(r#""([^"\\\n]|\\.)*"#, priority = 1)]
    Unterminated,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(",")]
    Comma,
    #[token(";")]
    Semi,
    #[token(":")]
    Colon,
    #[token(".")]
    Dot,
    #[token("=")]
    Assign,
    #[token("==")]
    Eq,
    #[token("!=")]
    Ne,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("??")]
    Coalesce,
    /// End of input.
    Eof,
    /// A character the language does not use.
    Error,
}

impl Tok {
    /// How the token is named in diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            Tok::Word => "a name",
            Tok::Number => "a number",
            Tok::Duration => "a duration",
            Tok::Str | Tok::Unterminated => "a string",
            Tok::LBrace => "`{`",
            Tok::RBrace => "`}`",
            Tok::LParen => "`(`",
            Tok::RParen => "`)`",
            Tok::LBracket => "`[`",
            Tok::RBracket => "`]`",
            Tok::Comma => "`,`",
            Tok::Semi => "`;`",
            Tok::Colon => "`:`",
            Tok::Dot => "`.`",
            Tok::Assign => "`=`",
            Tok::Eq => "`==`",
            Tok::Ne => "`!=`",
            Tok::Lt => "`<`",
            Tok::Le => "`<=`",
            Tok::Gt => "`>`",
            Tok::Ge => "`>=`",
            Tok::Plus => "`+`",
            Tok::Minus => "`-`",
            Tok::Star => "`*`",
            Tok::Slash => "`/`",
            Tok::Percent => "`%`",
            Tok::Coalesce => "`??`",
            Tok::Eof => "the end of the file",
            Tok::Error => "an unexpected character",
        }
    }
}

/// A token and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// Its kind.
    pub tok: Tok,
    /// Its bytes in the source.
    pub span: Span,
}

/// The tokens of `source`, ending with [`Tok::Eof`]. Never fails: unknown characters become
/// [`Tok::Error`] tokens, which the parser reports.
pub fn lex(source: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut lexer = Tok::lexer(source);
    while let Some(result) = lexer.next() {
        let range = lexer.span();
        out.push(Token {
            tok: result.unwrap_or(Tok::Error),
            span: Span::new(range.start, range.end),
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span::new(source.len(), source.len()),
    });
    out
}

/// Parses a duration token's text (`500ms`, `5m`) into milliseconds; `None` on overflow.
pub fn duration_ms(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Tok> {
        lex(source).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_numbers_durations_and_operators() {
        assert_eq!(
            kinds("when telemetry.temp >= 30.5 for 5m // hot\n"),
            vec![
                Tok::Word,
                Tok::Word,
                Tok::Dot,
                Tok::Word,
                Tok::Ge,
                Tok::Number,
                Tok::Word,
                Tok::Duration,
                Tok::Eof
            ]
        );
        assert_eq!(
            kinds("a ?? 0"),
            vec![Tok::Word, Tok::Coalesce, Tok::Number, Tok::Eof]
        );
        assert_eq!(
            kinds("500ms 2h"),
            vec![Tok::Duration, Tok::Duration, Tok::Eof]
        );
    }

    #[test]
    fn strings_and_errors() {
        assert_eq!(kinds(r#""a \" b""#), vec![Tok::Str, Tok::Eof]);
        assert_eq!(
            kinds("\"open\nx"),
            vec![Tok::Unterminated, Tok::Word, Tok::Eof]
        );
        assert_eq!(
            kinds("a @ b"),
            vec![Tok::Word, Tok::Error, Tok::Word, Tok::Eof]
        );
    }

    #[test]
    fn durations_convert_to_milliseconds() {
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("1d"), Some(86_400_000));
        assert_eq!(duration_ms("99999999999999999999s"), None);
    }
}
