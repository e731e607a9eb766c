//! `base-config` and `render/<node>`: machine configs made by talosctl from the decrypted secrets
//! bundle. Plaintext reaches talosctl only through pipes (`/dev/fd/N`), comes back on its
//! stdout, and is handed to the engine, which stores it age-encrypted. `talosconfig` and
//! `kubeconfig`: computed by talix itself from the bundle's CAs, deterministically (see
//! [`crate::clientcert`]), so they are pure and need neither talosctl nor a cluster.
//!
//! Traps of the hand-written runbook avoided here:
//! 1. pod/service subnets go in as a *strategic-merge* patch (JSON6902 fails on the
//!    multi-document configs of contract v1.12+);
//! 5. `--talos-version <contract>` is always passed, so a newer talosctl cannot silently change
//!    the config shape.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::derivation::Tool;
use crate::derivation::{InputValue, StepId};
use crate::digest::{Digest, domain};
use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::exec;
use crate::profile::{Contract, Profile, Role};
use crate::secrets::{LazyIdentities, SecretBytes, SecretPipe, decrypt_file};

/// First contract whose Kubernetes settings live in their own documents (`KubeNetworkConfig`).
pub const KUBE_DOCUMENTS_CONTRACT: Contract = Contract {
    major: 1,
    minor: 14,
};

/// Run talosctl with `secrets` attached as pipes; `args` gets the `/dev/fd/N` paths in order.
pub fn talosctl_with_secrets(
    cx: &BuildContext<'_>,
    secrets: Vec<SecretBytes>,
    args: impl FnOnce(&[String]) -> Vec<String>,
) -> Result<Vec<u8>, StepError> {
    let program = exec::locate(Tool::Talosctl).map_err(|e| cx.fail(e.to_string()))?;
    let mut cmd = Command::new(&program);
    let mut feeders = Vec::new();
    let mut paths = Vec::new();
    let mut keep = Vec::new();
    for secret in secrets {
        let (path, feeder) = SecretPipe::open(secret).map_err(|e| cx.fail(e.to_string()))?;
        keep.extend(feeder.child_fd());
        paths.push(path);
        feeders.push(feeder);
    }
    let argv = args(&paths);
    crate::steps::dry::record_local(&cx.step.id, &argv, &paths);
    cmd.args(&argv);
    // The base configs and everything of a control plane are on the bootstrap's critical path.
    let critical = cx.step.id.node().is_none_or(|name| {
        cx.profile
            .node(name)
            .is_some_and(|n| n.role == Role::Controlplane)
    });
    let _permit = exec::ProcessPermit::acquire_as(if critical {
        exec::Priority::Critical
    } else {
        exec::Priority::Normal
    });
    let child = exec::spawn_piped(&mut cmd, &keep)
        .map_err(|e| cx.fail(format!("could not start {}: {e}", program.display())))?;
    for f in &mut feeders {
        f.child_spawned();
    }
    let limit = exec::exec_timeout();
    let output = exec::child_output_within(child, limit);
    let output = output
        .map_err(|e| cx.fail(format!("{}: {e}", program.display())))?
        .ok_or_else(|| {
            cx.fail(format!(
                "{} did not finish within {limit:?} and was killed (TALIX_EXEC_TIMEOUT_S)",
                program.display()
            ))
        })?;
    for f in feeders {
        f.finish().map_err(|e| cx.fail(e.to_string()))?;
    }
    if !output.status.success() {
        return Err(cx.fail(format!(
            "talosctl {} failed ({}):\n{}",
            redact_inline(&argv).join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        )));
    }
    Ok(output.stdout)
}

/// Inline patches can be long; show only their first line in messages.
fn redact_inline(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            if a.contains('\n') {
                format!("'{}...'", a.lines().next().unwrap_or_default())
            } else {
                a.clone()
            }
        })
        .collect()
}

