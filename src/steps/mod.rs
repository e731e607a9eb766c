//! Step builders, one file per step family. Each declares nothing about caching: the engine
//! does that; a builder only turns its inputs into outputs.

pub mod patch;

use crate::engine::Builders;

/// The builders available in this build of talix.
pub fn builders() -> Builders {
    let mut b = Builders::default();
    b.register("patch", Box::new(patch::PatchBuilder));
    b
}

/// Whether this build of talix has a builder for `kind`.
pub fn has_builder(kind: &str) -> bool {
    matches!(kind, "patch")
}
