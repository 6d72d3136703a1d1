//! Sign-in throttling per account and per client address, in memory.
//!
//! After three failures in a row a key must wait, 1 s then doubling up to 15 minutes; a
//! success clears the account's count. Checks happen before any password hash is computed.

use crate::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

const FREE_FAILURES: u32 = 3;
const MAX_DELAY_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Timestamp,
}

/// Failure counters by account and by address.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    accounts: Arc<Mutex<HashMap<String, Failures>>>,
    addresses: Arc<Mutex<HashMap<String, Failures>>>,
}

impl Throttle {
    /// Seconds to wait before this account or address may try again, if any.
    #[must_use]
    pub fn retry_after(&self, account: &str, address: &str, now: Timestamp) -> Option<i64> {
        let wait = |map: &Mutex<HashMap<String, Failures>>, key: &str| {
            lock(map).get(key).and_then(|f| {
                // Rounded up: a wait of 0.4 s is still a wait.
                let left = f.until.duration_since(now);
                left.is_positive()
                    .then(|| left.as_secs() + i64::from(left.subsec_nanos() > 0))
            })
        };
        let account = normalise(account);
        match (
            wait(&self.accounts, &account),
            wait(&self.addresses, address),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts a failed attempt.
    pub fn failed(&self, account: &str, address: &str, now: Timestamp) {
        for (map, key) in [
            (&self.accounts, normalise(account)),
            (&self.addresses, address.to_owned()),
        ] {
            let mut map = lock(map);
            let entry = map.entry(key).or_insert(Failures {
                count: 0,
                until: now,
            });
            entry.count += 1;
            if entry.count > FREE_FAILURES {
                let exponent = (entry.count - FREE_FAILURES - 1).min(20);
                let delay = (1i64 << exponent).min(MAX_DELAY_SECS);
                entry.until = now
                    .checked_add(SignedDuration::from_secs(delay))
                    .unwrap_or(now);
            }
        }
    }

    /// Clears the account's failures after a successful sign-in.
    pub fn succeeded(&self, account: &str) {
        lock(&self.accounts).remove(&normalise(account));
    }
}

fn normalise(account: &str) -> String {
    account.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_three_failures() {
        let throttle = Throttle::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.retry_after("ada", "10.0.0.1", t0), None);
            throttle.failed("ada", "10.0.0.1", t0);
        }
        assert_eq!(throttle.retry_after("Ada", "10.0.0.9", t0), None);
        throttle.failed("ada", "10.0.0.1", t0);
        assert_eq!(throttle.retry_after("ada", "10.0.0.9", t0), Some(1));
        throttle.failed("ada", "10.0.0.1", t0);
        assert_eq!(
            throttle.retry_after("bob", "10.0.0.1", t0),
            Some(2),
            "the address is throttled too"
        );
        throttle.succeeded("ada");
        assert_eq!(throttle.retry_after("ada", "10.0.0.9", t0), None);
    }
}
