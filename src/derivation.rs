//! Derivations: what a step reads, declared as data. A step's key is blake3 over a canonical,
//! versioned encoding of exactly these inputs, so "did anything this step uses change?" is a
//! key comparison, and "what changed?" is a diff of two [`DrvInputs`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{Digest, domain};

/// Version of the key encoding. Bump it when [`DrvInputs`]' encoding changes meaning; every key
/// changes with it.
pub const KEY_FORMAT: &str = "talix-drv/1";

/// A stable step id: `secrets`, `render/cp1`, ... (per-node steps end in `/<node>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(pub String);

impl StepId {
    pub fn new(kind: &str, node: Option<&str>) -> Self {
        match node {
            Some(n) => Self(format!("{kind}/{n}")),
            None => Self(kind.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The step kind: the part before `/`.
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
    /// The node of a per-node step.
    pub fn node(&self) -> Option<&str> {
        self.0.split_once('/').map(|(_, n)| n)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One input value. Secret inputs exist only as hashes: the key, the manifest, `plan` and `why`
/// never see their content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum InputValue {
    /// A plain value from the profile (or derived from it).
    Value(Value),
    /// A secret, by its domain-separated blake3 hash.
    SecretHash(Digest),
    /// A file, by content hash, with its path for humans.
    File { path: String, hash: Digest },
}

impl InputValue {
    pub fn of(v: impl Serialize) -> Self {
        Self::Value(serde_json::to_value(v).expect("profile values serialise"))
    }
}

impl fmt::Display for InputValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputValue::Value(Value::String(s)) => f.write_str(s),
            InputValue::Value(Value::Null) => f.write_str("(unset)"),
            InputValue::Value(v) => write!(f, "{v}"),
            InputValue::SecretHash(d) => write!(f, "secret:{}", d.short()),
            InputValue::File { path, hash } => write!(f, "{path} ({})", hash.short()),
        }
    }
}

/// Everything a derivation's key covers, as a printable, serialisable struct with sorted maps.
///
/// Invariants: maps are `BTreeMap`s (so map order never reaches the key); `deps` holds upstream
/// *output* hashes, not upstream keys (early cut-off: an upstream that re-runs and yields
/// identical bytes leaves this struct, and so the key, unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrvInputs {
    pub format: String,
    /// The step kind (`render`) and the version of its builder's behaviour.
    pub kind: String,
    pub schema: u32,
    /// Profile-derived inputs by name (`talos.version`, `node.ip`, ...).
    pub values: BTreeMap<String, InputValue>,
    /// Output hashes of upstream steps: `"base-config:controlplane" -> hash`.
    pub deps: BTreeMap<String, Digest>,
    /// External tools by name with their version (`talosctl -> v1.11.5`).
    pub tools: BTreeMap<String, String>,
}

impl DrvInputs {
    /// The derivation key: blake3 (derive-key mode, derivation domain) over canonical JSON.
    pub fn key(&self) -> Digest {
        let canonical = serde_json::to_vec(self).expect("inputs serialise");
        Digest::of_domain(domain::DERIVATION, &canonical)
    }

    /// All inputs flattened to `name -> printable value`, for diffs and `why`.
    pub fn flat(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(
            "step schema".to_string(),
            format!("{}#{}", self.kind, self.schema),
        );
        for (k, v) in &self.values {
            out.insert(k.clone(), v.to_string());
        }
        for (k, v) in &self.deps {
            out.insert(format!("output of {k}"), v.short());
        }
        for (k, v) in &self.tools {
            out.insert(format!("tool {k}"), v.clone());
        }
        out
    }

    /// What changed from `old` to `self`, one entry per input, sorted by name.
    pub fn diff(&self, old: &DrvInputs) -> Vec<Change> {
        let (new, old) = (self.flat(), old.flat());
        let mut names: Vec<&String> = new.keys().chain(old.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let (o, n) = (old.get(name), new.get(name));
                (o != n).then(|| Change {
                    input: name.clone(),
                    old: o.cloned(),
                    new: n.cloned(),
                })
            })
            .collect()
    }
}

/// One changed input between two realisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub input: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());
        write!(
            f,
            "{} {} -> {}",
            self.input,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// How a step touches the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Output depends only on inputs: cached by key.
    Pure,
    /// Observes the world (a network scan): cached like a pure step for `plan`, but `up`
    /// forces a fresh observation whenever a step that needs it must run.
    Observe,
    /// Changes the world (apply, bootstrap): leaves a receipt keyed like a pure output, so an
    /// unchanged step is never repeated.
    SideEffect,
}

/// An external program a step runs; its version is part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Talosctl,
    Kubectl,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Talosctl => "talosctl",
            Tool::Kubectl => "kubectl",
        }
    }
}

/// How much of a tool's version a key covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolPin {
    Exact,
    Series,
}

impl ToolPin {
    /// `v1.11.5` -> `v1.11` for [`ToolPin::Series`].
    pub fn apply(self, version: &str) -> String {
        match self {
            ToolPin::Exact => version.to_string(),
            ToolPin::Series => {
                let parts: Vec<&str> = version.splitn(3, '.').collect();
                if parts.len() == 3 {
                    format!("{}.{}", parts[0], parts[1])
                } else {
                    version.to_string()
                }
            }
        }
    }
}

