//! Golden tests: `test_data/diagnostics/*.rules` → the diagnostics (`*.out`), and
//! `test_data/timelines/*.rules` → each in-language test's result and everything its rules did
//! (`*.out`). `UPDATE_GOLDEN=1 cargo test -p rules-dsl --test golden` rewrites the `.out`
//! files; review the diff.

use rules_dsl::{Catalog, testing};
use serde_json::json;
use std::{fmt::Write, fs, path::Path};
use twin_core::Schemas;

/// The deployment the golden sources are checked against.
struct Fixture;

impl Catalog for Fixture {
    fn device_type(&self, name: &str) -> Option<Schemas> {
        match name {
            "Thermostat" => Some(Schemas {
                telemetry: Some(json!({
                    "type": "object",
                    "properties": {"temp": {"type": "number"}, "mode": {"type": "string"}},
                    "additionalProperties": false
                })),
                reported: Some(json!({
                    "type": "object",
                    "properties": {
                        "mode": {"enum": ["eco", "comfort"]},
                        "target": {"type": "number"},
                        "note": {"type": "string"}
                    },
                    "required": ["mode", "target"]
                })),
                desired: Some(json!({
                    "type": "object",
                    "properties": {"fan": {"type": "string"}, "target": {"type": "number"}},
                    "additionalProperties": false
                })),
            }),
            "T" | "Door" | "Pump" | "Room" | "Sensor" => Some(Schemas::default()),
            _ => None,
        }
    }

    fn thing_type(&self, _: &str) -> Option<Option<String>> {
        None
    }
}

fn golden(dir: &str, render: impl Fn(&str, &str) -> String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(dir);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut sources: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no sources in {}", dir.display());
    let mut mismatches = Vec::new();
    for source_path in sources {
        let source = fs::read_to_string(&source_path).unwrap();
        let name = source_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let actual = render(&name, &source);
        let out = source_path.with_extension("out");
        if update {
            fs::write(&out, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&out).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                out.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn diagnostics() {
    golden("diagnostics", |name, source| {
        let checked = rules_dsl::check(source, &Fixture, true);
        assert!(!checked.diagnostics.is_empty(), "{name} reports nothing");
        let mut out = String::new();
        for d in &checked.diagnostics {
            writeln!(out, "{name}:{}", d.headline()).unwrap();
            if let Some(hint) = &d.hint {
                writeln!(out, "  hint: {hint}").unwrap();
            }
        }
        out
    });
}

#[test]
fn timelines() {
    golden("timelines", |name, source| {
        let checked = rules_dsl::check(source, &Fixture, true);
        let program = checked
            .program
            .unwrap_or_else(|| panic!("{name} does not check: {:#?}", checked.diagnostics));
        let mut out = String::new();
        for report in testing::run(&program, None) {
            let verdict = if report.passed { "pass" } else { "FAIL" };
            writeln!(out, "test {:?}: {verdict}", report.name).unwrap();
            for f in &report.failures {
                writeln!(out, "  {}:{}: {}", f.line, f.column, f.message).unwrap();
            }
            for line in &report.timeline {
                writeln!(out, "  {line}").unwrap();
            }
        }
        out
    });
}
