//! The conformance suite: what every backend must do, written once against the [`Store`]
//! trait. Each case takes an empty subspace to work in.
//!
//! Embedded backend: `storage/tests/conformance_fjall.rs` runs each case as its own test via
//! [`conformance_tests!`](crate::conformance_tests). FoundationDB: `storage/tests/conformance_fdb.rs`
//! (feature `fdb`, `FDB_CLUSTER_FILE` set) runs [`run_all`] against a live cluster.

use crate::repo::LogKind;
use crate::{
    AuditEntry, KeyRange, KeyRecord, MAX_KEY_BYTES, MAX_VALUE_BYTES, RangeOptions, Repos, Role,
    RuleLogEntry, RuleRecord, StoreError, ThingRecord,
    kv::{Store, Transaction},
    repo::blob,
};
use foundationdb_tuple::{Subspace, TuplePack};
use serde_json::json;
use twin_core::{
    Command, Context, DeviceType, Limits, ShadowName, ThingName, Twin, TypeName, request,
};

fn key(root: &Subspace, t: impl TuplePack) -> Vec<u8> {
    root.pack(&t)
}

fn read(store: &impl Store, k: &[u8]) -> Option<Vec<u8>> {
    store.transact(|tx| tx.get(k)).expect("read")
}

fn write(store: &impl Store, k: &[u8], v: &[u8]) {
    store.transact(|tx| tx.set(k, v)).expect("write");
}

fn all(store: &impl Store, root: &Subspace) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .transact(|tx| tx.get_range(&root.range().into(), RangeOptions::default()))
        .expect("range")
}

/// A key never written reads as `None`.
pub fn missing_keys_read_as_none<S: Store>(store: &S, root: &Subspace) {
    assert_eq!(read(store, &key(root, "nothing")), None);
}

/// A transaction reads its own writes; after commit every new transaction sees them.
pub fn writes_are_visible_to_their_transaction_and_after_commit<S: Store>(
    store: &S,
    root: &Subspace,
) {
    let k = key(root, "k");
    store
        .transact(|tx| {
            tx.set(&k, b"v1")?;
            assert_eq!(tx.get(&k)?.as_deref(), Some(&b"v1"[..]));
            Ok(())
        })
        .unwrap();
    assert_eq!(read(store, &k).as_deref(), Some(&b"v1"[..]));
}

/// Set replaces; clear removes; clearing a missing key is fine.
pub fn overwrite_and_clear<S: Store>(store: &S, root: &Subspace) {
    let k = key(root, "k");
    write(store, &k, b"a");
    write(store, &k, b"b");
    assert_eq!(read(store, &k).as_deref(), Some(&b"b"[..]));
    store.transact(|tx| tx.clear(&k)).unwrap();
    assert_eq!(read(store, &k), None);
    store.transact(|tx| tx.clear(&k)).unwrap();
    write(store, &k, b"");
    assert_eq!(
        read(store, &k).as_deref(),
        Some(&b""[..]),
        "empty values are values"
    );
}

