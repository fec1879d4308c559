//! Identifiers: 32-byte ids printed as lowercase hex, accepted as any unique prefix.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a hex id or prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("'{0}' is not a hex id (expected 64 hex digits)")]
    NotHex(String),
    #[error("'{0}' is not a hex prefix")]
    BadPrefix(String),
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 12 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| IdError::NotHex(s.to_string()))?;
                Ok(Self(out))
            }
        }
    };
}

hex_id!(
    /// Id of a pinned object: BLAKE3 of a domain tag and the canonical manifest bytes.
    ObjectId
);
hex_id!(
    /// Id of a deal on the ledger.
    DealId
);

/// A lowercase hex prefix of an id, as typed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPrefix(String);

impl IdPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, id: &[u8; 32]) -> bool {
        hex::encode(id).starts_with(&self.0)
    }
}

impl FromStr for IdPrefix {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::BadPrefix(s));
        }
        Ok(Self(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_match_prefixes() {
        let id = ObjectId(*blake3::hash(b"x").as_bytes());
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ObjectId>().expect("hex"), id);
        assert!(text[..8]
            .parse::<IdPrefix>()
            .expect("prefix")
            .matches(&id.0));
        assert!(!"ffff0000"
            .parse::<IdPrefix>()
            .expect("prefix")
            .matches(&[0u8; 32]));
        assert!("xyz".parse::<IdPrefix>().is_err());
        assert!("abc".parse::<ObjectId>().is_err());
    }
}
