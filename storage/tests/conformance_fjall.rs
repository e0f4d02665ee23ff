//! The conformance suite on the embedded fjall backend, one test per case, each on a fresh
//! store in a temporary directory.

use storage::{FjallStore, repo::default_root};

storage::conformance_tests!({
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    (dir, store, default_root())
});

#[test]
fn every_case_has_a_test() {
    // The macro above defines one test per entry of CASES; this pins the count so a case
    // cannot be left out of the embedded run.
    assert_eq!(storage::conformance::CASES.len(), 24);
}

mod through_any_store {
    use storage::{AnyStore, FjallStore, repo::default_root};

    storage::conformance_tests!({
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::from(FjallStore::open(dir.path()).unwrap());
        (dir, store, default_root())
    });
}