/// The decrypted bundle (the `secrets` step has already checked it).
/// The decrypted bundle, checked to be the one the `secrets` step hashed (the file may have been
/// edited since): a key never names content it was not made from.
fn bundle(cx: &BuildContext<'_>, identities: &LazyIdentities) -> Result<SecretBytes, StepError> {
    let ids = identities.get().map_err(|e| cx.fail(e))?;
    let bundle = decrypt_file(cx.profile.workspace.secrets_file(), ids)
        .map_err(|e| cx.fail(e.to_string()))?;
    let expected = cx.dep_output_hash(&crate::graph::secrets_id(), "bundle")?;
    if crate::secrets::bundle_hash(&bundle) != expected {
        return Err(cx.fail(format!(
            "{} changed while talix was running; run the command again",
            cx.profile.workspace.secrets_file().display()
        )));
    }
    Ok(bundle)
}

fn contract_of(cx: &BuildContext<'_>) -> Result<Contract, StepError> {
    cx.step
        .values
        .get("talos.contract")
        .map(|v| v.to_string())
        .ok_or_else(|| cx.fail("missing talos.contract input"))?
        .parse()
        .map_err(|e: String| cx.fail(e))
}

/// The strategic-merge patch carrying the pod and service subnets for `contract`.
pub fn subnets_patch(profile: &Profile, contract: Contract) -> String {
    let (pod, svc) = (profile.network.pod_cidr, profile.network.service_cidr);
    if contract >= KUBE_DOCUMENTS_CONTRACT {
        format!(
            "apiVersion: v1alpha1\nkind: KubeNetworkConfig\npodSubnets:\n  - {pod}\nserviceSubnets:\n  - {svc}\n"
        )
    } else {
        format!(
            "cluster:\n  network:\n    podSubnets:\n      - {pod}\n    serviceSubnets:\n      - {svc}\n"
        )
    }
}

fn gen_config_args(
    profile: &Profile,
    contract: Contract,
    secrets_path: &str,
    output_type: &str,
) -> Vec<String> {
    let t = &profile.talos;
    let mut args = vec![
        "gen".into(),
        "config".into(),
        profile.name.clone(),
        profile.cluster_endpoint(),
        "--with-secrets".into(),
        secrets_path.into(),
        "--talos-version".into(),
        contract.to_string(),
        "--kubernetes-version".into(),
        t.kubernetes_version.to_string(),
        "--install-image".into(),
        t.installer_image(),
        "--with-cluster-discovery=false".into(),
        "--with-docs=false".into(),
        "--with-examples=false".into(),
        "--config-patch".into(),
        subnets_patch(profile, contract),
        "-t".into(),
        output_type.into(),
        "-o".into(),
        "-".into(),
    ];
    if let Some(disk) = &t.install_disk {
        args.extend(["--install-disk".into(), disk.clone()]);
    }
    args
}

pub struct BaseConfigBuilder {
    pub identities: Arc<LazyIdentities>,
}

/// A talosctl older than the contract cannot write its configs: its generator has no switches
/// past its own release and silently writes its own layout (e.g. v1.11's single document for
/// `--talos-version v1.14`; `pkg/machinery/config/contract.go` at v1.11.6 knows nothing newer).
pub fn check_talosctl_for_contract(talosctl: &str, contract: Contract) -> Result<(), String> {
    let version = crate::exec::first_version(talosctl).unwrap_or_else(|| talosctl.to_string());
    let series: Option<Contract> = version
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .and_then(|v| v.parse::<crate::profile::model::Version>().ok())
        .map(|v| v.contract());
    match series {
        Some(series) if series < contract => Err(format!(
            "talosctl {version} cannot write configs of contract {contract}: it writes its own {series} layout instead; install talosctl {contract}.x or newer (TALIX_TALOSCTL names the one to use)"
        )),
        _ => Ok(()),
    }
}

impl Builder for BaseConfigBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let contract = contract_of(cx)?;
        let talosctl = cx
            .tools
            .get(crate::derivation::Tool::Talosctl)
            .map_err(|e| cx.fail(e))?;
        check_talosctl_for_contract(&talosctl, contract).map_err(|e| cx.fail(e))?;
        let bundle = bundle(cx, &self.identities)?;
        // Both roles at once: every node's render waits for these.
        let configs: Vec<(&str, Result<Vec<u8>, StepError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = [Role::Controlplane, Role::Worker]
                .into_iter()
                .map(|role| {
                    let kind = crate::graph::role_output(role);
                    let bundle = bundle.clone();
                    (
                        kind,
                        scope.spawn(move || {
                            talosctl_with_secrets(cx, vec![bundle], |fds| {
                                gen_config_args(cx.profile, contract, &fds[0], kind)
                            })
                        }),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(kind, h)| {
                    (
                        kind,
                        h.join()
                            .unwrap_or_else(|_| Err(cx.fail("gen config thread panicked"))),
                    )
                })
                .collect()
        });
        let mut out = BTreeMap::new();
        for (kind, config) in configs {
            out.insert(kind.to_string(), BuiltOutput::Content(config?));
        }
        Ok(out)
    }
}

