//! `doppel rules check` and `doppel rules test` on files: diagnostics as FILE:LINE:COL with a
//! snippet and exit 1 on errors; test results and exit 1 on a failing test.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn doppel(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn check_prints_every_diagnostic_with_its_place_and_a_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "rule r for type T {\n  when telemetry.temp > 30\n  then { set desired.fan = \"on\" }\n}\n\nrule s for type T {\n  when true for 5\n  then { emit event \"x\" }\n}\n",
    )
    .unwrap();
    let good = dir.path().join("good.rules");
    std::fs::write(
        &good,
        "rule r for type T {\n  when (telemetry.temp ?? 0) > 30\n  then { set desired.fan = \"on\" }\n}\n",
    )
    .unwrap();
    let (code, out) = doppel(&[
        "rules",
        "check",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    let bad_name = bad.display().to_string();
    assert!(
        out.contains(&format!(
            "{bad_name}:2:8: error: `telemetry.temp` may be missing here [E022]"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{bad_name}:7:17: error: a duration needs a unit [E003]"
        )),
        "{out}"
    );
    assert!(
        out.contains("  when telemetry.temp > 30"),
        "the snippet: {out}"
    );
    assert!(out.contains("Help: handle it"), "the hint: {out}");
    assert!(!out.contains("good.rules:"), "{out}");
    assert_eq!(doppel(&["rules", "check", good.to_str().unwrap()]).0, 0);
}

#[test]
fn test_runs_the_tests_in_files_and_fails_on_a_failing_one() {
    let examples = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/rules/examples/thermostat.rules"
    );
    let (code, out) = doppel(&["rules", "test", examples]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing.rules");
    std::fs::write(
        &failing,
        "rule slow for type T {\n  when (telemetry.x ?? 0) > 1 for 1m\n  then { emit event \"e\" }\n}\n\ntest \"too early\" {\n  at 0s telemetry {x: 5}\n  at 30s expect event \"e\"\n}\n",
    )
    .unwrap();
    let (code, out) = doppel(&["rules", "test", failing.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("test \"too early\" ... FAILED"), "{out}");
    assert!(
        out.contains(":8:3: at 30s: expected event \"e\", but none was sent"),
        "{out}"
    );
}
