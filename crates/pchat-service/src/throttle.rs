//! Sign-in throttling: failed password checks are counted per account and client address, per client address
//! across accounts (password spraying) and per account across addresses (a distributed guess), each with a few
//! free failures and then lockouts that double up to a ceiling. A locked attempt is refused before any password
//! hashing, so a flood costs the server almost nothing.
//!
//! An attacker must not be able to lock a real user out: the account-wide lockout does not apply to an address
//! from which the account signed in successfully in the last 30 days, so the user's own machine keeps working
//! while strangers are refused; the per-address lockouts only ever hit the address that failed.
//!
//! The counters live in each server's memory (a pool of N servers allows N times the free failures); the maps are
//! bounded, and entries are forgotten after a quiet window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How sign-in failures are throttled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures of one account from one address before lockouts start.
    pub free_per_account_and_address: u32,
    /// Failures from one address, whatever the account, before lockouts start.
    pub free_per_address: u32,
    /// Failures of one account from addresses it never signed in from, before lockouts start.
    pub free_per_account: u32,
    /// The longest lockout, in seconds (the first is one second, each further failure doubles it).
    pub max_lockout_secs: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { free_per_account_and_address: 5, free_per_address: 20, free_per_account: 50, max_lockout_secs: 900 }
    }
}

/// Failures are forgotten after this long without one.
const QUIET: Duration = Duration::from_secs(15 * 60);
/// An address a user signed in from is trusted for that user this long.
const TRUSTED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most entries kept per map; stale ones are swept first, then the map starts over.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    AccountAddress(String, Option<IpAddr>),
    Address(Option<IpAddr>),
    Account(String),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

pub(crate) struct SignInThrottle {
    settings: ThrottleSettings,
    failures: Mutex<HashMap<Key, Failures>>,
    /// (account, address) → last successful sign-in.
    trusted: Mutex<HashMap<(String, Option<IpAddr>), Instant>>,
}

impl SignInThrottle {
    pub(crate) fn new(settings: ThrottleSettings) -> Self {
        Self { settings, failures: Mutex::new(HashMap::new()), trusted: Mutex::new(HashMap::new()) }
    }

    fn keys(&self, account: &str, address: Option<IpAddr>) -> Vec<(Key, u32)> {
        let s = &self.settings;
        let mut keys = vec![
            (Key::AccountAddress(account.to_owned(), address), s.free_per_account_and_address),
            (Key::Address(address), s.free_per_address),
        ];
        if !self.is_trusted(account, address) {
            keys.push((Key::Account(account.to_owned()), s.free_per_account));
        }
        keys
    }

    fn is_trusted(&self, account: &str, address: Option<IpAddr>) -> bool {
        let now = Instant::now();
        self.trusted
            .lock()
            .ok()
            .and_then(|t| t.get(&(account.to_owned(), address)).copied())
            .is_some_and(|at| now.duration_since(at) < TRUSTED_FOR)
    }

