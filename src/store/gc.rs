//! Garbage collection: which objects a set of roots keeps alive (each root's closure through
//! the manifests' dependency edges) and removing everything else, one object at a time.
//!
//! The roots themselves (the profiles' refs, pins, what lock files still need) are chosen by
//! the caller (`talix store gc`), which owns the filesystem questions; this module only walks
//! the store, so both backends share it and the conformance suite covers it.
//!
//! Invariants: an object reachable from a root is never removed; the walk refuses (removing
//! nothing) when a reachable object's manifest cannot be trusted, since its edges are unknown;
//! removal goes through [`Store::discard`], atomic per object; collecting twice frees nothing
//! the second time.

use std::collections::{BTreeMap, BTreeSet};

use super::{Manifest, Store, StoreError};
use crate::derivation::StepId;
use crate::digest::Digest;

/// A gc root: an object and why it is kept (`profile:homelab`, `pin:homelab/render/cp1`,
/// `lock:homelab`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Root {
    pub key: Digest,
    pub label: String,
}

/// Objects reachable from the roots, each with the labels of the roots that reach it. Keys of
/// absent objects a root names are included (nothing to keep, but `ls`/`verify` can say so).
pub type Reach = BTreeMap<Digest, BTreeSet<String>>;

/// Why a collection did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "store object {key} (reached from {label}) has a manifest that cannot be trusted, so what it depends on is unknown: {reason}\nnothing was removed\nhint: run `talix store verify --repair PROFILE` or `talix store prune`, then gc again"
    )]
    Untrusted {
        key: Digest,
        label: String,
        reason: String,
    },
}

/// One object gc removed (or would remove, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    pub key: Digest,
    /// From the manifest when it parses.
    pub step: Option<StepId>,
    pub profile: Option<String>,
    pub size: u64,
}

/// `(step, output, output hash) -> keys`: how a manifest written before `Manifest::deps`
/// existed finds the objects it was built from (by the output hashes its inputs record).
type LegacyIndex = BTreeMap<(String, String, Digest), Vec<Digest>>;

fn legacy_index(store: &dyn Store) -> Result<LegacyIndex, StoreError> {
    let mut index = LegacyIndex::new();
    for key in store.keys()? {
        if let Ok(Some(m)) = store.manifest(&key) {
            for (name, info) in &m.outputs {
                index
                    .entry((m.step.0.clone(), name.clone(), info.hash))
                    .or_default()
                    .push(key);
            }
        }
    }
    Ok(index)
}

/// The objects `m` was built from. `Manifest::deps` is not covered by the key, so a recorded
/// edge is followed only when its object is the step the inputs name with exactly the output
/// hashes the inputs (which the key covers) record; otherwise, and for manifests written before
/// talix recorded edges, every object holding those outputs is kept (conservative: with early
/// cut-off several objects can hold the same bytes).
fn edges(
    store: &dyn Store,
    m: &Manifest,
    legacy: &mut Option<LegacyIndex>,
) -> Result<Vec<Digest>, StoreError> {
    let mut wanted: BTreeMap<String, Vec<(String, Digest)>> = BTreeMap::new();
    for (name, hash) in &m.inputs.deps {
        if let Some((step, output)) = name.rsplit_once(':') {
            wanted
                .entry(step.to_string())
                .or_default()
                .push((output.to_string(), *hash));
        }
    }
    let mut out = Vec::new();
    for (step, outputs) in &wanted {
        let recorded = m.deps.get(&StepId(step.clone())).copied();
        let consistent = match recorded {
            Some(k) => match store.manifest(&k) {
                Ok(Some(dm)) => {
                    dm.step.as_str() == step
                        && outputs
                            .iter()
                            .all(|(o, h)| dm.outputs.get(o).is_some_and(|i| i.hash == *h))
                }
                Ok(None) => false,
                Err(e) if e.is_damage() => false,
                Err(e) => return Err(e),
            },
            None => false,
        };
        if consistent {
            out.extend(recorded);
            continue;
        }
        if legacy.is_none() {
            *legacy = Some(legacy_index(store)?);
        }
        let index = legacy.as_ref().expect("just built");
        for (output, hash) in outputs {
            if let Some(keys) = index.get(&(step.clone(), output.clone(), *hash)) {
                out.extend(keys);
            }
        }
        // A recorded edge that does not check out is still walked: keeping more is safe.
        out.extend(recorded);
    }
    // Edges to steps whose outputs the inputs do not name (none today): walked as recorded.
    out.extend(
        m.deps
            .iter()
            .filter(|(s, _)| !wanted.contains_key(s.as_str()))
            .map(|(_, k)| *k),
    );
    Ok(out)
}

