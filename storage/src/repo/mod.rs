//! Typed repositories: the only code that knows the key layout. Every key is a FoundationDB
//! tuple under the deployment's root subspace:
//!
//! | repository | key | value |
//! |---|---|---|
//! | twins | `(root, "twin", thing, chunk)` | the twin's record (`Twin::encode`), split into 100 kB chunks |
//! | things | `(root, "thing", name)` | [`ThingRecord`] as JSON |
//! | types | `(root, "type", name)` | `DeviceType` as JSON |

pub mod blob;
mod records;
mod twins;

pub use records::{Keyed, Records, ThingRecord};
pub use twins::Twins;

use foundationdb_tuple::Subspace;
use twin_core::DeviceType;

/// The root subspace of a deployment that names none: the tuple `("doppel",)`.
pub fn default_root() -> Subspace {
    Subspace::all().subspace(&"doppel")
}

/// All repositories of one deployment.
#[derive(Clone, Debug)]
pub struct Repos {
    /// Twin state.
    pub twins: Twins,
    /// Registered things and their credentials.
    pub things: Records<ThingRecord>,
    /// Device types.
    pub types: Records<DeviceType>,
}

impl Repos {
    /// The repositories under `root`.
    pub fn new(root: &Subspace) -> Self {
        Self {
            twins: Twins::new(root.subspace(&"twin")),
            things: Records::new(root.subspace(&"thing")),
            types: Records::new(root.subspace(&"type")),
        }
    }
}

impl Default for Repos {
    fn default() -> Self {
        Self::new(&default_root())
    }
}
