//! What each user has consumed, for the fair-share queue policy: the
//! core-time of every instance whose container has ended, charged by the
//! hour it was used in. The record is replicated (it is derived from
//! commands, so every replica charges the same), and it keeps raw
//! core-time, not a decayed value: the decay's half-life is the
//! scheduler's setting, and the scheduler decays the buckets when it reads
//! them. Instances still running are not charged here: the scheduler adds
//! their time so far from the services themselves.

use super::{BackendStatus, Millis, ServiceId, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Width of a bucket of the record.
pub const USAGE_BUCKET_MS: Millis = 3_600_000;
/// Buckets older than this are dropped: at any useful half-life (hours to
/// days) they weigh nothing.
pub const USAGE_KEEP_MS: Millis = 30 * 24 * 3_600_000;

/// One user's core-time: bucket (hours since the epoch) → millicore-seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    pub buckets: BTreeMap<u64, u64>,
}

impl UserUsage {
    /// Adds `millicores` used over `[start, end)`, split over the buckets it spans.
    pub fn charge(&mut self, millicores: u64, start: Millis, end: Millis) {
        // What is older than the window would be dropped below anyway; a
        // container that ran for months costs no more than the window's
        // buckets to charge.
        let mut t = start.max(end.saturating_sub(USAGE_KEEP_MS));
        while t < end {
            let b = t / USAGE_BUCKET_MS;
            let upto = ((b + 1) * USAGE_BUCKET_MS).min(end);
            *self.buckets.entry(b).or_default() += millicores * (upto - t) / 1000;
            t = upto;
        }
        let keep_from = end.saturating_sub(USAGE_KEEP_MS) / USAGE_BUCKET_MS;
        self.buckets = self.buckets.split_off(&keep_from);
    }

    /// Core-seconds decayed to `now` with `half_life_ms` (each bucket as if
    /// used at its middle), counting only buckets within ten half-lives.
    pub fn decayed(&self, now: Millis, half_life_ms: Millis) -> f64 {
        let from = now.saturating_sub(half_life_ms.saturating_mul(10)) / USAGE_BUCKET_MS;
        self.buckets
            .range(from..)
            .map(|(b, mc_s)| {
                let mid = b * USAGE_BUCKET_MS + USAGE_BUCKET_MS / 2;
                *mc_s as f64 / 1000.0 * decay(now.saturating_sub(mid), half_life_ms)
            })
            .sum()
    }
}

/// The weight of use `age_ms` ago.
pub fn decay(age_ms: Millis, half_life_ms: Millis) -> f64 {
    if half_life_ms == 0 {
        return if age_ms == 0 { 1.0 } else { 0.0 };
    }
    (-(age_ms as f64) / half_life_ms as f64 * std::f64::consts::LN_2).exp()
}

impl State {
    /// The container of `sid` ends at `time`: its owner is charged for the
    /// time it ran. Only a container that started is charged (one stopped
    /// while starting ran nothing; its `time_start` is an earlier attempt's).
    pub(super) fn charge_usage(&mut self, sid: ServiceId, time: Millis) {
        let Some(s) = self.services.get(&sid) else { return };
        if s.backend_status != BackendStatus::Started || !s.status.may_hold_container() {
            return;
        }
        let Some(start) = s.time_start else { return };
        let Some(e) = self.executions.get(&s.execution_id) else { return };
        let millicores =
            u64::from(s.cores_allocated.unwrap_or_else(|| e.description.services[s.group_index].cores_min()).0);
        let owner = e.owner.clone();
        self.usage.entry(owner).or_default().charge(millicores, start, time.max(start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_split_by_hour_decay_by_half_life_and_survive_a_snapshot() {
        let mut u = UserUsage::default();
        // 2 cores from 00:30 to 02:00: 1,800 s in hour 0, 3,600 s in hour 1.
        u.charge(2000, 1_800_000, 7_200_000);
        assert_eq!(u.buckets, BTreeMap::from([(0, 3_600_000), (1, 7_200_000)]));
        // One hour after bucket 1's middle, with a half-life of an hour.
        let d = u.decayed(5_400_000 + 3_600_000, 3_600_000);
        assert!((d - (3_600.0 / 4.0 + 7_200.0 / 2.0)).abs() < 1e-6, "{d}");
        // Thirty days later the old buckets are gone.
        u.charge(1000, USAGE_KEEP_MS + 7_200_000, USAGE_KEEP_MS + 7_300_000);
        assert_eq!(u.buckets.len(), 1);
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<UserUsage>(&json).unwrap(), u);
    }
}
