//! `discover`: finds the nodes that booted in maintenance mode on DHCP addresses and says which
//! is which (by MAC, from the profile or Proxmox). Its output maps node name -> maintenance
//! address; only nodes not yet configured are looked for.

use std::collections::BTreeMap;

use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::steps::cluster::ClusterEnv;

pub struct DiscoverBuilder(pub ClusterEnv);

impl Builder for DiscoverBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        Err(cx.fail("node discovery is not wired in yet"))
    }
}
