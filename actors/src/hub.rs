//! The change hub: every committed shadow change goes to the watchers whose subscriptions match
//! it. A change is shared (one allocation, and one serialized frame built on first use) among
//! all its watchers. Each watcher has a bounded queue; when a watcher falls behind, its queued
//! changes collapse into the set of shadows it must resync, and further changes only mark
//! shadows in that set — so memory stays bounded and no change is dropped without notice.

use crate::work::ThingMeta;
use bytes::Bytes;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::Notify;
use twin_core::{Change, ShadowName, ThingName, TypeName};

/// A committed change and what watchers filter on.
#[derive(Debug)]
pub struct ChangeEvent {
    /// The change.
    pub change: Change,
    /// The thing's type and attributes.
    pub meta: Arc<ThingMeta>,
    frame: OnceLock<Bytes>,
}

impl ChangeEvent {
    /// A change of a thing described by `meta`.
    pub fn new(change: Change, meta: Arc<ThingMeta>) -> Self {
        Self {
            change,
            meta,
            frame: OnceLock::new(),
        }
    }

    /// The change serialized by `build`, which runs once per change however many watchers
    /// need it.
    pub fn frame(&self, build: impl FnOnce(&ChangeEvent) -> Bytes) -> &Bytes {
        self.frame.get_or_init(|| build(self))
    }
}

/// Something a rule did (an alert, an event, a command's outcome) and what watchers filter on.
#[derive(Debug)]
pub struct RuleEvent {
    /// The twin.
    pub thing: ThingName,
    /// The thing's type and attributes.
    pub meta: Arc<ThingMeta>,
    /// What the rule did.
    pub output: rules_dsl::Output,
    frame: OnceLock<Bytes>,
}

impl RuleEvent {
    /// An output of `thing`'s rules.
    pub fn new(thing: ThingName, meta: Arc<ThingMeta>, output: rules_dsl::Output) -> Self {
        Self {
            thing,
            meta,
            output,
            frame: OnceLock::new(),
        }
    }

    /// A job execution's change, as an event of the `jobs` rule (`kind: "job_execution"`).
    pub fn execution(
        thing: ThingName,
        meta: Arc<ThingMeta>,
        change: &twin_core::ExecutionChange,
    ) -> Self {
        let output = rules_dsl::Output {
            rule: Arc::from("jobs"),
            at: change.updated_at,
            kind: rules_dsl::OutputKind::Event {
                event: Arc::from("job_execution"),
                payload: serde_json::json!({
                    "jobId": change.job_id,
                    "status": change.status.as_str(),
                    "versionNumber": change.version,
                    "statusDetails": change.status_details,
                }),
            },
        };
        Self::new(thing, meta, output)
    }

    /// The event serialized by `build`, once however many watchers need it.
    pub fn frame(&self, build: impl FnOnce(&RuleEvent) -> Bytes) -> &Bytes {
        self.frame.get_or_init(|| build(self))
    }
}

/// What a subscription selects: things by name, by type, by attributes (all that are given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only these things.
    pub things: Option<Vec<ThingName>>,
    /// Only things of this type.
    pub device_type: Option<TypeName>,
    /// Only things with all these attributes.
    pub attributes: BTreeMap<String, String>,
}

impl Selector {
    fn matches(&self, thing: &ThingName, meta: &ThingMeta) -> bool {
        self.things.as_ref().is_none_or(|t| t.contains(thing))
            && self
                .device_type
                .as_ref()
                .is_none_or(|t| meta.device_type.as_ref() == Some(t))
            && self
                .attributes
                .iter()
                .all(|(k, v)| meta.attributes.get(k) == Some(v))
    }
}

/// One subscription of a watcher.
#[derive(Debug, Clone)]
struct Sub {
    watcher: u64,
    id: Arc<str>,
    /// Shared by the index entries of every thing it names (a copy per thing made a
    /// subscription's memory grow with the square of its things).
    selector: Arc<Selector>,
}

/// A shadow a watcher must be resent in full: `(subscription, thing, shadow)`.
pub type Resync = (Arc<str>, ThingName, ShadowName);

/// What a watcher receives next.
#[derive(Debug)]
pub enum Delivery {
    /// A change for one of its subscriptions.
    Change(Arc<str>, Arc<ChangeEvent>),
    /// A rule's event for one of its subscriptions.
    Event(Arc<str>, Arc<RuleEvent>),
    /// It fell behind: these shadows must be sent in their current state, and this many rule
    /// events were dropped.
    Resync(Vec<Resync>, u64),
}