    /// Whether an attempt may go ahead; otherwise the seconds until it may.
    pub(crate) fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), u64> {
        self.check_at(account, address, Instant::now())
    }

    fn check_at(&self, account: &str, address: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let keys = self.keys(account, address);
        let Ok(failures) = self.failures.lock() else { return Ok(()) };
        let wait = keys
            .iter()
            .filter_map(|(key, _)| failures.get(key).and_then(|f| f.locked_until))
            .filter(|until| *until > now)
            .map(|until| until.duration_since(now))
            .max();
        match wait {
            Some(wait) => Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt.
    pub(crate) fn failed(&self, account: &str, address: Option<IpAddr>) {
        self.failed_at(account, address, Instant::now());
    }

    fn failed_at(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        let keys = self.keys(account, address);
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.duration_since(f.last) < QUIET || f.locked_until.is_some_and(|u| u > now));
            if failures.len() >= MAX_ENTRIES {
                failures.clear();
            }
        }
        for (key, free) in keys {
            let entry = failures.entry(key).or_insert(Failures { count: 0, last: now, locked_until: None });
            if now.duration_since(entry.last) >= QUIET && entry.locked_until.is_none_or(|u| u <= now) {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if entry.count > free {
                let doublings = (entry.count - free - 1).min(30);
                let secs = (1u64 << doublings).min(self.settings.max_lockout_secs.max(1));
                entry.locked_until = Some(now + Duration::from_secs(secs));
            }
        }
    }

    /// A successful sign-in: the account's failures from that address are forgotten and the address is trusted
    /// for the account.
    pub(crate) fn succeeded(&self, account: &str, address: Option<IpAddr>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Key::AccountAddress(account.to_owned(), address));
        }
        if let Ok(mut trusted) = self.trusted.lock() {
            if trusted.len() >= MAX_ENTRIES {
                let now = Instant::now();
                trusted.retain(|_, at| now.duration_since(*at) < TRUSTED_FOR);
                if trusted.len() >= MAX_ENTRIES {
                    trusted.clear();
                }
            }
            trusted.insert((account.to_owned(), address), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    fn throttle() -> SignInThrottle {
        SignInThrottle::new(ThrottleSettings {
            free_per_account_and_address: 3,
            free_per_address: 10,
            free_per_account: 6,
            max_lockout_secs: 60,
        })
    }

    #[test]
    fn lockouts_start_after_the_free_failures_and_double_up_to_the_ceiling() {
        let t = throttle();
        t.succeeded("a@x", ip(2));
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(t.check_at("a@x", ip(1), start), Ok(()), "failure {n} is free");
            t.failed_at("a@x", ip(1), start);
        }
        assert_eq!(t.check_at("a@x", ip(1), start), Ok(()));
        t.failed_at("a@x", ip(1), start);
        assert_eq!(t.check_at("a@x", ip(1), start), Err(1));
        assert_eq!(t.check_at("a@x", ip(1), start + Duration::from_secs(1)), Ok(()));
        let mut at = start;
        let mut waits = vec![];
        for _ in 0..9 {
            at += Duration::from_secs(61);
            t.failed_at("a@x", ip(1), at);
            waits.push(t.check_at("a@x", ip(1), at).unwrap_err());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60, 60]);
        // An address the user signed in from is not locked by another address's failures, even once the
        // account-wide limit is passed; an unknown one is.
        assert_eq!(t.check_at("a@x", ip(2), at), Ok(()));
        assert!(t.check_at("a@x", ip(3), at).is_err());
    }

    #[test]
    fn spraying_many_accounts_from_one_address_is_throttled() {
        let t = throttle();
        let now = Instant::now();
        for n in 0..10 {
            t.failed_at(&format!("user{n}@x"), ip(9), now);
        }
        assert_eq!(t.check_at("fresh@x", ip(9), now), Ok(()));
        t.failed_at("fresh@x", ip(9), now);
        assert!(t.check_at("anyone@x", ip(9), now).is_err());
        assert_eq!(t.check_at("anyone@x", ip(8), now), Ok(()));
    }

    #[test]
    fn a_distributed_attack_does_not_lock_the_user_out_of_an_address_they_use() {
        let t = throttle();
        let now = Instant::now();
        t.succeeded("a@x", ip(1));
        for n in 0..20 {
            t.failed_at("a@x", ip(100 + n), now);
        }
        assert!(t.check_at("a@x", ip(200), now).is_err(), "strangers are locked out of the account");
        assert_eq!(t.check_at("a@x", ip(1), now), Ok(()), "the user's own address is not");
    }

    #[test]
    fn success_forgets_the_failures_and_quiet_forgets_too() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..3 {
            t.failed_at("a@x", ip(1), now);
        }
        t.succeeded("a@x", ip(1));
        t.failed_at("a@x", ip(1), now);
        assert_eq!(t.check_at("a@x", ip(1), now), Ok(()), "the count started over");
        for _ in 0..5 {
            t.failed_at("b@x", ip(3), now);
        }
        let later = now + QUIET + Duration::from_secs(61);
        t.failed_at("b@x", ip(3), later);
        assert_eq!(t.check_at("b@x", ip(3), later), Ok(()), "failures long ago are forgotten");
    }
}
