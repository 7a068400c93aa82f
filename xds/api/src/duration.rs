//! Durations as the mesh file writes them (`250ms`, `2s`, `1m`, `1h`, `1.5s`).
//! Parsed once at the edge into `std::time::Duration`; nothing past the model sees a string.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `ms`, `s`, `m` or `h` (`250ms`, `1.5s`, `2m`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

/// The longest duration a mesh file or flag may give: one week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration {input:?}: expected a number and a unit (ms, s, m, h), e.g. 250ms or 2s"
    )]
    Syntax { input: String },
    #[error("invalid duration {input:?}: at most 1 week (168h)")]
    TooLong { input: String },
}

impl DurationError {
    /// The refusal as a mesh-file field states it, after the field's path.
    pub fn field_message(&self) -> String {
        match self {
            DurationError::Syntax { input } => format!(
                "must be a duration, a number and a unit (ms, s, m, h) such as 250ms or 2s, got {input:?}"
            ),
            DurationError::TooLong { input } => {
                format!("must be at most 1 week (168h), got {input}")
            }
        }
    }
}

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError::Syntax {
            input: s.to_owned(),
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        let secs_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        let secs = value * secs_per_unit;
        if !secs.is_finite() || secs < 0.0 {
            return Err(err());
        }
        // A week is far beyond any timeout a mesh needs; it also keeps the f64 exact in ms.
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(DurationError::TooLong {
                input: s.to_owned(),
            });
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: DurationError| serde::de::Error::custom(e.field_message()))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(
            "250ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("2s".parse::<Dur>().unwrap().0, Duration::from_secs(2));
        assert_eq!("1m".parse::<Dur>().unwrap().0, Duration::from_secs(60));
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_secs(3600));
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!("0s".parse::<Dur>().unwrap().0, Duration::ZERO);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "s", "10", "5x", "-1s", "1e3s", "ms5", "1..2s"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_the_one_week_cap() {
        assert_eq!("168h".parse::<Dur>().unwrap().0, MAX_DURATION);
        let err = "169h".parse::<Dur>().unwrap_err();
        assert_eq!(
            err,
            DurationError::TooLong {
                input: "169h".to_owned()
            }
        );
        assert_eq!(
            err.field_message(),
            "must be at most 1 week (168h), got 169h"
        );
        assert_eq!(
            err.to_string(),
            r#"invalid duration "169h": at most 1 week (168h)"#
        );
    }

    #[test]
    fn displays_round_trip() {
        for s in ["250ms", "2s", "60s"] {
            assert_eq!(s.parse::<Dur>().unwrap().to_string(), s);
        }
    }
}
