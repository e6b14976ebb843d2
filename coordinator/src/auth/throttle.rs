//! Login throttling: how many password checks a username and a client
//! address may cause.
//!
//! Each coordinator counts on its own (in memory, not replicated): an
//! attacker spreading guesses over three coordinators gets three times the
//! budget, still a few per minute. Limits are fixed windows, cheap and easy
//! to explain in a `Retry-After`. An attempt counts the moment it is
//! admitted (a burst of parallel guesses cannot all pass while argon2
//! runs) and is given back when the password was right, so only failures
//! use a budget:
//!
//! - a **username from one address** may fail `failures_per_user` times per
//!   window; after that it answers 429 until the window ends, even with the
//!   right password (otherwise the 429 itself would confirm a guess);
//! - a **username** from all addresses together may fail ten times that
//!   (a distributed guesser is bounded, and locking the account out costs
//!   an attacker ten addresses, not one request);
//! - a **client address** may fail `attempts_per_client` times per window,
//!   whatever the usernames (it stops one address from walking many).
//!
//! Memory is bounded: usernames longer than [`MAX_USERNAME`] are refused
//! before anything is stored, and past [`MAX_TRACKED`] keys per table
//! ended windows are dropped and, if still full, new keys refused.
//!
//! (The bound on concurrent argon2 verifications is `super::verify_password`'s.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Login limits (`[api.login]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimits {
    /// Failed logins of one username from one address per window (ten
    /// times that from all addresses).
    pub failures_per_user: u32,
    /// Failed logins from one client address per window.
    pub attempts_per_client: u32,
    pub window_s: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits { failures_per_user: 10, attempts_per_client: 30, window_s: 300 }
    }
}

/// How long a refused caller should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Longest username worth counting (usernames are at most 64 characters).
pub const MAX_USERNAME: usize = 256;

/// Keys per table before new ones are refused.
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

/// One fixed-window counter per key.
struct Table<K> {
    map: HashMap<K, Window>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table { map: HashMap::new() }
    }

    /// Counts one attempt for `key` unless its budget `limit` is spent.
    fn take(&mut self, key: &K, limit: u32, window: Duration, now: Instant) -> Result<(), RetryAfter> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            self.map.retain(|_, v| now.duration_since(v.started) < window);
            if self.map.len() >= MAX_TRACKED {
                return Err(RetryAfter(window));
            }
        }
        let e = self.map.entry(key.clone()).or_insert(Window { started: now, count: 0 });
        if now.duration_since(e.started) >= window {
            *e = Window { started: now, count: 0 };
        }
        if e.count >= limit {
            let left = (e.started + window).saturating_duration_since(now);
            return Err(RetryAfter(left.max(Duration::from_secs(1))));
        }
        e.count += 1;
        Ok(())
    }

    /// Gives an attempt back (the password was right).
    fn give_back(&mut self, key: &K) {
        if let Some(e) = self.map.get_mut(key) {
            e.count = e.count.saturating_sub(1);
        }
    }
}

struct Tables {
    user_at: Table<(String, Option<IpAddr>)>,
    user: Table<String>,
    client: Table<IpAddr>,
}

pub struct LoginThrottle {
    limits: LoginLimits,
    tables: Mutex<Tables>,
}

/// An admitted login attempt; [`LoginThrottle::succeeded`] gives it back.
pub struct Attempt {
    username: String,
    client: Option<IpAddr>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> LoginThrottle {
        let tables = Tables { user_at: Table::new(), user: Table::new(), client: Table::new() };
        LoginThrottle { limits, tables: Mutex::new(tables) }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.window_s.max(1))
    }

    /// Called before a password is checked: counts the attempt against the
    /// username (from this address and overall) and the client, or refuses
    /// when a budget is spent. Nothing is counted on a refusal.
    pub fn admit(&self, username: &str, client: Option<IpAddr>) -> Result<Attempt, RetryAfter> {
        let (now, w, l) = (Instant::now(), self.window(), &self.limits);
        if username.len() > MAX_USERNAME {
            return Err(RetryAfter(w));
        }
        let mut t = self.tables.lock().expect("throttle lock");
        let user_at = (username.to_string(), client);
        if let Some(ip) = client {
            t.client.take(&ip, l.attempts_per_client, w, now)?;
        }
        if let Err(e) = t.user_at.take(&user_at, l.failures_per_user, w, now) {
            if let Some(ip) = client {
                t.client.give_back(&ip);
            }
            return Err(e);
        }
        if let Err(e) = t.user.take(&user_at.0, l.failures_per_user.saturating_mul(10), w, now) {
            if let Some(ip) = client {
                t.client.give_back(&ip);
            }
            t.user_at.give_back(&user_at);
            return Err(e);
        }
        Ok(Attempt { username: user_at.0, client })
    }

    /// The password was right: the attempt does not count.
    pub fn succeeded(&self, a: Attempt) {
        let mut t = self.tables.lock().expect("throttle lock");
        if let Some(ip) = a.client {
            t.client.give_back(&ip);
        }
        t.user.give_back(&a.username);
        t.user_at.give_back(&(a.username, a.client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(failures: u32, attempts: u32) -> LoginThrottle {
        LoginThrottle::new(LoginLimits { failures_per_user: failures, attempts_per_client: attempts, window_s: 60 })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_username_is_locked_from_an_address_after_its_failures() {
        let t = throttle(3, 100);
        for _ in 0..3 {
            t.admit("alice", ip("10.0.0.1")).unwrap();
        }
        let RetryAfter(wait) = t.admit("alice", ip("10.0.0.1")).err().unwrap();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        // alice from elsewhere, and bob from there, are not locked.
        assert!(t.admit("alice", ip("10.0.0.2")).is_ok());
        assert!(t.admit("bob", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_username_has_a_budget_over_all_addresses() {
        let t = throttle(1, 100);
        for i in 0..10 {
            t.admit("alice", ip(&format!("10.0.0.{i}"))).unwrap();
        }
        assert!(t.admit("alice", ip("10.0.1.1")).is_err(), "ten addresses spent alice's budget");
    }

    #[test]
    fn right_passwords_give_their_attempt_back() {
        let t = throttle(2, 2);
        for _ in 0..10 {
            let a = t.admit("alice", ip("10.0.0.1")).unwrap();
            t.succeeded(a);
        }
        assert!(t.admit("alice", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_client_is_limited_whatever_the_usernames() {
        let t = throttle(100, 2);
        assert!(t.admit("u1", ip("10.0.0.1")).is_ok());
        assert!(t.admit("u2", ip("10.0.0.1")).is_ok());
        assert!(t.admit("u3", ip("10.0.0.1")).is_err());
        assert!(t.admit("u3", ip("10.0.0.9")).is_ok());
        assert!(t.admit(&"x".repeat(MAX_USERNAME + 1), ip("10.0.0.9")).is_err(), "huge usernames are not stored");
    }
}
