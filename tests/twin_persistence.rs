//! A twin written to the embedded store and read back after the store is closed and reopened
//! behaves as if it had never left memory: versions continue, retried client tokens get the
//! original reply, and telemetry ordering by device time survives.

use doppel_tests::twins::{telemetry, update};
use serde_json::json;
use storage::{FjallStore, Repos, Store};
use twin_core::{Effect, ShadowName, ThingName, Twin};

const T0: u64 = 1_700_000_000_000;

fn reply_payload(effects: &[Effect]) -> (bool, Vec<u8>) {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Reply(r) => Some((r.duplicate, r.payload.to_vec())),
            _ => None,
        })
        .expect("a reply")
}

#[test]
fn a_reloaded_twin_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let thing = ThingName::new("boiler-1").unwrap();
    let classic = ShadowName::CLASSIC;
    let named = ShadowName::named("config").unwrap();
    let repos = Repos::default();

    let first_reply = {
        let store = FjallStore::open(dir.path()).unwrap();
        let mut twin = Twin::new(thing.clone());
        let effects = update(
            &mut twin,
            &classic,
            &json!({"state": {"desired": {"temp": 60}}, "clientToken": "app-1"}),
            T0,
        );
        update(
            &mut twin,
            &named,
            &json!({"state": {"reported": {"interval": 30}}}),
            T0,
        );
        telemetry(&mut twin, &json!({"ts": T0 + 500, "temp": 55}), T0 + 1);
        assert!(twin.take_dirty());
        store.transact(|tx| repos.twins.save(tx, &twin)).unwrap();
        reply_payload(&effects).1
    };

    let store = FjallStore::open(dir.path()).unwrap();
    let mut twin = store
        .transact(|tx| repos.twins.load(tx, &thing))
        .unwrap()
        .expect("saved twin");
    let classic_doc = twin.shadow(&classic).unwrap();
    assert_eq!(
        classic_doc.version(),
        2,
        "one update and one telemetry merge"
    );
    assert_eq!(twin.shadow(&named).unwrap().version(), 1);

    let retry = update(
        &mut twin,
        &classic,
        &json!({"state": {"desired": {"temp": 60}}, "clientToken": "app-1"}),
        T0 + 2,
    );
    assert_eq!(
        reply_payload(&retry),
        (true, first_reply),
        "the retry gets the original reply"
    );

    telemetry(&mut twin, &json!({"ts": T0 + 100, "temp": 40}), T0 + 3);
    let state = twin.shadow(&classic).unwrap().reported().to_json();
    assert_eq!(
        state,
        json!({"temp": 55}),
        "an older sample does not roll back a reloaded twin"
    );

    let effects = update(
        &mut twin,
        &classic,
        &json!({"state": {"reported": {"temp": 60}}}),
        T0 + 4,
    );
    let version = effects.iter().find_map(|e| match e {
        Effect::Reply(r) => r.outcome.clone().ok(),
        _ => None,
    });
    assert_eq!(version, Some(3));
    assert!(twin.shadow(&classic).unwrap().delta().is_empty());
}
