//! Step builders, one file per step family. Each declares nothing about caching: the engine
//! does that; a builder only turns its inputs into outputs.

pub mod configs;
pub mod patch;
pub mod secrets;

use std::sync::Arc;

use crate::engine::Builders;
use crate::secrets::LazyIdentities;

/// What builders may need from the session: the operator's identities (found lazily).
#[derive(Clone)]
pub struct StepEnv {
    pub identities: Arc<LazyIdentities>,
}

/// The builders available in this build of talix.
pub fn builders(env: &StepEnv) -> Builders {
    let mut b = Builders::default();
    b.register("patch", Box::new(patch::PatchBuilder));
    b.register(
        "secrets",
        Box::new(secrets::SecretsBuilder {
            identities: env.identities.clone(),
        }),
    );
    b.register(
        "base-config",
        Box::new(configs::BaseConfigBuilder {
            identities: env.identities.clone(),
        }),
    );
    b.register(
        "talosconfig",
        Box::new(configs::TalosconfigBuilder {
            identities: env.identities.clone(),
        }),
    );
    b.register("render", Box::new(configs::RenderBuilder));
    b
}

/// Whether this build of talix has a builder for `kind`.
pub fn has_builder(kind: &str) -> bool {
    matches!(
        kind,
        "patch" | "secrets" | "base-config" | "talosconfig" | "render"
    )
}