/// Every object the roots reach, through [`Manifest::deps`].
pub fn reach(store: &dyn Store, roots: &[Root]) -> Result<Reach, GcError> {
    let mut reach = Reach::new();
    let mut legacy = None;
    for root in roots {
        let mut stack = vec![root.key];
        while let Some(key) = stack.pop() {
            if !reach.entry(key).or_default().insert(root.label.clone()) {
                continue; // already walked for this root
            }
            let m = match store.manifest(&key) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) if e.is_damage() => {
                    return Err(GcError::Untrusted {
                        key,
                        label: root.label.clone(),
                        reason: e.to_string().lines().next().unwrap_or_default().to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            stack.extend(edges(store, &m, &mut legacy)?);
        }
    }
    Ok(reach)
}

/// Remove (unless `dry_run`) every object `reach` does not hold, in key order. Call with the
/// writer lock held, with `reach` computed under the same lock.
pub fn collect(store: &dyn Store, reach: &Reach, dry_run: bool) -> Result<Vec<Freed>, StoreError> {
    let mut freed = Vec::new();
    for key in store.keys()? {
        if reach.contains_key(&key) {
            continue;
        }
        let Some(size) = store.stored_size(&key)? else {
            continue;
        };
        let m = store.load_manifest(&key).ok().flatten();
        if !dry_run {
            store.discard(&key)?;
        }
        freed.push(Freed {
            key,
            step: m.as_ref().map(|m| m.step.clone()),
            profile: m.map(|m| m.profile),
            size,
        });
    }
    Ok(freed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::conformance::manifest_for;

    /// Put `step` (value `v`) built from `deps`; `legacy` leaves `Manifest::deps` empty, as
    /// older talix wrote it (the inputs still name the deps' output hashes).
    fn put_with(
        store: &dyn Store,
        step: &str,
        v: &str,
        deps: &[&Manifest],
        legacy: bool,
    ) -> Manifest {
        let content = format!("{step} {v}\n");
        let (mut m, out) = manifest_for(step, v, &[("out", content.as_bytes())]);
        for d in deps {
            m.inputs
                .deps
                .insert(format!("{}:out", d.step), d.outputs["out"].hash);
            if !legacy {
                m.deps.insert(d.step.clone(), d.key);
            }
        }
        m.key = m.inputs.key();
        store.put(&m, &out).unwrap();
        m
    }

    /// A chain a <- b <- c, an unrelated d, and a legacy e built from a: rooting c keeps a, b,
    /// c; rooting e (legacy edges) keeps a; d goes; a dry run removes nothing; a second
    /// collection frees nothing; an untrusted reachable manifest stops gc before it removes
    /// anything.
    pub(crate) fn closures_are_kept_and_garbage_goes(store: &dyn Store) {
        let a = put_with(store, "secrets", "gc-a", &[], false);
        let b = put_with(store, "base-config", "gc-b", &[&a], false);
        let c = put_with(store, "render/cp1", "gc-c", &[&b], false);
        let d = put_with(store, "render/cp1", "gc-d", &[&b], false);
        let e = put_with(store, "talosconfig", "gc-e", &[&a], true);
        let roots = [
            Root {
                key: c.key,
                label: "profile:one".into(),
            },
            Root {
                key: e.key,
                label: "pin:two/talosconfig".into(),
            },
        ];
        let r = reach(store, &roots).unwrap();
        let labels = |k: &Digest| r.get(k).cloned().unwrap_or_default();
        assert_eq!(labels(&c.key), ["profile:one".to_string()].into());
        assert_eq!(labels(&b.key), ["profile:one".to_string()].into());
        assert_eq!(
            labels(&a.key),
            ["pin:two/talosconfig".to_string(), "profile:one".to_string()].into(),
            "a is in both closures (e's through its legacy inputs)"
        );
        assert!(!r.contains_key(&d.key), "d is reachable from no root");

        let before = store.keys().unwrap();
        let dry = collect(store, &r, true).unwrap();
        assert_eq!(store.keys().unwrap(), before, "a dry run removes nothing");
        assert!(
            dry.iter()
                .any(|f| f.key == d.key && f.step == Some(d.step.clone()))
        );
        assert!(dry.iter().all(|f| f.size > 0));
        for kept in [a.key, b.key, c.key, e.key] {
            assert!(!dry.iter().any(|f| f.key == kept), "{kept} is reachable");
        }
        let freed = collect(store, &r, false).unwrap();
        assert_eq!(freed, dry, "the dry run said exactly what goes");
        assert_eq!(store.manifest(&d.key).unwrap(), None);
        for kept in [a.key, b.key, c.key, e.key] {
            assert!(store.checked(&kept).unwrap().is_some());
        }
        assert!(
            collect(store, &r, false).unwrap().is_empty(),
            "second gc frees nothing"
        );

        // A recorded edge that does not match what the inputs name (a forged or stale `deps`):
        // the object holding the named outputs is kept all the same.
        let real = put_with(store, "secrets", "gc-real", &[], false);
        let decoy = put_with(store, "secrets", "gc-decoy", &[], false);
        let mut forged = put_with(store, "base-config", "gc-forged", &[&real], false);
        store.discard(&forged.key).unwrap();
        forged.deps.insert(real.step.clone(), decoy.key);
        store
            .put(
                &forged,
                &[("out".to_string(), b"base-config gc-forged\n".to_vec())].into(),
            )
            .unwrap();
        let r2 = reach(
            store,
            &[Root {
                key: forged.key,
                label: "pin:forged".into(),
            }],
        )
        .unwrap();
        assert!(
            r2.contains_key(&real.key),
            "the inputs' output hashes find the real dep"
        );
        for k in [real.key, decoy.key, forged.key] {
            store.discard(&k).unwrap();
        }

        // A reachable manifest that does not belong to its key: refuse, remove nothing.
        let (mut bad, out) = manifest_for("patch/x", "gc-bad", &[("out", b"x")]);
        bad.key = d.key; // stored under d's key, inputs hash elsewhere
        store.put(&bad, &out).unwrap();
        let orphan = put_with(store, "patch/y", "gc-orphan", &[], false);
        let mut bad_root = roots.to_vec();
        bad_root.push(Root {
            key: d.key,
            label: "pin:bad".into(),
        });
        let err = reach(store, &bad_root).unwrap_err().to_string();
        assert!(
            err.contains(&d.key.to_string()) && err.contains("pin:bad"),
            "{err}"
        );
        assert!(store.load_manifest(&orphan.key).unwrap().is_some());
        store.discard(&d.key).unwrap();
        store.discard(&orphan.key).unwrap();
    }
}
