//! Step builders, one file per step family. Each declares nothing about caching: the engine
//! does that; a builder only turns its inputs into outputs.

pub mod cluster;
pub mod configs;
pub mod discover;
pub mod dry;
pub mod patch;
pub mod secrets;

use std::sync::Arc;

use crate::engine::Builders;
use crate::secrets::LazyIdentities;

/// What builders may need from the session: the operator's identities (found lazily), and for
/// the cluster steps the shared lock file, the talosconfig and timing.
#[derive(Clone)]
pub struct StepEnv {
    pub identities: Arc<LazyIdentities>,
    pub cluster: Option<cluster::ClusterEnv>,
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
    b.register(
        "kubeconfig",
        Box::new(configs::KubeconfigBuilder {
            identities: env.identities.clone(),
        }),
    );
    b.register("render", Box::new(configs::RenderBuilder));
    if let Some(c) = &env.cluster {
        b.register("discover", Box::new(discover::DiscoverBuilder(c.clone())));
        b.register("apply", Box::new(cluster::ApplyBuilder(c.clone())));
        b.register("upgrade", Box::new(cluster::UpgradeBuilder(c.clone())));
        b.register("ready", Box::new(cluster::ReadyBuilder(c.clone())));
        b.register(
            "upgrade-k8s",
            Box::new(cluster::UpgradeK8sBuilder(c.clone())),
        );
        b.register("bootstrap", Box::new(cluster::BootstrapBuilder(c.clone())));
        b.register("health", Box::new(cluster::HealthBuilder(c.clone())));
        b.register("verify", Box::new(cluster::VerifyBuilder(c.clone())));
    }
    b
}