/// A queued item.
#[derive(Debug, Clone)]
enum Item {
    Change(Arc<ChangeEvent>),
    Event(Arc<RuleEvent>),
}

#[derive(Debug, Default)]
struct WatchState {
    queue: VecDeque<(Arc<str>, Item)>,
    behind: BTreeSet<Resync>,
    /// Rule events dropped while behind.
    dropped: u64,
    overflowed: bool,
}

/// One consumer of changes (a WebSocket connection).
#[derive(Debug)]
pub struct Watcher {
    id: u64,
    /// Types the consumer may see (`None`: all).
    scope: Option<Vec<TypeName>>,
    max_queue: usize,
    state: Mutex<WatchState>,
    notify: Notify,
    hub: Arc<HubInner>,
}

impl Watcher {
    fn offer(&self, sub: &Arc<str>, item: Item) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mark = |state: &mut WatchState, sub: &Arc<str>, item: &Item| match item {
            Item::Change(event) => {
                state.behind.insert((
                    sub.clone(),
                    event.change.thing.clone(),
                    event.change.shadow.clone(),
                ));
            }
            Item::Event(_) => state.dropped += 1,
        };
        if state.overflowed {
            mark(&mut state, sub, &item);
        } else if state.queue.len() >= self.max_queue {
            // Behind: keep only which shadows changed; their latest state is sent when the
            // consumer reads again. Rule events are counted, and the count is reported.
            state.overflowed = true;
            let queued: Vec<_> = state.queue.drain(..).collect();
            for (s, queued_item) in &queued {
                mark(&mut state, s, queued_item);
            }
            mark(&mut state, sub, &item);
            self.hub.resyncs.fetch_add(1, Ordering::Relaxed);
        } else {
            state.queue.push_back((sub.clone(), item));
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Waits for the next delivery.
    pub async fn next(&self) -> Delivery {
        loop {
            if let Some(delivery) = self.try_next() {
                return delivery;
            }
            self.notify.notified().await;
        }
    }

    /// The next delivery if one is ready, without waiting.
    pub fn try_next(&self) -> Option<Delivery> {
        let mut state = self.state.lock().ok()?;
        if let Some((sub, item)) = state.queue.pop_front() {
            return Some(match item {
                Item::Change(event) => Delivery::Change(sub, event),
                Item::Event(event) => Delivery::Event(sub, event),
            });
        }
        if state.overflowed {
            state.overflowed = false;
            let behind = std::mem::take(&mut state.behind);
            let dropped = std::mem::take(&mut state.dropped);
            return Some(Delivery::Resync(behind.into_iter().collect(), dropped));
        }
        None
    }

    /// Changes queued and shadows marked for resync (for tests and metrics).
    pub fn backlog(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.queue.len(), s.behind.len()))
            .unwrap_or_default()
    }

    /// Adds a subscription.
    pub fn subscribe(&self, id: &str, selector: Selector) {
        self.hub.add(Sub {
            watcher: self.id,
            id: Arc::from(id),
            selector: Arc::new(selector),
        });
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, id: &str) -> bool {
        self.hub.remove(self.id, Some(id)) > 0
    }

    /// Whether this watcher may see things of `device_type`.
    pub fn may_see(&self, device_type: Option<&TypeName>) -> bool {
        match (&self.scope, device_type) {
            (None, _) => true,
            (Some(scope), Some(t)) => scope.contains(t),
            (Some(_), None) => false,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.remove(self.id, None);
        if let Ok(mut watchers) = self.hub.watchers.write() {
            watchers.remove(&self.id);
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    by_thing: HashMap<ThingName, Vec<Sub>>,
    by_type: HashMap<TypeName, Vec<Sub>>,
    rest: Vec<Sub>,
    count: usize,
}

#[derive(Debug, Default)]
struct HubInner {
    index: RwLock<Index>,
    watchers: RwLock<HashMap<u64, std::sync::Weak<Watcher>>>,
    next_id: AtomicU64,
    resyncs: AtomicU64,
}

impl HubInner {
    fn add(&self, sub: Sub) {
        let Ok(mut index) = self.index.write() else {
            return;
        };
        index.count += 1;
        match (&sub.selector.things, &sub.selector.device_type) {
            (Some(things), _) => {
                for thing in things {
                    index
                        .by_thing
                        .entry(thing.clone())
                        .or_default()
                        .push(sub.clone());
                }
            }
            (None, Some(t)) => index.by_type.entry(t.clone()).or_default().push(sub),
            (None, None) => index.rest.push(sub),
        }
    }

    /// Removes the watcher's subscription `id`, or all of them; returns how many.
    fn remove(&self, watcher: u64, id: Option<&str>) -> usize {
        let Ok(mut index) = self.index.write() else {
            return 0;
        };
        let gone = |s: &Sub| s.watcher == watcher && id.is_none_or(|id| &*s.id == id);
        let mut removed = BTreeSet::new();
        let mut prune = |subs: &mut Vec<Sub>| {
            subs.retain(|s| {
                let g = gone(s);
                if g {
                    removed.insert(s.id.clone());
                }
                !g
            })
        };
        index.by_thing.values_mut().for_each(&mut prune);
        index.by_thing.retain(|_, subs| !subs.is_empty());
        index.by_type.values_mut().for_each(&mut prune);
        index.by_type.retain(|_, subs| !subs.is_empty());
        prune(&mut index.rest);
        index.count -= removed.len();
        removed.len()
    }
}

/// Committed changes, fanned out to watchers.
#[derive(Clone, Debug, Default)]
pub struct ChangeHub {
    inner: Arc<HubInner>,
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Watchers connected.
    pub watchers: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Times a watcher fell behind and was switched to resync.
    pub resyncs: u64,
    /// Changes queued across watchers (each watcher holds at most its `max_queue`).
    pub queued: usize,
    /// Shadows marked for resync across watchers (at most one per subscribed shadow).
    pub behind: usize,
}

impl ChangeHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new watcher that may see things of `scope` (all if `None`), queueing at most
    /// `max_queue` changes before it falls back to resyncs.
    pub fn watch(&self, scope: Option<Vec<TypeName>>, max_queue: usize) -> Arc<Watcher> {
        let watcher = Arc::new(Watcher {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            scope,
            max_queue: max_queue.max(1),
            state: Mutex::new(WatchState::default()),
            notify: Notify::new(),
            hub: self.inner.clone(),
        });
        if let Ok(mut watchers) = self.inner.watchers.write() {
            watchers.insert(watcher.id, Arc::downgrade(&watcher));
        }
        watcher
    }

    /// Hands a committed change to every watcher whose subscriptions match it.
    pub fn publish(&self, event: Arc<ChangeEvent>) {
        for (watcher, sub) in self.targets(&event.change.thing, &event.meta) {
            watcher.offer(&sub, Item::Change(event.clone()));
        }
    }

    /// Hands a rule's event to every watcher whose subscriptions match its thing.
    pub fn publish_event(&self, event: Arc<RuleEvent>) {
        for (watcher, sub) in self.targets(&event.thing, &event.meta) {
            watcher.offer(&sub, Item::Event(event.clone()));
        }
    }

    /// The watchers and subscriptions that select `thing`.
    fn targets(&self, thing: &ThingName, meta: &Arc<ThingMeta>) -> Vec<(Arc<Watcher>, Arc<str>)> {
        // Collected under the locks, offered after: a watcher upgraded here may be the last
        // reference to it, and its drop takes the index lock.
        let mut targets: Vec<(Arc<Watcher>, Arc<str>)> = Vec::new();
        {
            let Ok(index) = self.inner.index.read() else {
                return targets;
            };
            if index.count == 0 {
                return targets;
            }
            let Ok(watchers) = self.inner.watchers.read() else {
                return targets;
            };
            let by_type = meta.device_type.as_ref().and_then(|t| index.by_type.get(t));
            let candidates = index
                .by_thing
                .get(thing)
                .into_iter()
                .flatten()
                .chain(by_type.into_iter().flatten())
                .chain(index.rest.iter())
                .filter(|s| s.selector.matches(thing, meta));
            for sub in candidates {
                if let Some(watcher) = watchers
                    .get(&sub.watcher)
                    .and_then(std::sync::Weak::upgrade)
                    && watcher.may_see(meta.device_type.as_ref())
                {
                    targets.push((watcher, sub.id.clone()));
                }
            }
        }
        targets
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        let watchers: Vec<Arc<Watcher>> = self
            .inner
            .watchers
            .read()
            .map(|w| w.values().filter_map(std::sync::Weak::upgrade).collect())
            .unwrap_or_default();
        let (queued, behind) = watchers
            .iter()
            .map(|w| w.backlog())
            .fold((0, 0), |(q, b), (wq, wb)| (q + wq, b + wb));
        HubStats {
            watchers: watchers.len(),
            subscriptions: self.inner.index.read().map(|i| i.count).unwrap_or(0),
            resyncs: self.inner.resyncs.load(Ordering::Relaxed),
            queued,
            behind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(name: &str) -> ThingName {
        ThingName::new(name).unwrap()
    }

    fn event(name: &str, version: u64, device_type: Option<&str>) -> Arc<ChangeEvent> {
        let change = Change {
            thing: thing(name),
            shadow: ShadowName::CLASSIC,
            version,
            ts: version,
            desired: None,
            reported: None,
            delta: None,
            deleted: false,
        };
        let meta = ThingMeta {
            device_type: device_type.map(|t| TypeName::new(t).unwrap()),
            attributes: [("site".to_owned(), "north".to_owned())].into(),
        };
        Arc::new(ChangeEvent::new(change, Arc::new(meta)))
    }

    fn next_now(w: &Watcher) -> Option<Delivery> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(w.next());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(d) => Some(d),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn subscriptions_select_by_thing_type_and_attributes() {
        let hub = ChangeHub::new();
        let w = hub.watch(None, 100);
        w.subscribe(
            "by-thing",
            Selector {
                things: Some(vec![thing("a")]),
                ..Selector::default()
            },
        );
        w.subscribe(
            "by-type",
            Selector {
                device_type: Some(TypeName::new("Pump").unwrap()),
                ..Selector::default()
            },
        );
        w.subscribe(
            "by-attr",
            Selector {
                attributes: [("site".to_owned(), "south".to_owned())].into(),
                ..Selector::default()
            },
        );
        hub.publish(event("a", 1, None));
        hub.publish(event("b", 1, Some("Pump")));
        hub.publish(event("c", 1, Some("Valve")));
        let mut got = Vec::new();
        while let Some(Delivery::Change(sub, e)) = next_now(&w) {
            got.push((sub.to_string(), e.change.thing.to_string()));
        }
        assert_eq!(
            got,
            [
                ("by-thing".to_owned(), "a".to_owned()),
                ("by-type".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(hub.stats().subscriptions, 3);
        assert!(w.unsubscribe("by-type"));
        hub.publish(event("b", 2, Some("Pump")));
        assert!(next_now(&w).is_none());
        drop(w);
        assert_eq!(
            hub.stats(),
            HubStats {
                watchers: 0,
                subscriptions: 0,
                resyncs: 0,
                queued: 0,
                behind: 0,
            }
        );
    }

    #[test]
    fn scoped_watchers_see_only_their_types() {
        let hub = ChangeHub::new();
        let w = hub.watch(Some(vec![TypeName::new("Pump").unwrap()]), 100);
        w.subscribe("all", Selector::default());
        hub.publish(event("v", 1, Some("Valve")));
        hub.publish(event("u", 1, None));
        hub.publish(event("p", 1, Some("Pump")));
        match next_now(&w) {
            Some(Delivery::Change(_, e)) => assert_eq!(e.change.thing.as_str(), "p"),
            other => panic!("{other:?}"),
        }
        assert!(next_now(&w).is_none());
    }

    #[test]
    fn a_watcher_that_falls_behind_gets_a_bounded_resync() {
        let hub = ChangeHub::new();
        let w = hub.watch(None, 4);
        w.subscribe("s", Selector::default());
        for version in 1..=1000 {
            for name in ["a", "b", "c"] {
                hub.publish(event(name, version, None));
            }
        }
        assert_eq!(
            w.backlog(),
            (0, 3),
            "3000 changes of 3 shadows hold 3 marks, not a queue"
        );
        match next_now(&w) {
            Some(Delivery::Resync(marks, _)) => {
                let things: Vec<&str> = marks.iter().map(|(_, t, _)| t.as_str()).collect();
                assert_eq!(things, ["a", "b", "c"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(next_now(&w).is_none());
        assert_eq!(hub.stats().resyncs, 1);
        hub.publish(event("a", 1001, None));
        assert!(
            matches!(next_now(&w), Some(Delivery::Change(_, e)) if e.change.version == 1001),
            "back to changes"
        );
    }

    #[test]
    fn a_frame_is_built_once_for_all_watchers() {
        let e = event("a", 1, None);
        let builds = AtomicU64::new(0);
        for _ in 0..3 {
            e.frame(|_| {
                builds.fetch_add(1, Ordering::Relaxed);
                Bytes::from_static(b"frame")
            });
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);
    }
}