pub struct TalosconfigBuilder {
    pub identities: Arc<LazyIdentities>,
}

/// `secrets.crt_ttl` as the step declared it.
fn crt_ttl_of(cx: &BuildContext<'_>) -> Result<time::Duration, StepError> {
    let text = cx
        .step
        .values
        .get("secrets.crt_ttl")
        .map(|v| v.to_string())
        .ok_or_else(|| cx.fail("missing secrets.crt_ttl input"))?;
    crate::clientcert::parse_ttl(&text).map_err(|e| cx.fail(e))
}

/// The client certificate of `purpose` derived from CA `which` of the bundle (pure: no clock,
/// no randomness, no talosctl; see [`crate::clientcert`]).
fn derived_client(
    cx: &BuildContext<'_>,
    identities: &LazyIdentities,
    which: &str,
    purpose: crate::clientcert::Purpose,
) -> Result<(crate::secrets::BundleCa, crate::clientcert::ClientCert), StepError> {
    let bundle = bundle(cx, identities)?;
    let shown = cx.profile.workspace.secrets_file().display().to_string();
    let ca =
        crate::secrets::bundle_ca(&bundle, which).map_err(|e| cx.fail(format!("{shown}: {e}")))?;
    let ttl = crt_ttl_of(cx)?;
    let id = crate::clientcert::Identity {
        cluster_name: &cx.profile.name,
        cluster_id: &ca.cluster_id,
    };
    let cert = crate::clientcert::issue(
        &format!("certs.{which}"),
        &ca.crt_pem,
        &ca.key_pem,
        purpose,
        &id,
        ttl,
    )
    .map_err(|e| cx.fail(format!("{shown}: {e}")))?;
    Ok((ca, cert))
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

impl Builder for TalosconfigBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let (ca, cert) = derived_client(
            cx,
            &self.identities,
            "os",
            crate::clientcert::Purpose::Talosconfig,
        )?;
        let text = talosconfig_text(cx.profile, &ca.crt_pem, &cert).map_err(|e| cx.fail(e))?;
        Ok([("talosconfig".to_string(), BuiltOutput::Content(text))].into())
    }
}

/// The talosconfig `talosctl gen config` writes (`clientconfig.NewConfig`,
/// pkg/machinery/client/config/config.go@v1.14.0-rc.1: one context named after the cluster,
/// `ca`/`crt`/`key` base64 of PEM), with runbook step 12 done natively: endpoints = control-plane
/// static IPs, nodes = every node IP.
pub fn talosconfig_text(
    profile: &Profile,
    ca_pem: &str,
    cert: &crate::clientcert::ClientCert,
) -> Result<Vec<u8>, String> {
    let cps: Vec<Value> = profile
        .controlplanes()
        .map(|n| Value::String(n.ip.to_string()))
        .collect();
    let nodes: Vec<Value> = profile
        .nodes
        .iter()
        .map(|n| Value::String(n.ip.to_string()))
        .collect();
    let mut ctx = serde_json::Map::new();
    ctx.insert("endpoints".into(), Value::Array(cps));
    ctx.insert("nodes".into(), Value::Array(nodes));
    ctx.insert("ca".into(), Value::String(b64(ca_pem)));
    ctx.insert("crt".into(), Value::String(b64(&cert.cert_pem)));
    ctx.insert("key".into(), Value::String(b64(&cert.key_pem)));
    let mut contexts = serde_json::Map::new();
    contexts.insert(profile.name.clone(), Value::Object(ctx));
    let mut doc = serde_json::Map::new();
    doc.insert("context".into(), Value::String(profile.name.clone()));
    doc.insert("contexts".into(), Value::Object(contexts));
    serde_saphyr::to_string(&Value::Object(doc))
        .map(String::into_bytes)
        .map_err(|e| e.to_string())
}

