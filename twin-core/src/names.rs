//! Validated names of things, shadows and device types (AWS alphabet: `a-zA-Z0-9:_-`), safe to
//! use in MQTT topics and store keys.

use crate::error::TwinError;
use serde::{Deserialize, Serialize};
use std::{fmt, sync::Arc};

/// Longest thing or device type name.
pub const MAX_THING_NAME: usize = 128;
/// Longest named-shadow name.
pub const MAX_SHADOW_NAME: usize = 64;

fn check(kind: &'static str, name: &str, max: usize) -> Result<(), TwinError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TwinError::InvalidName {
            kind,
            name: name.chars().take(max + 8).collect(),
            max,
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates `name`.
            pub fn new(name: &str) -> Result<Self, TwinError> {
                check($kind, name, $max)?;
                Ok(Self(Arc::from(name)))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = TwinError;
            fn try_from(name: String) -> Result<Self, TwinError> {
                Self::new(&name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0.to_string()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a registered thing (device); also its MQTT client id and username.
    ThingName,
    "thing",
    MAX_THING_NAME
);
name_type!(
    /// The name of a device type.
    TypeName,
    "type",
    MAX_THING_NAME
);

/// A shadow of a twin: the classic (unnamed) shadow or a named one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShadowName(Option<Arc<str>>);

impl ShadowName {
    /// The classic shadow.
    pub const CLASSIC: ShadowName = ShadowName(None);

    /// A named shadow; validates `name`.
    pub fn named(name: &str) -> Result<Self, TwinError> {
        check("shadow", name, MAX_SHADOW_NAME)?;
        Ok(Self(Some(Arc::from(name))))
    }

    /// `None` for the classic shadow, the name otherwise.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether this is the classic shadow.
    pub fn is_classic(&self) -> bool {
        self.0.is_none()
    }
}

impl TryFrom<String> for ShadowName {
    type Error = TwinError;
    fn try_from(name: String) -> Result<Self, TwinError> {
        if name.is_empty() {
            Ok(Self::CLASSIC)
        } else {
            Self::named(&name)
        }
    }
}

impl From<ShadowName> for String {
    fn from(name: ShadowName) -> String {
        name.0.map(|n| n.to_string()).unwrap_or_default()
    }
}

impl fmt::Debug for ShadowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("classic"),
            Some(n) => fmt::Debug::fmt(&**n, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_the_aws_alphabet() {
        for ok in ["pump-7", "a", "A:b_c-9", &"x".repeat(128)] {
            assert!(ThingName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a+b", "a#", "a b", "ä", "$aws", &"x".repeat(129)] {
            assert!(ThingName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shadow_names_are_at_most_64_characters() {
        assert!(ShadowName::named(&"s".repeat(64)).is_ok());
        assert!(ShadowName::named(&"s".repeat(65)).is_err());
        assert!(ShadowName::named("").is_err());
        assert_eq!(
            ShadowName::try_from(String::new()).unwrap(),
            ShadowName::CLASSIC
        );
    }

    #[test]
    fn names_round_trip_through_serde_and_reject_bad_input() {
        let name: ThingName = serde_json::from_str("\"pump-7\"").unwrap();
        assert_eq!(name.as_str(), "pump-7");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"pump-7\"");
        assert!(serde_json::from_str::<ThingName>("\"a/b\"").is_err());
    }
}
