//! Failed device logins, throttled with token buckets: one per source address and client id (a
//! burst of [`BURST`] failures, refilled at one per second), and one per source address alone
//! (a burst of [`ADDRESS_BURST`], refilled at [`ADDRESS_REFILL`] per second). A CONNECT whose
//! bucket is empty is refused without its credentials being checked, so guessing one device's
//! token costs one try per second, while devices behind the same NAT as a misconfigured one
//! keep connecting. The table holds at most [`MAX_KEYS`] buckets; full buckets go first when it
//! is full.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Instant};

/// Failures one client id from one address may have in a burst.
pub const BURST: f64 = 10.0;
/// Failures one address may have in a burst, whatever the client ids.
pub const ADDRESS_BURST: f64 = 200.0;
/// Address failures forgiven per second.
pub const ADDRESS_REFILL: f64 = 20.0;
/// Buckets remembered at most.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    /// The client id by its hash: a key stays small whatever id a client sends (up to a
    /// whole packet's worth), so the table's memory is bounded by [`MAX_KEYS`].
    Client(IpAddr, u64),
}

impl Key {
    fn limits(&self) -> (f64, f64) {
        match self {
            Key::Address(_) => (ADDRESS_BURST, ADDRESS_REFILL),
            Key::Client(..) => (BURST, 1.0),
        }
    }
}

/// Failed logins per source address and client id.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    buckets: Mutex<HashMap<Key, (f64, Instant)>>,
}

impl AuthThrottle {
    /// Whether `client_id` may try to log in from `ip` now.
    pub fn allows(&self, ip: IpAddr, client_id: &str) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let now = Instant::now();
        [Key::Address(ip), client(ip, client_id)]
            .into_iter()
            .all(|key| {
                let limits = key.limits();
                buckets
                    .get_mut(&key)
                    .is_none_or(|bucket| refill(bucket, limits, now) >= 1.0)
            })
    }

    /// Counts a failed login of `client_id` from `ip`.
    pub fn failed(&self, ip: IpAddr, client_id: &str) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let now = Instant::now();
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|key, bucket| {
                let limits = key.limits();
                refill(bucket, limits, now) < limits.0
            });
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        for key in [Key::Address(ip), client(ip, client_id)] {
            let limits = key.limits();
            let bucket = buckets.entry(key).or_insert((limits.0, now));
            refill(bucket, limits, now);
            bucket.0 = (bucket.0 - 1.0).max(0.0);
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, burst: f64, per_second: f64) -> bool {
        let mut bucket = (self.tokens, self.at);
        let tokens = refill(&mut bucket, (burst, per_second), Instant::now());
        (self.tokens, self.at) = bucket;
        if tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connections per client id (successful or not): a reconnect storm of one device is refused
/// before it costs a credential check. At most [`MAX_KEYS`] client ids are remembered.
#[derive(Debug)]
pub struct ConnectThrottle {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl ConnectThrottle {
    /// `burst` connections at once, then `per_second`.
    pub fn new(burst: f64, per_second: f64) -> Self {
        Self {
            burst,
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client_id` may connect now (and counts it).
    pub fn allows(&self, client_id: &str) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= MAX_KEYS {
            buckets.clear();
        }
        buckets
            .entry(xxhash_rust::xxh3::xxh3_64(client_id.as_bytes()))
            .or_insert_with(|| Bucket::full(self.burst))
            .take(self.burst, self.per_second)
    }
}

fn client(ip: IpAddr, client_id: &str) -> Key {
    Key::Client(ip, xxhash_rust::xxh3::xxh3_64(client_id.as_bytes()))
}

fn refill(bucket: &mut (f64, Instant), (burst, per_second): (f64, f64), now: Instant) -> f64 {
    let elapsed = now.duration_since(bucket.1).as_secs_f64();
    bucket.0 = (bucket.0 + elapsed * per_second).min(burst);
    bucket.1 = now;
    bucket.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_throttled_after_a_burst_of_failures_its_neighbours_are_not() {
        let throttle = AuthThrottle::default();
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..BURST as usize {
            assert!(throttle.allows(a, "pump-1"));
            throttle.failed(a, "pump-1");
        }
        assert!(!throttle.allows(a, "pump-1"), "the burst is spent");
        assert!(
            throttle.allows(a, "pump-2"),
            "another device behind the same address"
        );
        assert!(throttle.allows(b, "pump-1"), "the same name from elsewhere");
    }

    #[test]
    fn buckets_allow_a_burst_then_their_rate() {
        let mut bucket = Bucket::full(3.0);
        assert!((0..3).all(|_| bucket.take(3.0, 0.001)));
        assert!(!bucket.take(3.0, 0.001), "the burst is spent");
        let connects = ConnectThrottle::new(2.0, 0.001);
        assert!(connects.allows("a") && connects.allows("a"));
        assert!(!connects.allows("a"));
        assert!(connects.allows("b"), "another client id");
    }

    #[test]
    fn an_address_is_throttled_whatever_client_ids_it_tries() {
        let throttle = AuthThrottle::default();
        let a = "127.0.0.4".parse().unwrap();
        for i in 0..ADDRESS_BURST as usize {
            throttle.failed(a, &format!("guess-{i}"));
        }
        assert!(!throttle.allows(a, "fresh-name"));
    }
}
