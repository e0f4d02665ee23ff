//! The language reference's examples (`docs/rules/examples/*.rules`), the README's tour rule
//! and the benchmark's rule check without a diagnostic, each has tests, and every test passes.

use std::path::Path;

#[test]
fn the_documented_examples_check_and_their_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rules/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples in {}", dir.display());
    for path in files {
        let source = std::fs::read_to_string(&path).unwrap();
        check_and_test(&path, &source);
    }
}

#[test]
fn the_readme_tour_rule_checks_and_its_test_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find("<<'RULES'\n")
        .expect("the README's tour writes a rule file")
        + "<<'RULES'\n".len();
    let len = readme[start..]
        .find("\nRULES\n")
        .expect("end of the rule file");
    check_and_test(&path, &readme[start..start + len]);
}

#[test]
fn the_benchmark_rule_checks_and_its_test_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/hot.rules");
    check_and_test(&path, &std::fs::read_to_string(&path).unwrap());
}

fn check_and_test(path: &Path, source: &str) {
    let checked = rules_dsl::check(source, &rules_dsl::Offline, false);
    assert!(
        checked.diagnostics.is_empty(),
        "{}: {:#?}",
        path.display(),
        checked.diagnostics
    );
    let program = checked.program.unwrap();
    assert!(!program.tests.is_empty(), "{} has no tests", path.display());
    for report in rules_dsl::testing::run(&program, None) {
        assert!(
            report.passed,
            "{}: test {:?} failed: {:#?}",
            path.display(),
            report.name,
            report.failures
        );
    }
}
