//! doppel's rule language. Rules are source text attached to a device type or a thing:
//!
//! ```text
//! rule high_temp for type Thermostat {
//!   when telemetry.temp > 30.0 for 5m
//!   clear when telemetry.temp < 27.0 for 2m
//!   then { alert HighTemp severity major "temp {telemetry.temp}"; set desired.fan = "on" }
//!   on clear { set desired.fan = "auto" }
//! }
//! ```
//!
//! [`check`] lexes, parses (with recovery, so every error is reported), checks against the
//! device type's JSON Schemas and compiles; [`engine`] runs compiled rules inside a twin;
//! [`testing`] runs the tests written in the language on a virtual clock. No I/O: time comes
//! in as `now`, device types through a [`Catalog`].

pub mod ast;
mod compile;
pub mod diag;
pub mod engine;
pub mod ir;
pub mod lexer;
pub mod parser;
pub mod schema;
pub mod state;
pub mod testing;

pub use compile::{Catalog, Offline, Program};
pub use diag::{Diagnostic, Severity, Span};
pub use engine::{Input, Outcome, Output, OutputKind, TraceEntry};
pub use ir::{CompiledRule, RuleTarget};
pub use state::TwinRuleState;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Stored rule state does not decode.
    #[error("rule state does not decode: {0}")]
    State(String),
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    /// The compiled rules and tests, when there is no error.
    pub program: Option<Program>,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// Whether an error was found.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Checks and compiles `source`. With `online`, device types and things the rules name must be
/// registered in `catalog`; offline (the CLI), unknown names are taken on trust.
pub fn check(source: &str, catalog: &dyn Catalog, online: bool) -> Checked {
    let mut diags = diag::Diagnostics::new(source);
    if source.len() > ir::limits::SOURCE_BYTES {
        diags
            .error(
                "E030",
                Span::new(0, 0),
                format!(
                    "the source is {} bytes; at most {} are accepted",
                    source.len(),
                    ir::limits::SOURCE_BYTES
                ),
            )
            .hint("split it into several files");
        return Checked {
            program: None,
            diagnostics: diags.finish(),
        };
    }
    let file = parser::parse(source, &mut diags);
    let syntax_ok = !diags.has_errors();
    let program = compile::compile(source, &file, catalog, online, &mut diags);
    let ok = syntax_ok && !diags.has_errors();
    Checked {
        program: ok.then_some(program),
        diagnostics: diags.finish(),
    }
}