/// Keys sort as their tuples: integers numerically, strings lexicographically.
pub fn keys_sort_in_tuple_order<S: Store>(store: &S, root: &Subspace) {
    let ints = [70_000i64, -1_000, 0, 7, -5, 300];
    let strings = ["b", "aa", "a", "ab"];
    store
        .transact(|tx| {
            for i in ints {
                tx.set(&key(root, ("i", i)), &i.to_be_bytes())?;
            }
            for s in strings {
                tx.set(&key(root, ("s", s)), s.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
    let read_back = |tag: &str| -> Vec<Vec<u8>> {
        let space = root.subspace(&tag);
        store
            .transact(|tx| tx.get_range(&space.range().into(), RangeOptions::default()))
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    let mut sorted_ints = ints;
    sorted_ints.sort();
    assert_eq!(
        read_back("i"),
        sorted_ints.map(|i| i.to_be_bytes().to_vec()).to_vec()
    );
    assert_eq!(
        read_back("s"),
        ["a", "aa", "ab", "b"]
            .map(|s| s.as_bytes().to_vec())
            .to_vec()
    );
}

/// Ranges are half-open, ordered, limited and reversible.
pub fn range_reads_are_half_open_limited_and_reversible<S: Store>(store: &S, root: &Subspace) {
    store
        .transact(|tx| {
            for i in 0..10u32 {
                tx.set(&key(root, i), &[i as u8])?;
            }
            Ok(())
        })
        .unwrap();
    let range = KeyRange::new(key(root, 3u32), key(root, 7u32));
    let values = |options| -> Vec<u8> {
        store
            .transact(|tx| tx.get_range(&range, options))
            .unwrap()
            .into_iter()
            .map(|(_, v)| v[0])
            .collect()
    };
    assert_eq!(values(RangeOptions::default()), vec![3, 4, 5, 6]);
    assert_eq!(
        values(RangeOptions {
            limit: Some(2),
            reverse: false
        }),
        vec![3, 4]
    );
    assert_eq!(
        values(RangeOptions {
            limit: None,
            reverse: true
        }),
        vec![6, 5, 4, 3]
    );
    assert_eq!(
        values(RangeOptions {
            limit: Some(2),
            reverse: true
        }),
        vec![6, 5]
    );
    let pairs = store
        .transact(|tx| tx.get_range(&range, RangeOptions::default()))
        .unwrap();
    assert_eq!(pairs[0].0, key(root, 3u32), "pairs carry their keys");
}

/// A range read inside a transaction sees the transaction's own writes and clears.
pub fn range_reads_see_their_own_writes<S: Store>(store: &S, root: &Subspace) {
    write(store, &key(root, 1u32), b"1");
    write(store, &key(root, 2u32), b"2");
    store
        .transact(|tx| {
            tx.set(&key(root, 3u32), b"3")?;
            tx.clear(&key(root, 1u32))?;
            let values: Vec<Vec<u8>> = tx
                .get_range(&root.range().into(), RangeOptions::default())?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(values, vec![b"2".to_vec(), b"3".to_vec()]);
            Ok(())
        })
        .unwrap();
}

/// `clear_range` removes exactly `[begin, end)`.
pub fn clear_range_removes_exactly_the_range<S: Store>(store: &S, root: &Subspace) {
    store
        .transact(|tx| {
            for i in 0..6u32 {
                tx.set(&key(root, i), b"x")?;
            }
            Ok(())
        })
        .unwrap();
    store
        .transact(|tx| tx.clear_range(&KeyRange::new(key(root, 1u32), key(root, 4u32))))
        .unwrap();
    let left: Vec<u32> = all(store, root)
        .into_iter()
        .map(|(k, _)| root.unpack(&k).unwrap())
        .collect();
    assert_eq!(left, vec![0, 4, 5]);
}

/// A transaction whose body fails writes nothing.
pub fn failed_bodies_write_nothing<S: Store>(store: &S, root: &Subspace) {
    let (a, b) = (key(root, "a"), key(root, "b"));
    let result: Result<(), StoreError> = store.transact(|tx| {
        tx.set(&a, b"1")?;
        tx.set(&b, b"2")?;
        Err(StoreError::corrupt("test", "the body gives up"))
    });
    assert!(matches!(result, Err(StoreError::Corrupt { .. })));
    assert_eq!((read(store, &a), read(store, &b)), (None, None));
}

/// Writes of a transaction are invisible to others until it commits, then visible all at once.
pub fn uncommitted_writes_are_invisible<S: Store>(store: &S, root: &Subspace) {
    let (a, b) = (key(root, "a"), key(root, "b"));
    let mut writer = store.begin().unwrap();
    writer.set(&a, b"1").unwrap();
    writer.set(&b, b"2").unwrap();
    assert_eq!(read(store, &a), None);
    writer.commit().unwrap();
    let both = store.transact(|tx| Ok((tx.get(&a)?, tx.get(&b)?))).unwrap();
    assert_eq!(both, (Some(b"1".to_vec()), Some(b"2".to_vec())));
}

/// Write skew is refused: t1 reads `k` and writes `out`, t2 reads `out` and writes `k`; no
/// serial order gives both their reads, so once t2 committed, t1 fails to commit with a
/// retryable error; after `on_error` it sees the new value and commits. (FoundationDB and the
/// embedded store refuse t1 for reading a key changed since; PostgreSQL for the cycle.)
pub fn conflicting_commits_fail_and_retry<S: Store>(store: &S, root: &Subspace) {
    let (k, out) = (key(root, "k"), key(root, "out"));
    write(store, &k, b"1");
    let mut t1 = store.begin().unwrap();
    assert_eq!(t1.get(&k).unwrap().as_deref(), Some(&b"1"[..]));
    let mut t2 = store.begin().unwrap();
    assert_eq!(t2.get(&out).unwrap(), None);
    t2.set(&k, b"2").unwrap();
    t2.commit().unwrap();
    t1.set(&out, b"saw 1").unwrap();
    let error = t1.commit().expect_err("t1 read a key t2 changed");
    assert_eq!(read(store, &out), None, "the failed commit wrote nothing");
    t1.on_error(error).expect("a conflict is retryable");
    assert_eq!(t1.get(&k).unwrap().as_deref(), Some(&b"2"[..]));
    t1.set(&out, b"saw 2").unwrap();
    t1.commit().unwrap();
    assert_eq!(read(store, &out).as_deref(), Some(&b"saw 2"[..]));
}

/// Transactions that only write disjoint keys do not conflict.
pub fn blind_writes_do_not_conflict<S: Store>(store: &S, root: &Subspace) {
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    t1.set(&key(root, 1u32), b"1").unwrap();
    t2.set(&key(root, 2u32), b"2").unwrap();
    t1.commit().unwrap();
    t2.commit().unwrap();
    assert_eq!(all(store, root).len(), 2);
}

/// Read-modify-write transactions from several threads lose no update.
pub fn concurrent_increments_are_serializable<S: Store>(store: &S, root: &Subspace) {
    let counter = key(root, "counter");
    let (threads, each) = (4, 25);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..each {
                    store
                        .transact(|tx| {
                            let n = tx
                                .get(&counter)?
                                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                            tx.set(&counter, &(n + 1).to_be_bytes())
                        })
                        .unwrap();
                }
            });
        }
    });
    let n = u64::from_be_bytes(read(store, &counter).unwrap().try_into().unwrap());
    assert_eq!(n, threads * each);
}

