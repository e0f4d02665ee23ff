//! The README's quick tour, run as written: its `sh` blocks are taken from README.md itself (so
//! they cannot drift from what readers see) and run by [`doppel_tests::doc::run_section`], which
//! checks each `text` block against the output of the commands before it.

use doppel_tests::doc;
use std::{path::PathBuf, time::Duration};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

#[test]
fn the_readme_tour_runs_as_written() {
    for (program, package) in [
        ("curl", "curl"),
        ("mosquitto_rr", "mosquitto-clients"),
        ("mosquitto_pub", "mosquitto-clients"),
        ("chromium", "chromium"),
    ] {
        doc::need(program, package);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = doc::run_section(
        &readme,
        "## A quick tour",
        BIN,
        &[],
        Duration::from_secs(180),
    );
    assert!(steps >= 5, "the tour has its steps");
}
