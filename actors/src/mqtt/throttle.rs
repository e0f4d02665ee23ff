//! Failed device logins per source address: a token bucket per address (a burst of
//! [`BURST`] failures, refilled at one per second). An address whose bucket is empty is refused
//! at CONNECT without its credentials being checked, so guessing tokens costs a client one try
//! per second. The table holds at most [`MAX_ADDRESSES`] addresses; full buckets are dropped
//! first when it is full.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Instant};

/// Failures an address may have in a burst.
pub const BURST: f64 = 10.0;
/// Failures forgiven per second.
const REFILL_PER_SEC: f64 = 1.0;
/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 100_000;

/// Failed logins per source address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AuthThrottle {
    /// Whether `ip` may try to log in now.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        match buckets.get_mut(&ip) {
            Some(bucket) => refill(bucket, Instant::now()) >= 1.0,
            None => true,
        }
    }

    /// Counts a failed login of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let now = Instant::now();
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| refill(bucket, now) < BURST);
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert((BURST, now));
        refill(bucket, now);
        bucket.0 = (bucket.0 - 1.0).max(0.0);
    }
}

fn refill(bucket: &mut (f64, Instant), now: Instant) -> f64 {
    let elapsed = now.duration_since(bucket.1).as_secs_f64();
    bucket.0 = (bucket.0 + elapsed * REFILL_PER_SEC).min(BURST);
    bucket.1 = now;
    bucket.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_a_burst_of_failures() {
        let throttle = AuthThrottle::default();
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..BURST as usize {
            assert!(throttle.allows(a));
            throttle.failed(a);
        }
        assert!(!throttle.allows(a), "the burst is spent");
        assert!(throttle.allows(b), "other addresses are not affected");
    }
}
