//! An outside client: schemathesis (PyPI) fuzzes the HTTP API from its own OpenAPI document,
//! against a running node, once per role. It must find no 5xx, no answer that breaks the
//! document (status codes, content types, response schemas, headers), no malformed request
//! accepted, and — through `tests/schemathesis/hooks.py` — no 2xx for a request the key's role
//! may not make.
//!
//! Needs `schemathesis` in `DOPPEL_PYTHON`'s environment, or in `.venv` in the workspace
//! (`scripts/test` installs it). `DOPPEL_SCHEMATHESIS_SEED` picks another seed (CI uses a fixed one,
//! so that a run is reproducible).

use doppel_tests::{
    api::Api,
    node::{Node, Options},
};
use std::{path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// Checks schemathesis runs. Not run: `positive_data_acceptance`, which expects every request
/// the document allows to succeed; the document cannot express conditions such as "the device
/// type must be registered" or "If-Match names the current version".
const CHECKS: &str = "all";
const SKIPPED: &str = "positive_data_acceptance";

fn schemathesis() -> PathBuf {
    let bin = match std::env::var_os("DOPPEL_PYTHON") {
        Some(python) => PathBuf::from(python).with_file_name("schemathesis"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis"),
    };
    assert!(
        bin.exists(),
        "no schemathesis at {}: `scripts/test` creates .venv from tests/requirements.txt (or set DOPPEL_PYTHON)",
        bin.display()
    );
    bin
}

fn fuzz(node: &Node, role: &str, key: &str) {
    let work = tempfile::tempdir().unwrap();
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let seed = std::env::var("DOPPEL_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let output = Command::new(schemathesis())
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("DOPPEL_ROLE", role)
        .arg("run")
        .arg(node.url("/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", CHECKS, "--exclude-checks", SKIPPED])
        .args(["--max-examples", "30", "--seed", &seed])
        .args(["--generation-database", "none", "--no-color"])
        // One worker: with several, Python 3.11's `ast` module intermittently fails with
        // "AST constructor recursion depth mismatch" inside hypothesis (CPython gh-106905),
        // which schemathesis reports as a runtime error.
        .args(["--workers", "1"])
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems with a {role} key:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Tested: 55"),
        "every operation was tested:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_errors_and_no_privilege_escalation() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    // Some data to reach past the 404s: a type, things of it with shadows.
    admin.put_type("Pump", serde_json::json!({})).await;
    for name in ["0", "pump-1"] {
        admin.register(name, Some("Pump")).await;
        admin
            .patch(
                &format!("/v1/things/{name}/shadow"),
                serde_json::json!({"state": {"desired": {"on": true}}}),
            )
            .await;
    }
    let viewer = admin.create_key("viewer", None).await;
    let operator = admin.create_key("operator", None).await;
    // An admin key rather than the bootstrap token: the fuzzer rotates the bootstrap token.
    let admin_key = admin.create_key("admin", None).await;
    fuzz(&node, "viewer", &viewer);
    fuzz(&node, "operator", &operator);
    fuzz(&node, "admin", &admin_key);
}