/// Keys, values and transactions are bounded as in FoundationDB.
pub fn limits_match_foundationdb<S: Store>(store: &S, root: &Subspace) {
    let mut tx = store.begin().unwrap();
    let long_key = key(root, "k".repeat(MAX_KEY_BYTES));
    assert!(matches!(
        tx.set(&long_key, b"v"),
        Err(StoreError::KeyTooLarge { .. })
    ));
    let big = vec![7u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        tx.set(&key(root, "v"), &big),
        Err(StoreError::ValueTooLarge { .. })
    ));
    tx.set(&key(root, "v"), &big[..MAX_VALUE_BYTES]).unwrap();
    let result =
        (0..110u32).try_for_each(|i| tx.set(&key(root, ("bulk", i)), &big[..MAX_VALUE_BYTES]));
    assert!(
        matches!(result, Err(StoreError::TransactionTooLarge { .. })),
        "{result:?}"
    );
}

/// Values larger than the value limit are split into chunks and reassembled; a shorter value
/// replaces a longer one; delete removes every chunk.
pub fn large_blobs_are_split_and_reassembled<S: Store>(store: &S, root: &Subspace) {
    let space = root.subspace(&"blob");
    let get = || store.transact(|tx| blob::get(tx, &space)).unwrap();
    let big: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
    store.transact(|tx| blob::put(tx, &space, &big)).unwrap();
    assert_eq!(all(store, &space).len(), 3, "three chunks");
    assert_eq!(get(), Some(big));
    store
        .transact(|tx| blob::put(tx, &space, b"small"))
        .unwrap();
    assert_eq!(get().as_deref(), Some(&b"small"[..]));
    let medium = vec![3u8; MAX_VALUE_BYTES + 10];
    store.transact(|tx| blob::put(tx, &space, &medium)).unwrap();
    assert_eq!(
        get(),
        Some(medium),
        "chunks left by a longer value are ignored"
    );
    store.transact(|tx| blob::put(tx, &space, b"")).unwrap();
    assert_eq!(get(), Some(Vec::new()));
    store.transact(|tx| blob::delete(tx, &space)).unwrap();
    assert_eq!(get(), None);
    assert!(all(store, &space).is_empty(), "delete removes every chunk");
}

