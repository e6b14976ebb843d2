//! When a periodic workflow fires: a five-field cron expression (minute,
//! hour, day of month, month, day of week, as Nomad and crontab read it),
//! the `@hourly`-style macros, or `@every 30s` intervals. Our own small
//! parser rather than a crate: the model needs only "the next slot after
//! t", computed deterministically on every replica, and no time-zone
//! database. Time zones are therefore UTC or a fixed offset (`+02:00`):
//! a zone with daylight saving must be given as the offset it wants.

use std::fmt;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The shortest `@every` interval: each slot is one Raft write.
pub const MIN_EVERY_MS: Millis = 1_000;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// Slots at `anchor + k × every`, the anchor being the workflow's
    /// creation, so they do not depend on when a leader looks.
    Every(Millis),
    Cron(Box<Cron>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// `*` in the day-of-month or day-of-week field: crontab matches a day
    /// on either field when both are restricted, on the restricted one
    /// otherwise.
    any_day: bool,
    any_weekday: bool,
    /// Seconds east of UTC.
    offset_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    TimeZone(String),
}

/// Parses a time zone: `UTC`, `Z`, or a fixed offset `+HH:MM` / `-HH:MM`
/// (also `UTC+02:00`). Returns seconds east of UTC.
pub fn parse_time_zone(tz: &str) -> Result<i64, CronError> {
    let t = tz.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
        return Ok(0);
    }
    let t = t.strip_prefix("UTC").or_else(|| t.strip_prefix("utc")).unwrap_or(t);
    let bad = || {
        CronError::TimeZone(format!(
            "time zone {tz:?} is not UTC or a fixed offset like +02:00 (zoe has no time-zone database; \
             give the offset you want)"
        ))
    };
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Parses a duration like `30s`, `5m`, `1h30m`, `2d`, `1500ms`.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: Millis = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("duration {s:?}: expected a number at {rest:?}"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            u => return Err(format!("duration {s:?}: unknown unit {u:?} (ms, s, m, h, d)")),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or(format!("duration {s:?} too large"))?;
    }
    Ok(total)
}

