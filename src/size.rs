//! Sizes as people type them on a command line: `4KiB`, `64 MiB`, `1.5GiB`, `4096`,
//! `4KB`. The servers' flags (`--small-threshold`, `--cache-size`) and `cairn-bench load
//! --size` parse them; nothing else in cairn depends on this module.
//!
//! Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, decimal ones (`KB`,
//! `MB`, `GB`, `TB`) powers of 1000; a bare number or `B` is bytes. Units are matched
//! without regard to case and may follow the number after a space. A fraction is
//! accepted when it comes to a whole number of bytes (`1.5KiB` is 1536; `0.3KiB` is
//! refused rather than silently rounded). Bare `K`/`M`/`G` are refused: whether they
//! mean 1000 or 1024 is exactly the ambiguity a benchmark report must not have.
//!
//! Why not the `bytesize` crate: its parser goes through `f64` (a large size loses
//! bytes, `0.3KiB` is silently truncated to 307), takes bare `K` as 1000, and
//! reports errors as a `String`; its `Display` writes `4.0 KiB`, which would change
//! every size in the bench reports. This file is small and exact.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A number of bytes, parsed from text with units and shown with the largest binary
/// unit that divides it exactly (`4 KiB`, `1536 B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

/// Why a string is not a [`ByteSize`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadSize {
    /// Nothing was given.
    #[error("size is empty")]
    Empty,
    /// The text does not start with a number (`-1`, `KiB`, `1.2.3`).
    #[error("size {0:?} does not start with a number")]
    NoNumber(String),
    /// The unit after the number is not one of the known ones.
    #[error("size {text:?} has unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as given.
        unit: String,
    },
    /// A fraction that does not come to a whole number of bytes.
    #[error("size {0:?} is not a whole number of bytes")]
    Fractional(String),
    /// More than `u64::MAX` bytes.
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Unit spellings (lowercase) and their multipliers.
const UNITS: [(&str, u64); 10] = [
    ("", 1),
    ("b", 1),
    ("kib", KIB),
    ("mib", MIB),
    ("gib", GIB),
    ("tib", TIB),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = BadSize;

    fn from_str(text: &str) -> Result<Self, BadSize> {
        let s = text.trim();
        if s.is_empty() {
            return Err(BadSize::Empty);
        }
        let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(number_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(BadSize::NoNumber(text.to_string()));
        }
        let unit = unit.trim().to_ascii_lowercase();
        let multiplier = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| BadSize::UnknownUnit { text: text.to_string(), unit: unit.clone() })?;

        // Exact arithmetic in u128: mantissa × multiplier / 10^(fraction digits).
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let too_large = || BadSize::TooLarge(text.to_string());
        let mut mantissa: u128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            mantissa =
                mantissa.checked_mul(10).and_then(|m| m.checked_add(u128::from(digit - b'0'))).ok_or_else(too_large)?;
        }
        let scale =
            u32::try_from(frac.len()).ok().and_then(|digits| 10u128.checked_pow(digits)).ok_or_else(too_large)?;
        let scaled = mantissa.checked_mul(u128::from(multiplier)).ok_or_else(too_large)?;
        if scaled % scale != 0 {
            return Err(BadSize::Fractional(text.to_string()));
        }
        u64::try_from(scaled / scale).map(ByteSize).map_err(|_| too_large())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{} {unit}", n / size);
            }
        }
        write!(f, "{n} B")
    }
}
