//! Counted places per key (connections per source address, WebSocket connections per API
//! key): a place is taken up to a maximum and given back when its [`Slot`] is dropped.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

/// Places taken per key.
#[derive(Debug)]
pub(crate) struct Slots<K>(Arc<Mutex<HashMap<K, usize>>>);

impl<K> Clone for Slots<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

/// One place, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<K: Hash + Eq>(Slots<K>, K);

impl<K: Hash + Eq + Clone> Slots<K> {
    /// A place for `key`, unless it holds `max` already.
    pub(crate) fn take(&self, key: &K, max: usize) -> Option<Slot<K>> {
        let mut taken = self.0.lock().ok()?;
        let count = taken.entry(key.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(self.clone(), key.clone()))
    }
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Ok(mut taken) = self.0.0.lock()
            && let Some(count) = taken.get_mut(&self.1)
        {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back() {
        let slots = Slots::<&str>::default();
        let a = (slots.take(&"a", 2), slots.take(&"a", 2));
        assert!(a.0.is_some() && a.1.is_some());
        assert!(slots.take(&"a", 2).is_none());
        assert!(slots.take(&"b", 2).is_some(), "keys are counted apart");
        drop(a);
        assert!(slots.take(&"a", 2).is_some());
    }
}