/// Twins are saved and loaded whole.
pub fn twins_round_trip<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    let thing = ThingName::new("pump-7").unwrap();
    let mut twin = Twin::new(thing.clone());
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: false,
    };
    let payload = json!({"state": {"desired": {"speed": 3}, "reported": {"speed": 1, "big": "x".repeat(5000)}}, "clientToken": "c"});
    let update =
        request::parse_update(ShadowName::CLASSIC, payload.to_string().as_bytes(), &limits)
            .unwrap();
    twin.handle(
        Command::Update(update),
        &ctx,
        1_700_000_000_000,
        &mut Vec::new(),
    );
    twin.take_dirty();
    store.transact(|tx| repos.twins.save(tx, &twin)).unwrap();
    let loaded = store.transact(|tx| repos.twins.load(tx, &thing)).unwrap();
    assert_eq!(loaded.as_ref(), Some(&twin));
    let other = ThingName::new("pump-8").unwrap();
    assert_eq!(
        store.transact(|tx| repos.twins.load(tx, &other)).unwrap(),
        None
    );
    store.transact(|tx| repos.twins.remove(tx, &thing)).unwrap();
    assert_eq!(
        store.transact(|tx| repos.twins.load(tx, &thing)).unwrap(),
        None
    );
}

/// Things and types are stored by name and listed in pages.
pub fn records_are_listed_in_name_order_with_a_cursor<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    let names = ["d-4", "a-1", "c-3", "b-2", "e-5"];
    store
        .transact(|tx| {
            for n in names {
                let record = ThingRecord {
                    name: ThingName::new(n).unwrap(),
                    device_type: Some(TypeName::new("Pump").unwrap()),
                    attributes: [("site".to_owned(), "north".to_owned())].into(),
                    token_hash: format!("hash-{n}"),
                    created_at: 1,
                };
                repos.things.put(tx, &record)?;
            }
            Ok(())
        })
        .unwrap();
    let page = |after: Option<&str>| -> Vec<String> {
        store
            .transact(|tx| repos.things.list(tx, after, 2))
            .unwrap()
            .into_iter()
            .map(|r| r.name.to_string())
            .collect()
    };
    assert_eq!(page(None), ["a-1", "b-2"]);
    assert_eq!(page(Some("b-2")), ["c-3", "d-4"]);
    assert_eq!(page(Some("d-4")), ["e-5"]);
    assert!(page(Some("e-5")).is_empty());
    let got = store
        .transact(|tx| repos.things.get(tx, "c-3"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.token_hash.as_str(), got.attributes["site"].as_str()),
        ("hash-c-3", "north")
    );
    assert!(store.transact(|tx| repos.things.delete(tx, "c-3")).unwrap());
    assert!(!store.transact(|tx| repos.things.delete(tx, "c-3")).unwrap());
    assert_eq!(page(Some("b-2")), ["d-4", "e-5"]);

    let pump: DeviceType = serde_json::from_value(json!({
        "name": "Pump", "schemas": {"reported": {"type": "object"}}, "telemetry_to_reported": {"fields": ["rpm"]}
    }))
    .unwrap();
    store.transact(|tx| repos.types.put(tx, &pump)).unwrap();
    assert_eq!(
        store.transact(|tx| repos.types.get(tx, "Pump")).unwrap(),
        Some(pump)
    );
    assert_eq!(
        store
            .transact(|tx| repos.types.list(tx, None, 10))
            .unwrap()
            .len(),
        1
    );
}

/// Audit entries list in time order, page by page, between two times.
pub fn audit_entries_list_in_time_order<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    let entry = |at: u64, target: &str| AuditEntry {
        at,
        actor: "k1".into(),
        action: "thing.register".into(),
        target: target.into(),
        before: None,
        after: Some(1),
        details: None,
    };
    store
        .transact(|tx| {
            for (at, target) in [(30, "c"), (10, "a"), (20, "b"), (20, "b2"), (40, "d")] {
                repos.audit.append(tx, &entry(at, target))?;
            }
            Ok(())
        })
        .unwrap();
    let page = |after, limit| {
        store
            .transact(|tx| repos.audit.list(tx, 10, 40, after, limit))
            .unwrap()
    };
    let first = page(None, 2);
    assert_eq!(
        first.iter().map(|(_, e)| e.at).collect::<Vec<_>>(),
        [10, 20]
    );
    let rest = page(Some(first[1].0), 10);
    let targets: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|(_, e)| e.target.as_str())
        .collect();
    assert_eq!(targets.len(), 4, "40 is outside [10, 40)");
    assert_eq!(targets[0], "a");
    assert_eq!(targets[3], "c");
    assert_eq!(rest.last().unwrap().1, entry(30, "c"));
}

