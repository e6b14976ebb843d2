//! Login throttling: how many password checks a username and a client
//! address may cause, and how many argon2 verifications run at once.
//!
//! Each coordinator counts on its own (in memory, not replicated): an
//! attacker spreading guesses over three coordinators gets three times the
//! budget, still a few per minute. Limits are fixed windows, cheap and easy
//! to explain in a `Retry-After`:
//!
//! - a **username** may fail `failures_per_user` times per window; after
//!   that every login for it answers 429 until the window ends, even with
//!   the right password (otherwise the 429 itself would confirm a guess);
//! - a **client address** may try `attempts_per_client` times per window,
//!   right or wrong (it stops one address from walking many usernames).
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
    /// Failed logins of one username per window.
    pub failures_per_user: u32,
    /// Logins from one client address per window.
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

/// Above this many tracked keys, windows that ended are dropped (bounds
/// the memory an address-spraying client can make us hold).
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

pub struct LoginThrottle {
    limits: LoginLimits,
    users: Mutex<HashMap<String, Window>>,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> LoginThrottle {
        LoginThrottle { limits, users: Mutex::default(), clients: Mutex::default() }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.window_s.max(1))
    }

    /// The current window of `key`, started anew when the old one ended.
    fn current<K: std::hash::Hash + Eq + Clone>(&self, map: &mut HashMap<K, Window>, key: &K, now: Instant) -> Window {
        let w = self.window();
        if map.len() > PRUNE_AT {
            map.retain(|_, v| now.duration_since(v.started) < w);
        }
        let e = map.entry(key.clone()).or_insert(Window { started: now, count: 0 });
        if now.duration_since(e.started) >= w {
            *e = Window { started: now, count: 0 };
        }
        *e
    }

    fn retry(&self, w: Window, now: Instant) -> RetryAfter {
        let left = (w.started + self.window()).saturating_duration_since(now);
        RetryAfter(left.max(Duration::from_secs(1)))
    }

    /// Called before a password is checked: counts the attempt against the
    /// client, and refuses when either budget is spent.
    pub fn admit(&self, username: &str, client: Option<IpAddr>) -> Result<(), RetryAfter> {
        let now = Instant::now();
        {
            let mut users = self.users.lock().expect("throttle lock");
            let w = self.current(&mut users, &username.to_string(), now);
            if w.count >= self.limits.failures_per_user {
                return Err(self.retry(w, now));
            }
        }
        if let Some(ip) = client {
            let mut clients = self.clients.lock().expect("throttle lock");
            let w = self.current(&mut clients, &ip, now);
            if w.count >= self.limits.attempts_per_client {
                return Err(self.retry(w, now));
            }
            if let Some(e) = clients.get_mut(&ip) {
                e.count += 1;
            }
        }
        Ok(())
    }

    /// A wrong password (or unknown username) for `username`.
    pub fn failed(&self, username: &str) {
        let now = Instant::now();
        let mut users = self.users.lock().expect("throttle lock");
        self.current(&mut users, &username.to_string(), now);
        if let Some(e) = users.get_mut(username) {
            e.count = e.count.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(failures: u32, attempts: u32) -> LoginThrottle {
        LoginThrottle::new(LoginLimits { failures_per_user: failures, attempts_per_client: attempts, window_s: 60 })
    }

    #[test]
    fn a_username_is_locked_after_its_failures_whatever_the_client() {
        let t = throttle(3, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.admit("alice", Some(a)).is_ok());
            t.failed("alice");
        }
        let RetryAfter(wait) = t.admit("alice", Some(b)).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        // Another username is not affected.
        assert!(t.admit("bob", Some(b)).is_ok());
    }

    #[test]
    fn a_client_is_limited_in_attempts_right_or_wrong() {
        let t = throttle(100, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(t.admit("u1", Some(a)).is_ok());
        assert!(t.admit("u2", Some(a)).is_ok());
        assert!(t.admit("u3", Some(a)).is_err());
        assert!(t.admit("u3", Some("10.0.0.9".parse().unwrap())).is_ok());
    }
}
