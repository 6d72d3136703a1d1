//! Opaque record ids: ULIDs made from the injected clock and random source, so they sort by
//! creation time and never carry personal data.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A 128-bit, time-ordered identifier, shown as 26 Crockford base-32 characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(ulid::Ulid);

impl Id {
    /// Builds an id from a creation time and 80 random bits.
    #[must_use]
    pub fn from_parts(at: Timestamp, random: [u8; 10]) -> Self {
        let mut wide = [0u8; 16];
        wide[6..].copy_from_slice(&random);
        let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
        Self(ulid::Ulid::from_parts(millis, u128::from_be_bytes(wide)))
    }

    /// The id as 16 big-endian bytes, the form used in store keys.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    #[must_use]
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(ulid::Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

/// The text was not a 26-character ULID.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid id (expected 26 characters of Crockford base 32)")]
pub struct InvalidId;

impl FromStr for Id {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s).map(Self).map_err(|_| InvalidId)
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let early = Id::from_parts(Timestamp::from_second(1_000).unwrap(), [9; 10]);
        let late = Id::from_parts(Timestamp::from_second(2_000).unwrap(), [0; 10]);
        assert!(early < late);
        let text = early.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<Id>().unwrap(), early);
        assert_eq!(Id::from_bytes(early.to_bytes()), early);
        assert!("not-an-id".parse::<Id>().is_err());
    }
}