pub struct KubeconfigBuilder {
    pub identities: Arc<LazyIdentities>,
}

impl Builder for KubeconfigBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let (ca, cert) = derived_client(
            cx,
            &self.identities,
            "k8s",
            crate::clientcert::Purpose::Kubeconfig,
        )?;
        let text = kubeconfig_text(cx.profile, &ca.crt_pem, &cert).map_err(|e| cx.fail(e))?;
        Ok([("kubeconfig".to_string(), BuiltOutput::Content(text))].into())
    }
}

/// The admin kubeconfig as `talosctl kubeconfig` gets it from machined
/// (pkg/kubeconfig/generate.go@v1.14.0-rc.1 `Generate`: cluster `<name>` at the cluster
/// endpoint with the Kubernetes CA, user and context `admin@<name>`, namespace `default`),
/// written as clientcmd does (keys in sorted order).
pub fn kubeconfig_text(
    profile: &Profile,
    ca_pem: &str,
    cert: &crate::clientcert::ClientCert,
) -> Result<Vec<u8>, String> {
    let name = &profile.name;
    let user = format!("admin@{name}");
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": name,
            "cluster": {
                "server": profile.cluster_endpoint(),
                "certificate-authority-data": b64(ca_pem),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(&cert.cert_pem),
                "client-key-data": b64(&cert.key_pem),
            },
        }],
        "contexts": [{
            "name": user,
            "context": {"cluster": name, "namespace": "default", "user": user},
        }],
        "current-context": user,
        "preferences": {},
    });
    serde_saphyr::to_string(&doc)
        .map(String::into_bytes)
        .map_err(|e| e.to_string())
}

pub struct RenderBuilder;

impl Builder for RenderBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let node_name = cx
            .step
            .id
            .node()
            .ok_or_else(|| cx.fail("render step without a node"))?;
        let node = cx
            .profile
            .node(node_name)
            .ok_or_else(|| cx.fail(format!("no node {node_name}")))?;
        let role = crate::graph::role_output(node.role);
        let base = cx.dep_output(&crate::graph::base_config_id(), role)?;
        let patch = cx.dep_output(&StepId::new("patch", Some(node_name)), "patch")?;
        let patch_text =
            String::from_utf8(patch).map_err(|_| cx.fail("node patch is not UTF-8"))?;
        // User patches go to talosctl as the very bytes whose hashes are in the key (read once,
        // checked, piped), never as paths talosctl would read later.
        let mut inputs = vec![SecretBytes::new(base)];
        for (i, patch) in cx.profile.patches.for_node(node).into_iter().enumerate() {
            let bytes = fs_err::read(&patch.path).map_err(|e| cx.fail(e.to_string()))?;
            let hashed = Digest::of_domain(domain::FILE, &bytes);
            match cx.step.values.get(&format!("user_patch[{i}]")) {
                Some(InputValue::File { hash, .. }) if *hash == hashed => {}
                _ => {
                    return Err(cx.fail(format!(
                        "{} changed while talix was running; run the command again",
                        patch.path.display()
                    )));
                }
            }
            inputs.push(SecretBytes::new(bytes));
        }
        let config = talosctl_with_secrets(cx, inputs, |fds| {
            let mut args = vec![
                "machineconfig".to_string(),
                "patch".to_string(),
                fds[0].clone(),
                "-p".to_string(),
                patch_text.clone(),
            ];
            for fd in &fds[1..] {
                args.extend(["-p".to_string(), format!("@{fd}")]);
            }
            args
        })?;
        Ok([("config".to_string(), BuiltOutput::Content(config))].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_talosctl_is_refused_for_a_newer_contract() {
        let c14 = Contract {
            major: 1,
            minor: 14,
        };
        let c11 = Contract {
            major: 1,
            minor: 11,
        };
        let err = check_talosctl_for_contract("v1.11.5", c14).unwrap_err();
        assert!(
            err.contains("cannot write configs of contract v1.14"),
            "{err}"
        );
        check_talosctl_for_contract("v1.14.0", c14).unwrap();
        check_talosctl_for_contract("v1.14.0", c11).unwrap();
        check_talosctl_for_contract("v1.14.0-rc.1", c14).unwrap();
        assert!(check_talosctl_for_contract("v1.13.9", c14).is_err());
    }
}
