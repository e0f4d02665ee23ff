//! The conformance suite on FoundationDB (feature `fdb`). Needs a running cluster:
//!
//! ```sh
//! FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster cargo nextest run -p storage --features fdb --test conformance_fdb
//! ```
//!
//! All cases run in one test because FoundationDB's network starts once per process; each case
//! works in its own subspace of a per-run prefix, cleared before and after.

use storage::{Subspace, fdb::FdbNetwork, fdb::FdbStore};

#[test]
fn foundationdb_passes_the_conformance_suite() {
    let cluster_file = std::env::var("FDB_CLUSTER_FILE")
        .expect("set FDB_CLUSTER_FILE to the cluster file of the FoundationDB cluster to test");
    let network = FdbNetwork::boot().unwrap();
    let store = FdbStore::open(&network, Some(&cluster_file)).unwrap();
    let run = format!("doppel-conformance-{}", std::process::id());
    let root = Subspace::all().subspace(&run.as_str());
    storage::conformance::run_all(&store, &root);
    drop(store);
    drop(network);
}