/// Telemetry history: samples by thing and time across days, hourly aggregates, the rollup
/// mark, and retention by day.
pub fn telemetry_history_is_kept_by_day<S: Store>(store: &S, root: &Subspace) {
    use crate::repo::{DAY_MS, FieldAgg, HOUR_MS};
    let repos = Repos::new(root);
    let (a, b) = (ThingName::new("a").unwrap(), ThingName::new("b").unwrap());
    let day0 = 20_000 * DAY_MS;
    store
        .transact(|tx| {
            for (seq, (thing, ts)) in [
                (&a, day0 + 5),
                (&b, day0 + 6),
                (&a, day0 + DAY_MS + 1),
                (&a, day0 + 2 * DAY_MS + 7),
            ]
            .into_iter()
            .enumerate()
            {
                repos.history.append(
                    tx,
                    thing,
                    ts,
                    seq as u64,
                    format!("{{\"ts\":{ts}}}").as_bytes(),
                )?;
            }
            // Another sample at the same time is another sample; the same sequence overwrites.
            repos
                .history
                .append(tx, &a, day0 + 5, 10, b"{\"again\":true}")?;
            repos.history.append(tx, &a, day0 + 5, 10, b"{\"again\":2}")
        })
        .unwrap();
    let raw = store
        .transact(|tx| repos.history.raw(tx, &a, day0, day0 + 3 * DAY_MS, 100))
        .unwrap();
    assert_eq!(
        raw.iter()
            .map(|(ts, seq, _)| (*ts, *seq))
            .collect::<Vec<_>>(),
        [
            (day0 + 5, 0),
            (day0 + 5, 10),
            (day0 + DAY_MS + 1, 2),
            (day0 + 2 * DAY_MS + 7, 3)
        ]
    );
    assert_eq!(raw[1].2, b"{\"again\":2}");
    let page = store
        .transact(|tx| repos.history.raw(tx, &a, day0, day0 + 3 * DAY_MS, 1))
        .unwrap();
    assert_eq!(page.len(), 1, "limit");
    // Paging after a sample does not skip another sample of the same time.
    let next = store
        .transact(|tx| {
            repos
                .history
                .raw_after(tx, &a, (day0 + 5, 0), day0 + 3 * DAY_MS, 2)
        })
        .unwrap();
    assert_eq!(
        next.iter()
            .map(|(ts, seq, _)| (*ts, *seq))
            .collect::<Vec<_>>(),
        [(day0 + 5, 10), (day0 + DAY_MS + 1, 2)]
    );
    let day = store
        .transact(|tx| repos.history.raw_day(tx, 20_000, None, 10))
        .unwrap();
    assert_eq!(
        day.iter().map(|(t, ..)| t.as_str()).collect::<Vec<_>>(),
        ["a", "a", "b"],
        "thing by thing"
    );
    let after = store
        .transact(|tx| {
            repos
                .history
                .raw_day(tx, 20_000, Some(("a", day0 + 5, 0)), 10)
        })
        .unwrap();
    assert_eq!(after.len(), 2);

    let mut agg = crate::repo::HourAgg::new();
    agg.insert("temp".into(), FieldAgg::of(21.5));
    store
        .transact(|tx| repos.history.put_hourly(tx, "a", day0 + HOUR_MS, &agg))
        .unwrap();
    let hourly = store
        .transact(|tx| repos.history.hourly(tx, &a, day0, day0 + DAY_MS))
        .unwrap();
    assert_eq!(hourly, vec![(day0 + HOUR_MS, agg)]);

    assert_eq!(
        store.transact(|tx| repos.history.rolled_up_to(tx)).unwrap(),
        None
    );
    store
        .transact(|tx| repos.history.set_rolled_up_to(tx, 20_000))
        .unwrap();
    assert_eq!(
        store.transact(|tx| repos.history.rolled_up_to(tx)).unwrap(),
        Some(20_000)
    );

    assert_eq!(
        store
            .transact(|tx| repos.history.oldest_raw_day(tx))
            .unwrap(),
        Some(20_000)
    );
    store
        .transact(|tx| repos.history.drop_raw_before(tx, 20_001))
        .unwrap();
    assert_eq!(
        store
            .transact(|tx| repos.history.oldest_raw_day(tx))
            .unwrap(),
        Some(20_001)
    );
    store
        .transact(|tx| repos.history.drop_hourly_before(tx, 20_001))
        .unwrap();
    assert!(
        store
            .transact(|tx| repos.history.hourly(tx, &a, day0, day0 + DAY_MS))
            .unwrap()
            .is_empty()
    );

    // A removed thing's samples and aggregates go, on every day; another thing's stay.
    store
        .transact(|tx| {
            repos.history.append(tx, &b, day0 + DAY_MS + 9, 20, b"{}")?;
            repos
                .history
                .put_hourly(tx, "a", day0 + 2 * DAY_MS, &crate::repo::HourAgg::new())
        })
        .unwrap();
    store
        .transact(|tx| repos.history.remove_thing(tx, &a, 20_003))
        .unwrap();
    let everything = |thing: &ThingName| {
        store
            .transact(|tx| {
                Ok((
                    repos
                        .history
                        .raw(tx, thing, 0, day0 + 4 * DAY_MS, 100)?
                        .len(),
                    repos.history.hourly(tx, thing, 0, day0 + 4 * DAY_MS)?.len(),
                ))
            })
            .unwrap()
    };
    assert_eq!(everything(&a), (0, 0));
    assert_eq!(everything(&b).0, 1);
}

