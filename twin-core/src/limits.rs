//! Bounds every twin enforces: document size and depth, the client-token window, shadow counts.

use crate::error::TwinError;
use serde::{Deserialize, Serialize};

/// Longest `clientToken`, in bytes (AWS).
pub const MAX_CLIENT_TOKEN: usize = 64;
/// The largest state size limit that may be configured.
pub const MAX_STATE_BYTES_CEILING: usize = 64 * 1024;
/// The largest telemetry sample size limit that may be configured (well under the store's
/// 100,000-byte value limit: a sample is stored as one value).
pub const MAX_SAMPLE_BYTES_CEILING: usize = 64 * 1024;
/// How long a deleted shadow's version is remembered (AWS: 48 hours).
pub const TOMBSTONE_MS: u64 = 48 * 3600 * 1000;

/// Per-twin limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest merged state (`desired` + `reported` as compact JSON), in bytes.
    pub max_state_bytes: usize,
    /// Deepest nesting of objects and arrays inside `desired` or `reported`.
    pub max_depth: usize,
    /// Named shadows per twin.
    pub max_named_shadows: usize,
    /// Accepted replies remembered per shadow, to answer a retried `clientToken`.
    pub token_window: usize,
    /// How long an accepted reply is remembered, in milliseconds.
    pub token_ttl_ms: u64,
    /// Largest telemetry sample (its fields as compact JSON, `ts` excluded), in bytes.
    pub max_sample_bytes: usize,
    /// How far ahead of the server's clock a device time (`ts`) may be, in milliseconds.
    pub max_clock_skew_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_state_bytes: 8 * 1024,
            max_depth: 6,
            max_named_shadows: 10,
            token_window: 16,
            token_ttl_ms: 10 * 60 * 1000,
            max_sample_bytes: 16 * 1024,
            max_clock_skew_ms: 5 * 60 * 1000,
        }
    }
}

impl Limits {
    /// Checks that every limit is within its allowed range.
    pub fn validate(&self) -> Result<(), TwinError> {
        let bad = |name, message: &str| {
            Err(TwinError::InvalidLimit {
                name,
                message: message.to_owned(),
            })
        };
        if self.max_state_bytes == 0 || self.max_state_bytes > MAX_STATE_BYTES_CEILING {
            return bad("max_state_bytes", "must be between 1 and 65536");
        }
        if !(1..=32).contains(&self.max_depth) {
            return bad("max_depth", "must be between 1 and 32");
        }
        if self.token_window > 1024 {
            return bad("token_window", "must be at most 1024");
        }
        if self.max_sample_bytes == 0 || self.max_sample_bytes > MAX_SAMPLE_BYTES_CEILING {
            return bad("max_sample_bytes", "must be between 1 and 65536");
        }
        if self.max_clock_skew_ms > 24 * 3600 * 1000 {
            return bad("max_clock_skew_ms", "must be at most a day (86400000)");
        }
        if self.max_named_shadows > 1000 {
            return bad("max_named_shadows", "must be at most 1000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let l = Limits::default();
        assert_eq!((l.max_state_bytes, l.max_depth), (8192, 6));
        assert!(l.validate().is_ok());
    }

    #[test]
    fn state_size_is_configurable_up_to_64_kib() {
        let mut l = Limits {
            max_state_bytes: 65536,
            ..Limits::default()
        };
        assert!(l.validate().is_ok());
        l.max_state_bytes = 65537;
        assert!(l.validate().is_err());
        l.max_state_bytes = 0;
        assert!(l.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<Limits>(r#"{"max_depth": 4}"#).is_ok());
        assert!(serde_json::from_str::<Limits>(r#"{"max_deep": 4}"#).is_err());
    }
}