impl Spec {
    pub fn parse(cron: &str, time_zone: &str) -> Result<Spec, CronError> {
        let offset_s = parse_time_zone(time_zone)?;
        let c = cron.trim();
        if let Some(d) = c.strip_prefix("@every") {
            let ms = parse_duration(d).map_err(CronError::Spec)?;
            if ms < MIN_EVERY_MS {
                return Err(CronError::Spec(format!("@every needs at least {}s", MIN_EVERY_MS / 1000)));
            }
            return Ok(Spec::Every(ms));
        }
        let expanded = match c {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => {
                return Err(CronError::Spec(format!(
                    "unknown macro {m:?} (@yearly, @monthly, @weekly, @daily, @hourly, @every <duration>)"
                )));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::Spec(format!(
                "{c:?} has {} fields; a cron spec has 5: minute hour day-of-month month day-of-week",
                fields.len()
            )));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Spec::Cron(Box::new(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: fields[2] == "*" || fields[2] == "?",
            any_weekday: fields[4] == "*" || fields[4] == "?",
            offset_s,
        })))
    }

    /// The first slot strictly after `t` (`anchor` for `@every`: the
    /// grid's origin). `None` if there is none within five years (a spec
    /// such as `0 0 31 2 *`).
    pub fn next_after(&self, t: Millis, anchor: Millis) -> Option<Millis> {
        match self {
            Spec::Every(every) => {
                if t < anchor {
                    return Some(anchor);
                }
                let k = (t - anchor) / every + 1;
                anchor.checked_add(k.checked_mul(*every)?)
            }
            Spec::Cron(c) => c.next_after(t),
        }
    }

    /// The last slot at or before `now` that comes after `t`, and how many
    /// such slots there are (capped at `cap`): what downtime missed.
    pub fn due(&self, t: Millis, anchor: Millis, now: Millis, cap: usize) -> (Option<Millis>, usize) {
        match self {
            Spec::Every(every) => {
                let Some(first) = self.next_after(t, anchor) else { return (None, 0) };
                if first > now {
                    return (None, 0);
                }
                let n = (now - first) / every + 1;
                (Some(first + (n - 1) * every), n.min(cap as u64) as usize)
            }
            Spec::Cron(_) => {
                let (mut last, mut n, mut at) = (None, 0, t);
                while let Some(s) = self.next_after(at, anchor) {
                    if s > now {
                        break;
                    }
                    last = Some(s);
                    n += 1;
                    at = s;
                    // A long outage of a per-minute spec: the count stops,
                    // the search for the latest slot goes on by days.
                    if n >= cap {
                        if let Some(l) = self.latest_at_or_before(now, s) {
                            last = Some(l);
                        }
                        break;
                    }
                }
                (last, n)
            }
        }
    }

    fn latest_at_or_before(&self, now: Millis, from: Millis) -> Option<Millis> {
        // Walk back a day at a time to a day with a slot, then forward.
        let day = 86_400_000;
        let mut start = now.saturating_sub(day).max(from);
        loop {
            let mut at = start;
            let mut last = None;
            while let Some(s) = self.next_after(at, 0) {
                if s > now {
                    break;
                }
                last = Some(s);
                at = s;
            }
            if last.is_some() || start <= from {
                return last.or(Some(from));
            }
            start = start.saturating_sub(day).max(from);
        }
    }
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One cron field as a bit set of the values it allows.
fn field(s: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, CronError> {
    let err = |m: String| CronError::Spec(format!("{what} field {s:?}: {m}"));
    let value = |v: &str| -> Result<u32, CronError> {
        if let Some(i) = names.iter().position(|n| v.eq_ignore_ascii_case(n)) {
            // Month names start at 1, weekday names at 0 (sun).
            return Ok(i as u32 + lo);
        }
        let n: u32 = v.parse().map_err(|_| err(format!("{v:?} is not a number")))?;
        if n < lo || n > hi {
            return Err(err(format!("{n} is outside {lo}-{hi}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let st: u32 = st.parse().map_err(|_| err(format!("step {st:?} is not a number")))?;
                if st == 0 {
                    return Err(err("a step of 0".into()));
                }
                (r, st)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if step > 1 { hi } else { a })
        };
        if a > b {
            return Err(err(format!("range {a}-{b} is backwards")));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days & (1 << day) != 0;
        let w = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => d,
            (true, false) => w,
            (false, false) => d || w,
        }
    }

    fn next_after(&self, t: Millis) -> Option<Millis> {
        let local_s = (t / 1000) as i64 + self.offset_s;
        let mut minute = local_s.div_euclid(60) + 1;
        let limit = minute + 5 * 366 * 1440;
        while minute < limit {
            let days = minute.div_euclid(1440);
            let (y, m, d) = civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
            let hh = (minute.rem_euclid(1440) / 60) as u32;
            let mm = minute.rem_euclid(60) as u32;
            if self.months & (1 << m) == 0 {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                minute = days_from_civil(ny, nm, 1) * 1440;
                continue;
            }
            if !self.day_matches(d, weekday) {
                minute = (days + 1) * 1440;
                continue;
            }
            if self.hours & (1 << hh) == 0 {
                minute = minute - mm as i64 + 60;
                continue;
            }
            if self.minutes & (1 << mm) == 0 {
                minute += 1;
                continue;
            }
            let utc_s = minute * 60 - self.offset_s;
            return u64::try_from(utc_s).ok().map(|s| s * 1000);
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC time as `YYYY-MM-DDTHH:MM:SSZ`, for messages and pages.
pub fn rfc3339(t: Millis) -> String {
    let s = (t / 1000) as i64;
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", r / 3600, r / 60 % 60, r % 60)
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Every(ms) => write!(f, "every {ms} ms"),
            Spec::Cron(_) => f.write_str("cron"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, hh: u64, mm: u64) -> Millis {
        (days_from_civil(y, m, d) as u64 * 86_400 + hh * 3600 + mm * 60) * 1000
    }

    #[test]
    fn civil_round_trips() {
        for z in [-1000, 0, 1, 59, 365, 10_957, 19_000, 50_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(rfc3339(at(2024, 2, 29, 13, 5)), "2024-02-29T13:05:00Z");
    }

    #[test]
    fn next_slots_table() {
        let t0 = at(2026, 12, 7, 1, 58) + 17_000;
        let cases: &[(&str, &str, Millis)] = &[
            ("0 * * * *", "UTC", at(2026, 12, 7, 2, 0)),
            ("@hourly", "UTC", at(2026, 12, 7, 2, 0)),
            ("*/15 * * * *", "UTC", at(2026, 12, 7, 2, 0)),
            ("59 * * * *", "UTC", at(2026, 12, 7, 1, 59)),
            ("30 3 * * *", "UTC", at(2026, 12, 7, 3, 30)),
            ("30 3 * * *", "+02:00", at(2026, 12, 7, 1, 30) + 86_400_000),
            ("0 0 1 1 *", "UTC", at(2027, 1, 1, 0, 0)),
            ("0 9 * * mon-fri", "UTC", at(2026, 12, 7, 9, 0)), // a Monday
            ("0 9 * * sat", "UTC", at(2026, 12, 12, 9, 0)),
            ("0 12 13 * fri", "UTC", at(2026, 12, 11, 12, 0)), // either field
            ("0 0 29 feb *", "UTC", at(2028, 2, 29, 0, 0)),
            ("0 0 * * 7", "UTC", at(2026, 12, 13, 0, 0)),
        ];
        for (cron, tz, want) in cases {
            let s = Spec::parse(cron, tz).unwrap();
            assert_eq!(s.next_after(t0, 0), Some(*want), "{cron} {tz}: {}", rfc3339(s.next_after(t0, 0).unwrap()));
        }
        // Strictly after: a slot time itself gives the next one.
        let s = Spec::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(s.next_after(at(2026, 1, 1, 5, 0), 0), Some(at(2026, 1, 1, 6, 0)));
        assert_eq!(Spec::parse("0 0 31 2 *", "UTC").unwrap().next_after(t0, 0), None);
    }

    #[test]
    fn every_is_a_grid_from_the_anchor() {
        let s = Spec::parse("@every 2s", "UTC").unwrap();
        assert_eq!(s, Spec::Every(2000));
        assert_eq!(s.next_after(1000, 1000), Some(3000));
        assert_eq!(s.next_after(2999, 1000), Some(3000));
        assert_eq!(s.next_after(3000, 1000), Some(5000));
        assert_eq!(s.due(1000, 1000, 10_500, 100), (Some(9000), 4));
        assert_eq!(s.due(1000, 1000, 2_999, 100), (None, 0));
        assert_eq!(Spec::parse("@every 1h30m", "UTC").unwrap(), Spec::Every(5_400_000));
    }

    #[test]
    fn cron_due_counts_missed_slots() {
        let s = Spec::parse("*/10 * * * *", "UTC").unwrap();
        let t = at(2026, 1, 1, 0, 0);
        assert_eq!(s.due(t, 0, t + 35 * 60_000, 100), (Some(t + 30 * 60_000), 3));
        // A long outage: the count is capped, the latest slot is still found.
        let (last, n) = s.due(t, 0, t + 3 * 86_400_000 + 5 * 60_000, 10);
        assert_eq!((last, n), (Some(t + 3 * 86_400_000), 10));
    }

    #[test]
    fn bad_specs_say_why() {
        for (cron, tz, msg) in [
            ("* * *", "UTC", "5"),
            ("61 * * * *", "UTC", "outside 0-59"),
            ("*/0 * * * *", "UTC", "step of 0"),
            ("@every 10ms", "UTC", "at least"),
            ("@every 3x", "UTC", "unknown unit"),
            ("@fortnightly", "UTC", "unknown macro"),
            ("0 * * * *", "Europe/Paris", "fixed offset"),
            ("5-1 * * * *", "UTC", "backwards"),
        ] {
            let e = Spec::parse(cron, tz).unwrap_err().to_string();
            assert!(e.contains(msg), "{cron} {tz}: {e}");
        }
        assert_eq!(parse_time_zone("-05:30").unwrap(), -(5 * 3600 + 1800));
        assert_eq!(parse_time_zone("UTC+2").unwrap(), 7200);
    }
}
