//! Resource units. Everything the scheduler adds up is an integer, so sums are
//! exact and comparisons consistent (Zoe compared float cores with `<=` and
//! memory with `<`): cores in millicores, memory in bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Thousandths of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millicores(pub u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoresError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("must not be negative")]
    Negative,
    #[error("must be a multiple of 0.001 (cores are counted in millicores)")]
    NotMillicoreExact,
    #[error("must be at most {} cores", u32::MAX / 1000)]
    TooLarge,
}

impl Millicores {
    pub const ZERO: Millicores = Millicores(0);

    /// Converts Zoe's float cores exactly; values finer than a millicore are
    /// rejected rather than rounded.
    pub fn from_cores(cores: f64) -> Result<Millicores, CoresError> {
        if !cores.is_finite() {
            return Err(CoresError::NotFinite);
        }
        if cores < 0.0 {
            return Err(CoresError::Negative);
        }
        let m = cores * 1000.0;
        let rounded = m.round();
        // Decimal fractions such as 0.1 are not exact in binary; allow the
        // representation error, nothing more.
        if (m - rounded).abs() > 1e-6 * rounded.max(1.0) {
            return Err(CoresError::NotMillicoreExact);
        }
        if rounded > f64::from(u32::MAX / 1000 * 1000) {
            return Err(CoresError::TooLarge);
        }
        Ok(Millicores(rounded as u32))
    }

    pub fn from_whole_cores(cores: u32) -> Millicores {
        Millicores(cores.saturating_mul(1000))
    }

    pub fn as_cores(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// CFS quota for a period, in microseconds: the runtime limit of these cores.
    pub fn cfs_quota(self, period_us: u64) -> i64 {
        (u64::from(self.0) * period_us / 1000) as i64
    }

    pub fn saturating_sub(self, other: Millicores) -> Millicores {
        Millicores(self.0.saturating_sub(other.0))
    }
}

impl std::ops::Add for Millicores {
    type Output = Millicores;
    fn add(self, o: Millicores) -> Millicores {
        Millicores(self.0.saturating_add(o.0))
    }
}

impl std::ops::AddAssign for Millicores {
    fn add_assign(&mut self, o: Millicores) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Millicores {
    fn sum<I: Iterator<Item = Millicores>>(iter: I) -> Millicores {
        iter.fold(Millicores::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            let s = format!("{:.3}", self.as_cores());
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

/// Serialised as Zoe's cores: a JSON number, an integer when whole.
impl Serialize for Millicores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(u64::from(self.0 / 1000))
        } else {
            s.serialize_f64(self.as_cores())
        }
    }
}

impl<'de> Deserialize<'de> for Millicores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Millicores, D::Error> {
        let v = f64::deserialize(d)?;
        Millicores::from_cores(v).map_err(serde::de::Error::custom)
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` UTC, for people.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Formats a byte count for people: `512 MiB`, `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if (v - v.round()).abs() < 0.05 {
        format!("{:.0} {}", v, UNITS[u])
    } else {
        format!("{:.1} {}", v, UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_conversion_is_exact_to_the_millicore() {
        assert_eq!(Millicores::from_cores(0.1), Ok(Millicores(100)));
        assert_eq!(Millicores::from_cores(1.0), Ok(Millicores(1000)));
        assert_eq!(Millicores::from_cores(2.5), Ok(Millicores(2500)));
        assert_eq!(Millicores::from_cores(0.001), Ok(Millicores(1)));
        assert_eq!(Millicores::from_cores(0.3), Ok(Millicores(300)));
        assert_eq!(Millicores::from_cores(0.0005), Err(CoresError::NotMillicoreExact));
        assert_eq!(Millicores::from_cores(-1.0), Err(CoresError::Negative));
        assert_eq!(Millicores::from_cores(1e12), Err(CoresError::TooLarge));
        assert_eq!(Millicores::from_cores(f64::NAN), Err(CoresError::NotFinite));
    }

    #[test]
    fn cores_serialise_as_zoe_numbers() {
        assert_eq!(serde_json::to_string(&Millicores(2000)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Millicores(500)).unwrap(), "0.5");
        assert_eq!(serde_json::from_str::<Millicores>("0.25").unwrap(), Millicores(250));
        assert_eq!(Millicores(1500).to_string(), "1.5");
        assert_eq!(Millicores(1000).cfs_quota(100_000), 100_000);
        assert_eq!(Millicores(250).cfs_quota(100_000), 25_000);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