/// API keys are stored with their secret hashed.
pub fn api_keys_are_stored_by_id<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    let key = KeyRecord {
        id: "k1".into(),
        role: Role::Operator,
        types: Some(vec![TypeName::new("Pump").unwrap()]),
        secret_hash: "ab".repeat(32),
        created_by: "bootstrap".into(),
        created_at: 5,
    };
    store.transact(|tx| repos.keys.put(tx, &key)).unwrap();
    assert_eq!(
        store.transact(|tx| repos.keys.get(tx, "k1")).unwrap(),
        Some(key)
    );
    assert!(store.transact(|tx| repos.keys.delete(tx, "k1")).unwrap());
    assert!(
        store
            .transact(|tx| repos.keys.list(tx, None, 10))
            .unwrap()
            .is_empty()
    );
}

/// Rules: sources by name, rule state and deadlines per twin, the rule log by kind and time.
pub fn rules_state_deadlines_and_log<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    let rule = RuleRecord {
        name: "hot".into(),
        source: "rule hot for type T { when true then { emit event \"x\" } }".into(),
        device_type: Some("T".into()),
        thing: None,
        updated_by: "k1".into(),
        updated_at: 9,
    };
    store.transact(|tx| repos.rules.put(tx, &rule)).unwrap();
    assert_eq!(
        store.transact(|tx| repos.rules.get(tx, "hot")).unwrap(),
        Some(rule)
    );

    let (a, b) = (ThingName::new("a").unwrap(), ThingName::new("b").unwrap());
    let big = vec![7u8; 250_000];
    store
        .transact(|tx| {
            repos.rule_states.save(tx, &a, &big)?;
            repos.rule_states.set_deadline(tx, &a, Some(1_000))?;
            repos.rule_states.set_deadline(tx, &b, Some(500))?;
            repos.rule_states.set_deadline(tx, &b, None)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.transact(|tx| repos.rule_states.load(tx, &a)).unwrap(),
        Some(big)
    );
    assert_eq!(
        store
            .transact(|tx| repos.rule_states.deadlines(tx, None, 10))
            .unwrap(),
        vec![(a.clone(), 1_000)]
    );
    store
        .transact(|tx| repos.rule_states.remove(tx, &a))
        .unwrap();
    assert_eq!(
        store.transact(|tx| repos.rule_states.load(tx, &a)).unwrap(),
        None
    );
    assert!(
        store
            .transact(|tx| repos.rule_states.deadlines(tx, None, 10))
            .unwrap()
            .is_empty()
    );

    let entry = |at: u64, name: &str| RuleLogEntry {
        at,
        thing: "a".into(),
        rule: "hot".into(),
        details: json!({"name": name})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    store
        .transact(|tx| {
            for (kind, at, name) in [
                (LogKind::Alert, 30, "c"),
                (LogKind::Alert, 10, "a"),
                (LogKind::Command, 20, "x"),
                (LogKind::Alert, 20, "b"),
            ] {
                repos.rule_log.append(tx, kind, &entry(at, name))?;
            }
            Ok(())
        })
        .unwrap();
    let alerts = store
        .transact(|tx| repos.rule_log.list(tx, LogKind::Alert, (0, 100), None, 2))
        .unwrap();
    assert_eq!(
        alerts.iter().map(|(_, e)| e.at).collect::<Vec<_>>(),
        [10, 20]
    );
    let rest = store
        .transact(|tx| {
            repos
                .rule_log
                .list(tx, LogKind::Alert, (0, 100), Some(alerts[1].0), 10)
        })
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, entry(30, "c"));
    store
        .transact(|tx| repos.rule_log.expire(tx, LogKind::Alert, 25))
        .unwrap();
    assert_eq!(
        store
            .transact(|tx| repos.rule_log.list(tx, LogKind::Alert, (0, 100), None, 10))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .transact(|tx| repos
                .rule_log
                .list(tx, LogKind::Command, (0, 100), None, 10))
            .unwrap()
            .len(),
        1
    );
}

