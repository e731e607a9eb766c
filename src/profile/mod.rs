//! Profiles: one YAML file per cluster, parsed strictly, validated with field paths and line
//! numbers, and resolved into the typed [`Profile`] the rest of talix reads.

pub mod locate;
pub mod model;
pub mod raw;
pub mod schema;
pub mod validate;

pub use crate::workspace::root_for as workspace_root;
pub use model::*;
pub use validate::{Finding, Loaded, ProfileError, load, load_with};