/// A dependency edge: the step, and which of its outputs feed this one (empty = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub step: StepId,
    pub outputs: Vec<&'static str>,
}

/// A step declaration: everything the engine needs to hash, cache, explain and run it.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: StepId,
    pub schema: u32,
    pub values: BTreeMap<String, InputValue>,
    pub deps: Vec<Dep>,
    /// Tools it runs; with `series_only`, only the tool's major.minor enters the key.
    pub tools: Vec<(Tool, ToolPin)>,
    /// Outputs are secret: stored age-encrypted, shown only as hashes.
    pub secret: bool,
    pub effect: Effect,
    /// Ordering-only edges: steps that must have finished before this one starts (when they
    /// are part of the same run), without their outputs entering this step's key. For
    /// observations read through `latest_output` (apply after discover) and for the runbook's
    /// order where no output flows (bootstrap after the first control plane is ready).
    pub after: Vec<StepId>,
    /// A side effect that looks before it acts (a readiness wait, a health check, an upgrade
    /// that first asks the running version), so running it again after its receipt was lost
    /// changes nothing. Its receipt is not synced to disk, and a damaged one is rebuilt like a
    /// pure step's object. Not part of the key. Never set on `apply` or `bootstrap`: their
    /// receipts are what keeps a re-run from repeating them.
    pub replayable: bool,
}

impl Step {
    pub fn new(id: StepId, schema: u32, effect: Effect) -> Self {
        Self {
            id,
            schema,
            values: BTreeMap::new(),
            deps: vec![],
            tools: vec![],
            secret: false,
            effect,
            after: vec![],
            replayable: false,
        }
    }
    pub fn value(mut self, name: &str, v: impl Serialize) -> Self {
        self.values.insert(name.to_string(), InputValue::of(v));
        self
    }
    pub fn input(mut self, name: &str, v: InputValue) -> Self {
        self.values.insert(name.to_string(), v);
        self
    }
    pub fn dep(mut self, step: StepId, outputs: &[&'static str]) -> Self {
        self.deps.push(Dep {
            step,
            outputs: outputs.to_vec(),
        });
        self
    }
    /// The step runs `tool`; its exact version is part of the key.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push((tool, ToolPin::Exact));
        self
    }
    /// The step runs `tool`, but only its release series (major.minor) is part of the key: for
    /// steps whose output a patch release does not change (so a talosctl patch bump re-runs
    /// `base-config`, and renders are kept when its output is byte-identical: early cut-off).
    pub fn tool_series(mut self, tool: Tool) -> Self {
        self.tools.push((tool, ToolPin::Series));
        self
    }
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    /// Run only after `step` has finished (when it is part of the run); not part of the key.
    pub fn after(mut self, step: StepId) -> Self {
        self.after.push(step);
        self
    }
    /// See [`Step::replayable`].
    pub fn replayable(mut self) -> Self {
        debug_assert_eq!(
            self.effect,
            Effect::SideEffect,
            "only receipts are replayable"
        );
        self.replayable = true;
        self
    }
    /// How much this step's stored object must survive a power loss.
    pub fn durability(&self) -> crate::store::Durability {
        if self.effect == Effect::SideEffect && !self.replayable {
            crate::store::Durability::Synced
        } else {
            crate::store::Durability::Relaxed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(values: &[(&str, &str)]) -> DrvInputs {
        DrvInputs {
            format: KEY_FORMAT.into(),
            kind: "render".into(),
            schema: 1,
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), InputValue::of(v)))
                .collect(),
            deps: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }

    #[test]
    fn key_is_independent_of_insertion_order() {
        let a = inputs(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let b = inputs(&[("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn key_is_stable_across_runs() {
        // A fixed vector: if this changes, every store key changes; bump KEY_FORMAT on purpose.
        let k = inputs(&[("talos.version", "v1.11.5")]).key();
        assert_eq!(
            k.to_string(),
            "b3dbe3df3ccf19ec941c9d7b50d9cb483a4a13879a059cd48a795c99252c4005"
        );
    }

    #[test]
    fn key_changes_with_any_input() {
        let base = inputs(&[("a", "1")]);
        let mut other = base.clone();
        other.schema = 2;
        assert_ne!(base.key(), other.key());
        let mut other = base.clone();
        other.tools.insert("talosctl".into(), "v1.11.5".into());
        assert_ne!(base.key(), other.key());
        assert_ne!(base.key(), inputs(&[("a", "2")]).key());
    }

    #[test]
    fn diff_names_old_and_new() {
        let old = inputs(&[("talos.version", "v1.11.5"), ("gone", "x")]);
        let new = inputs(&[("talos.version", "v1.11.6")]);
        let d: Vec<String> = new.diff(&old).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            d,
            vec!["gone x -> (none)", "talos.version v1.11.5 -> v1.11.6"]
        );
    }

    #[test]
    fn secret_inputs_print_as_hashes() {
        let d = Digest::of_domain(domain::SECRETS_BUNDLE, b"top secret");
        let v = InputValue::SecretHash(d);
        assert_eq!(v.to_string(), format!("secret:{}", d.short()));
        assert!(!serde_json::to_string(&v).unwrap().contains("top secret"));
    }
}