/// Single named records: absent until set, replaced by a later set.
pub fn meta_records_round_trip<S: Store>(store: &S, root: &Subspace) {
    let repos = Repos::new(root);
    assert_eq!(
        store.transact(|tx| repos.meta.get(tx, "admin")).unwrap(),
        None
    );
    store
        .transact(|tx| repos.meta.set(tx, "admin", b"one"))
        .unwrap();
    store
        .transact(|tx| repos.meta.set(tx, "admin", b"two"))
        .unwrap();
    assert_eq!(
        store.transact(|tx| repos.meta.get(tx, "admin")).unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(
        store.transact(|tx| repos.meta.get(tx, "other")).unwrap(),
        None
    );
}

/// `get_many` answers in the order asked, missing keys as `None`, the transaction's own
/// writes and clears included.
pub fn get_many_reads_in_order_with_own_writes<S: Store>(store: &S, root: &Subspace) {
    let (a, b, c, d) = (
        key(root, "a"),
        key(root, "b"),
        key(root, "c"),
        key(root, "d"),
    );
    write(store, &a, b"1");
    write(store, &b, b"2");
    let got = store
        .transact(|tx| {
            tx.set(&c, b"3")?;
            tx.clear(&b)?;
            tx.get_many(&[d.clone(), c.clone(), b.clone(), a.clone(), a.clone()])
        })
        .unwrap();
    assert_eq!(
        got,
        vec![
            None,
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"1".to_vec())
        ]
    );
    assert!(store.transact(|tx| tx.get_many(&[])).unwrap().is_empty());
}

/// Cluster records: nodes listed by name; shards absent until taken; two nodes taking the
/// same shard at once are serialized, so the epoch counts both changes of owner and the last
/// taker owns it.
pub fn cluster_takeovers_are_serialized<S: Store>(store: &S, root: &Subspace) {
    use crate::{NodeRecord, ShardRecord};
    let repos = Repos::new(root);
    for name in ["b", "a"] {
        let node = NodeRecord {
            name: name.into(),
            addr: format!("{name}:1"),
            expires: 10,
            started: 1,
        };
        store
            .transact(|tx| repos.cluster.put_node(tx, &node))
            .unwrap();
    }
    let nodes = store.transact(|tx| repos.cluster.nodes(tx)).unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let shards = store.transact(|tx| repos.cluster.shards(tx, 4)).unwrap();
    assert_eq!(shards, vec![ShardRecord::default(); 4]);
    let cluster = &repos.cluster;
    let take = |me: &str| {
        let me = me.to_string();
        move || {
            store.transact(|tx| {
                let mut shard = cluster.shards_of(tx, &[2])?.remove(0);
                std::thread::sleep(std::time::Duration::from_millis(20));
                shard.owner = Some(me.clone());
                shard.epoch += 1;
                cluster.put_shard(tx, 2, &shard)
            })
        }
    };
    std::thread::scope(|scope| {
        let one = scope.spawn(take("a"));
        let two = scope.spawn(take("b"));
        one.join().unwrap().unwrap();
        two.join().unwrap().unwrap();
    });
    let shards = store.transact(|tx| repos.cluster.shards(tx, 4)).unwrap();
    assert_eq!(shards[2].epoch, 2, "both takeovers counted: {shards:?}");
    assert!(shards[2].owner.is_some());
    assert_eq!(shards[3], ShardRecord::default());
    store
        .transact(|tx| repos.cluster.remove_node(tx, "a"))
        .unwrap();
    let nodes = store.transact(|tx| repos.cluster.nodes(tx)).unwrap();
    assert_eq!(nodes.len(), 1);
}

