//! `doppel rules check FILE…` and `doppel rules test FILE…`: the rule language's checker and
//! test runner on files, offline (device types and things are not known, so fields are not
//! checked against schemas).

use ariadne::{Config, IndexType, Label, Report, ReportKind, Source};
use clap::Subcommand;
use rules_dsl::{Diagnostic, Offline, Severity, testing};
use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

/// What to do with rules: `check` and `test` work on files offline; the rest on a node.
#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Check rule files: prints every diagnostic as FILE:LINE:COL with a snippet; exits 1 on
    /// any error.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the tests written in rule files; exits 1 if one fails (or a file does not check).
    Test {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rules stored on a node.
    #[command(flatten)]
    Node(crate::ops_cli::RemoteRules),
}

/// Runs the command; the exit code says whether everything checked and passed.
pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    let (files, test) = match command {
        RulesCommand::Check { files } => (files, false),
        RulesCommand::Test { files } => (files, true),
        RulesCommand::Node(_) => anyhow::bail!("node rule commands run through ops_cli"),
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut failed = false;
    let (mut passed_tests, mut failed_tests) = (0usize, 0usize);
    for path in &files {
        let name = path.display().to_string();
        let source =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
        let checked = rules_dsl::check(&source, &Offline, false);
        for d in &checked.diagnostics {
            print_diagnostic(&name, &source, d, color);
        }
        let Some(program) = checked.program else {
            failed = true;
            continue;
        };
        if !test {
            continue;
        }
        if program.tests.is_empty() {
            println!("{name}: no tests");
            continue;
        }
        for report in testing::run(&program, None) {
            if report.passed {
                passed_tests += 1;
                println!("{name}: test {:?} ... ok", report.name);
            } else {
                failed_tests += 1;
                failed = true;
                println!("{name}: test {:?} ... FAILED", report.name);
                for f in &report.failures {
                    println!("{name}:{}:{}: {}", f.line, f.column, f.message);
                }
                if !report.timeline.is_empty() {
                    println!("  what the rules did:");
                    for line in &report.timeline {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    if test {
        println!("{} passed, {} failed", passed_tests, failed_tests);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_diagnostic(name: &str, source: &str, d: &Diagnostic, color: bool) {
    println!("{name}:{}", d.headline());
    let kind = match d.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let end = d.span.end.max(d.span.start + 1).min(source.len().max(1));
    let start = d.span.start.min(end.saturating_sub(1));
    let mut report = Report::build(kind, (name, start..end))
        .with_config(
            Config::default()
                .with_color(color)
                .with_index_type(IndexType::Byte),
        )
        .with_code(d.code)
        .with_message(&d.message)
        .with_label(Label::new((name, start..end)).with_message(&d.message));
    if let Some(hint) = &d.hint {
        report = report.with_help(hint);
    }
    let mut out = Vec::new();
    if report
        .finish()
        .write((name, Source::from(source)), &mut out)
        .is_ok()
    {
        print!("{}", String::from_utf8_lossy(&out));
    }
}
