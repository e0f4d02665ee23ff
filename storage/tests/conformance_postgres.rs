//! The conformance suite on the PostgreSQL-wire backend, against a private PostgreSQL server
//! that the test starts itself (Debian's `postgresql`); every case in its own subspace, cleared
//! before and after. Also what only this backend has: its own schema per store, options from
//! the URL, and two stores (two nodes) sharing one table.

use storage::{
    AnyStore, PgStore, Store, Subspace, Transaction, conformance, pg_server::LocalServer,
    repo::default_root,
};

fn server() -> LocalServer {
    LocalServer::start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_conformance_case_passes_on_postgresql() {
    let server = server();
    let store = PgStore::open(&format!("{}?schema=conformance&pool=8", server.url())).unwrap();
    conformance::run_all(&store, &default_root());
    // And through the node's store type.
    let store =
        AnyStore::from(PgStore::open(&format!("{}?schema=through_any", server.url())).unwrap());
    conformance::run_all(&store, &default_root());
}

#[test]
fn stores_on_one_table_share_it_and_schemas_keep_deployments_apart() {
    let server = server();
    let url = format!("{}?schema=shared", server.url());
    let (first, second) = (PgStore::open(&url).unwrap(), PgStore::open(&url).unwrap());
    let other = PgStore::open(&format!("{}?schema=other", server.url())).unwrap();
    let key = Subspace::all().pack(&("twin", "pump-1"));
    first
        .transact(|tx| tx.set(&key, b"from the first node"))
        .unwrap();
    let seen = second.transact(|tx| tx.get(&key)).unwrap();
    assert_eq!(seen.as_deref(), Some(&b"from the first node"[..]));
    assert_eq!(other.transact(|tx| tx.get(&key)).unwrap(), None);
}

#[test]
fn keys_of_two_thousand_bytes_are_stored_and_ordered() {
    let server = server();
    let store = PgStore::open(&server.url()).unwrap();
    let root = Subspace::all().subspace(&"long");
    let keys: Vec<Vec<u8>> = (0..3u8)
        .map(|i| root.pack(&(vec![b'a' + i; 2_000],)))
        .collect();
    store
        .transact(|tx| keys.iter().rev().try_for_each(|k| tx.set(k, b"v")))
        .unwrap();
    let read = store
        .transact(|tx| tx.get_range(&root.range().into(), Default::default()))
        .unwrap();
    assert_eq!(read.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), keys);
}

#[test]
fn an_unreachable_server_is_an_outage_not_a_refusal() {
    let server = server();
    let store = PgStore::open(&format!("{}?connect_timeout=1", server.url())).unwrap();
    server.stop().unwrap();
    let error = store.transact(|tx| tx.get(b"k")).unwrap_err();
    assert!(
        matches!(error, storage::StoreError::Unavailable(_)),
        "{error:?}"
    );
    assert!(!error.is_permanent());
    server.resume().unwrap();
    // The pool reconnects by itself.
    store.transact(|tx| tx.set(b"k", b"v")).unwrap();
    assert_eq!(
        store.transact(|tx| tx.get(b"k")).unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