/// Certificates: listed per thing, found by id; the deny list holds exactly those not active.
pub fn certificates_are_indexed_by_thing_and_denied_when_not_active<S: Store>(
    store: &S,
    root: &Subspace,
) {
    use crate::{CertRecord, CertStatus};
    let repos = Repos::new(root);
    let cert = |id: &str, thing: &str, status| CertRecord {
        id: id.into(),
        thing: thing.into(),
        serial: "01".into(),
        pem: "-----".into(),
        not_before: 1,
        not_after: 2,
        status,
        revoked_at: None,
        created_at: 1,
        created_by: "admin".into(),
        template: None,
    };
    for c in [
        cert("bb", "pump-1", CertStatus::Active),
        cert("aa", "pump-1", CertStatus::Inactive),
        cert("cc", "pump-2", CertStatus::Revoked),
    ] {
        store.transact(|tx| repos.certs.put(tx, &c)).unwrap();
    }
    let mine = store
        .transact(|tx| repos.certs.of_thing(tx, "pump-1"))
        .unwrap();
    assert_eq!(
        mine.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["aa", "bb"]
    );
    assert_eq!(
        store.transact(|tx| repos.certs.denied(tx)).unwrap(),
        ["aa", "cc"]
    );
    store
        .transact(|tx| {
            repos
                .certs
                .put(tx, &cert("aa", "pump-1", CertStatus::Active))
        })
        .unwrap();
    assert_eq!(store.transact(|tx| repos.certs.denied(tx)).unwrap(), ["cc"]);
    let got = store.transact(|tx| repos.certs.get(tx, "aa")).unwrap();
    assert_eq!(got.map(|c| c.status), Some(CertStatus::Active));
    assert_eq!(
        store.transact(|tx| repos.certs.get(tx, "zz")).unwrap(),
        None
    );
}

fn run_case<S: Store>(store: &S, root: &Subspace, name: &str, case: fn(&S, &Subspace)) {
    let space = root.subspace(&name);
    let clear = || {
        store
            .transact(|tx| tx.clear_range(&space.range().into()))
            .expect("clear")
    };
    clear();
    case(store, &space);
    clear();
}

macro_rules! suite {
    ($d:tt $($case:ident),* $(,)?) => {
        /// The names of the cases.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs every case in turn, each in its own subspace of `root`, cleared before and
        /// after (for stores that are not empty, such as a shared FoundationDB cluster).
        pub fn run_all<S: Store>(store: &S, root: &Subspace) {
            $( run_case(store, root, stringify!($case), $case::<S>); )*
        }

        /// Defines one `#[test]` per conformance case. `$make` is evaluated per test and must
        /// give `(guard, store, root)`: something to keep alive for the test (a temporary
        /// directory), an empty store and the subspace to work in.
        #[macro_export]
        macro_rules! conformance_tests {
            ($d make:expr) => {
                $(
                    #[test]
                    fn $case() {
                        let (_guard, store, root) = $d make;
                        $d crate::conformance::$case(&store, &root);
                    }
                )*
            };
        }
    };
}

suite!($
    missing_keys_read_as_none,
    writes_are_visible_to_their_transaction_and_after_commit,
    overwrite_and_clear,
    keys_sort_in_tuple_order,
    range_reads_are_half_open_limited_and_reversible,
    range_reads_see_their_own_writes,
    clear_range_removes_exactly_the_range,
    failed_bodies_write_nothing,
    uncommitted_writes_are_invisible,
    conflicting_commits_fail_and_retry,
    blind_writes_do_not_conflict,
    concurrent_increments_are_serializable,
    limits_match_foundationdb,
    large_blobs_are_split_and_reassembled,
    twins_round_trip,
    records_are_listed_in_name_order_with_a_cursor,
    audit_entries_list_in_time_order,
    telemetry_history_is_kept_by_day,
    api_keys_are_stored_by_id,
    rules_state_deadlines_and_log,
    meta_records_round_trip,
    get_many_reads_in_order_with_own_writes,
    cluster_takeovers_are_serialized,
    certificates_are_indexed_by_thing_and_denied_when_not_active,
);
