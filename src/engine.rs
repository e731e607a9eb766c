//! The engine: walks a profile's steps in order, computes each key from its inputs and its
//! upstream *output* hashes, and either finds the object in the store (cached), explains why it
//! must run (plan), or runs its builder and stores the result atomically (realise).
//!
//! A later step only declares itself (graph.rs) and registers a [`Builder`]; hashing, caching,
//! receipts, encryption of secret outputs, locking and explanation all live here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use serde::Serialize;

use crate::derivation::{Change, DrvInputs, Effect, KEY_FORMAT, Step, StepId};
use crate::digest::Digest;
use crate::exec::ToolVersions;
use crate::profile::Profile;
use crate::store::{LAYOUT_VERSION, Manifest, Store, StoreError, now_rfc3339, output_info};

/// What `plan` says about one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum Status {
    /// Its object is in the store.
    Cached,
    /// It must run; `changes` is empty for a step never built before.
    Run { changes: Vec<Change>, new: bool },
    /// Its key cannot be known until these upstream steps run.
    Blocked { waits_for: Vec<StepId> },
}

impl Status {
    pub fn word(&self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Run { .. } => "run",
            Status::Blocked { .. } => "blocked",
        }
    }
    /// One-line reason.
    pub fn reason(&self) -> String {
        match self {
            Status::Cached => String::new(),
            Status::Run { new: true, .. } => "new".to_string(),
            Status::Run { changes, .. } => changes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            Status::Blocked { waits_for } => {
                format!(
                    "waits for {}",
                    waits_for
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub step: Step,
    pub status: Status,
    pub key: Option<Digest>,
    pub inputs: Option<DrvInputs>,
    /// Output hashes when known (cached or realised).
    pub outputs: Option<BTreeMap<String, Digest>>,
}

/// A builder's result: outputs by name. `Hash` outputs record only an identity (the secrets
/// bundle: its plaintext is never stored).
pub enum BuiltOutput {
    Content(Vec<u8>),
    HashOnly(Digest),
}

/// Failures of a builder, with a message for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct StepError {
    pub step: StepId,
    pub message: String,
}

/// Engine failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("{step}: no builder for steps of kind {kind:?} yet")]
    NoBuilder { step: StepId, kind: String },
    #[error("{step}: {message}")]
    Cipher { step: StepId, message: String },
    /// More than one step failed (each independently of the others).
    #[error("{} steps failed:\n{}", .0.len(), .0.iter().map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n"))]
    Several(Vec<EngineError>),
}

impl EngineError {
    /// The steps that failed, one entry per failure (several for [`EngineError::Several`]).
    pub fn failures(&self) -> Vec<&EngineError> {
        match self {
            EngineError::Several(all) => all.iter().flat_map(|e| e.failures()).collect(),
            other => vec![other],
        }
    }
}

/// Encrypts secret outputs for the store and decrypts them for dependants.
pub trait ObjectCipher: Send + Sync {
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, String>;
    fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, String>;
}

/// What a builder can read while it runs.
pub struct BuildContext<'a> {
    pub step: &'a Step,
    pub profile: &'a Profile,
    pub tools: &'a ToolVersions,
    store: &'a dyn Store,
    cipher: Option<&'a dyn ObjectCipher>,
    dep_keys: &'a BTreeMap<StepId, Digest>,
    observed: &'a BTreeMap<StepId, BTreeMap<String, Vec<u8>>>,
}

impl BuildContext<'_> {
    /// The latest output of `step` for this profile: a fresh observation made in this run, else
    /// the step's last realisation in the store. For ordering-only inputs such as the
    /// discovery result, which are not part of the key.
    pub fn latest_output(&self, step: &StepId, output: &str) -> Result<Vec<u8>, StepError> {
        if let Some(bytes) = self.observed.get(step).and_then(|o| o.get(output)) {
            return Ok(bytes.clone());
        }
        let key = self
            .store
            .get_ref(&self.profile.name, step)
            .map_err(|e| self.fail(e.to_string()))?
            .ok_or_else(|| self.fail(format!("{step} has not run yet")))?;
        self.plaintext(step, &key, output)
    }

    /// The recorded hash of an upstream output (for hash-only outputs such as the bundle).
    pub fn dep_output_hash(&self, step: &StepId, output: &str) -> Result<Digest, StepError> {
        let manifest = self.dep_manifest(step)?;
        manifest
            .outputs
            .get(output)
            .map(|o| o.hash)
            .ok_or_else(|| self.fail(format!("{step} has no output {output}")))
    }

    /// The plaintext of an upstream output (decrypted if the upstream is secret).
    pub fn dep_output(&self, step: &StepId, output: &str) -> Result<Vec<u8>, StepError> {
        let key = *self
            .dep_keys
            .get(step)
            .ok_or_else(|| self.fail(format!("{step} is not an input of this step")))?;
        self.plaintext(step, &key, output)
    }

    fn dep_manifest(&self, step: &StepId) -> Result<crate::store::Manifest, StepError> {
        let key = *self
            .dep_keys
            .get(step)
            .ok_or_else(|| self.fail(format!("{step} is not an input of this step")))?;
        let manifest = self
            .store
            .manifest(&key)
            .map_err(|e| self.fail(e.to_string()))?
            .ok_or_else(|| self.fail(format!("{step} is not in the store")))?;
        Ok(manifest)
    }

    /// Output `output` of object `key` (made by `step`), decrypted when it is secret.
    fn plaintext(&self, step: &StepId, key: &Digest, output: &str) -> Result<Vec<u8>, StepError> {
        read_plain(self.store, self.cipher, key, output)
            .map_err(|e| self.fail(format!("{step}: {e}")))
    }

    pub fn fail(&self, message: impl Into<String>) -> StepError {
        StepError {
            step: self.step.id.clone(),
            message: message.into(),
        }
    }
}

/// Output `output` of object `key` as plaintext: decrypted when the object is secret. The one
/// way builders and commands read outputs back.
pub fn read_plain(
    store: &dyn Store,
    cipher: Option<&dyn ObjectCipher>,
    key: &Digest,
    output: &str,
) -> Result<Vec<u8>, String> {
    let manifest = store
        .manifest(key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("object {key} is not in the store"))?;
    let info = manifest
        .outputs
        .get(output)
        .ok_or_else(|| format!("object {key} has no output {output}"))?;
    // Verified against the manifest by the store (see `Store::read_output`).
    let stored = store.read_output(key, output).map_err(|e| e.to_string())?;
    if !info.encrypted {
        return Ok(stored);
    }
    let plain = cipher
        .ok_or("no age identity to decrypt secret outputs")?
        .decrypt(&stored)?;
    if Digest::of_domain(crate::digest::domain::OBJECT, &plain) != info.hash {
        return Err(StoreError::Damaged {
            key: *key,
            step: Some(manifest.step.clone()),
            reason: format!("output {output} decrypts to content that does not match its hash"),
        }
        .to_string());
    }
    Ok(plain)
}

/// Runs one kind of step.
pub trait Builder: Send + Sync {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError>;
}

/// Builders by step kind.
#[derive(Default)]
pub struct Builders {
    by_kind: BTreeMap<String, Box<dyn Builder>>,
}

impl Builders {
    pub fn register(&mut self, kind: &str, builder: Box<dyn Builder>) {
        self.by_kind.insert(kind.to_string(), builder);
    }
    fn get(&self, kind: &str) -> Option<&dyn Builder> {
        self.by_kind.get(kind).map(|b| b.as_ref())
    }
}

/// What happened to one step during realisation.
#[derive(Debug, Clone, Serialize)]
pub struct Realised {
    pub id: StepId,
    pub ran: bool,
    pub key: Digest,
    pub duration_ms: u64,
}

pub struct Engine<'a> {
    pub profile: &'a Profile,
    pub store: &'a dyn Store,
    pub tools: &'a ToolVersions,
    pub cipher: Option<&'a dyn ObjectCipher>,
}

impl<'a> Engine<'a> {
    fn inputs_for(
        &self,
        step: &Step,
        known: &BTreeMap<StepId, BTreeMap<String, Digest>>,
    ) -> Result<DrvInputs, Vec<StepId>> {
        let mut deps = BTreeMap::new();
        let mut missing = Vec::new();
        for dep in &step.deps {
            match known.get(&dep.step) {
                Some(outputs) => {
                    for (name, hash) in outputs {
                        if dep.outputs.is_empty() || dep.outputs.contains(&name.as_str()) {
                            deps.insert(format!("{}:{name}", dep.step), *hash);
                        }
                    }
                }
                None => missing.push(dep.step.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let tools = step
            .tools
            .iter()
            .map(|(t, pin)| {
                let version = self
                    .tools
                    .get(*t)
                    .map(|v| pin.apply(&v))
                    .unwrap_or_else(|_| "unavailable".to_string());
                let name = match pin {
                    crate::derivation::ToolPin::Exact => t.name().to_string(),
                    crate::derivation::ToolPin::Series => format!("{} series", t.name()),
                };
                (name, version)
            })
            .collect();
        Ok(DrvInputs {
            format: KEY_FORMAT.into(),
            kind: step.id.kind().into(),
            schema: step.schema,
            values: step.values.clone(),
            deps,
            tools,
        })
    }

    /// The object under `key` when it can be used as it is: every stored output checked
    /// against its manifest. A damaged object of a pure step or a damaged receipt of a
    /// replayable one is a miss (`rebuild` discards it first, as does a step that runs
    /// anyway); for other steps it is an error naming the object and the repair command.
    fn cached(
        &self,
        step: &Step,
        key: &Digest,
        runs_anyway: bool,
        rebuild: bool,
    ) -> Result<Option<Manifest>, StoreError> {
        match self.store.checked(key) {
            Ok(m) => Ok(m),
            Err(e)
                if e.is_damage()
                    && (step.effect == Effect::Pure || step.replayable || runs_anyway) =>
            {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default();
                if rebuild {
                    eprintln!("warning: {first}; rebuilding it");
                    self.store.discard(key)?;
                } else {
                    eprintln!("warning: {first}; the next build rebuilds it");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn status_for_miss(&self, step: &Step, inputs: &DrvInputs) -> Result<Status, StoreError> {
        let previous = match self.store.get_ref(&self.profile.name, &step.id)? {
            // A damaged previous realisation only loses the explanation.
            Some(k) => match self.store.manifest(&k) {
                Ok(m) => m,
                Err(e) if e.is_damage() => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        Ok(match previous {
            Some(m) => Status::Run {
                changes: inputs.diff(&m.inputs),
                new: false,
            },
            None => Status::Run {
                changes: vec![],
                new: true,
            },
        })
    }

    /// Explain every step without changing anything.
    pub fn plan(&self, steps: &[Step]) -> Result<Vec<Planned>, StoreError> {
        let mut known: BTreeMap<StepId, BTreeMap<String, Digest>> = BTreeMap::new();
        let mut out = Vec::new();
        for step in steps {
            let planned = match self.inputs_for(step, &known) {
                Err(waits_for) => Planned {
                    step: step.clone(),
                    status: Status::Blocked { waits_for },
                    key: None,
                    inputs: None,
                    outputs: None,
                },
                Ok(inputs) => {
                    let key = inputs.key();
                    match self.cached(step, &key, false, false)? {
                        Some(m) => {
                            let outputs = m.output_hashes();
                            known.insert(step.id.clone(), outputs.clone());
                            Planned {
                                step: step.clone(),
                                status: Status::Cached,
                                key: Some(key),
                                inputs: Some(inputs),
                                outputs: Some(outputs),
                            }
                        }
                        None => {
                            let status = self.status_for_miss(step, &inputs)?;
                            Planned {
                                step: step.clone(),
                                status,
                                key: Some(key),
                                inputs: Some(inputs),
                                outputs: None,
                            }
                        }
                    }
                }
            };
            out.push(planned);
        }
        Ok(out)
    }

    /// Realise `steps` in order (the caller holds the store's writer lock): cached steps are
    /// reused, the others built and stored. `report` is told about each step as it finishes.
    pub fn realise(
        &self,
        steps: &[Step],
        builders: &Builders,
        report: impl FnMut(&Realised, &Status),
    ) -> Result<Vec<Realised>, EngineError> {
        self.realise_forcing(steps, builders, &std::collections::BTreeSet::new(), report)
    }

    /// Like [`Engine::realise`], but the steps in `force` run even when their object exists
    /// (observations such as a network scan). A forced step whose key is already stored keeps
    /// its stored object (objects are immutable); its fresh outputs are handed to later steps of
    /// this run through [`BuildContext::latest_output`].
    pub fn realise_forcing(
        &self,
        steps: &[Step],
        builders: &Builders,
        force: &std::collections::BTreeSet<StepId>,
        report: impl FnMut(&Realised, &Status),
    ) -> Result<Vec<Realised>, EngineError> {
        struct Adapter<F>(F);
        impl<F: FnMut(&Realised, &Status)> Observer for Adapter<F> {
            fn finished(&mut self, r: &Realised, status: &Status) {
                (self.0)(r, status)
            }
        }
        self.realise_scheduled(steps, builders, force, 1, &mut Adapter(report))
    }

    /// Realise `steps` with up to `jobs` steps running at once (the caller holds the store's
    /// writer lock). A step starts when every step it depends on, or must come after
    /// ([`Step::after`]), has finished; among the startable ones cluster-wide steps (discover,
    /// bootstrap, health: the critical path) go first, then list order. A failed step fails
    /// only what depends on it: everything else still runs, and the error names every failure.
    /// Results come back in list order.
    pub fn realise_scheduled(
        &self,
        steps: &[Step],
        builders: &Builders,
        force: &std::collections::BTreeSet<StepId>,
        jobs: usize,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Realised>, EngineError> {
        self.realise_publishing(steps, builders, force, jobs, observer, &())
    }

    /// [`Engine::realise_scheduled`], with `publish` told of each finished step on the thread
    /// that ran it, before the step counts as finished (see [`Publish`]).
    pub fn realise_publishing(
        &self,
        steps: &[Step],
        builders: &Builders,
        force: &std::collections::BTreeSet<StepId>,
        jobs: usize,
        observer: &mut dyn Observer,
        publish: &dyn Publish,
    ) -> Result<Vec<Realised>, EngineError> {
        let jobs = jobs.max(1);
        let index: BTreeMap<&StepId, usize> =
            steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
        // Each step waits for the steps of this run it depends on or comes after.
        let waits: Vec<Vec<usize>> = steps
            .iter()
            .map(|s| {
                let mut w: Vec<usize> = s
                    .deps
                    .iter()
                    .map(|d| &d.step)
                    .chain(s.after.iter())
                    .filter_map(|id| index.get(id).copied())
                    .collect();
                w.sort_unstable();
                w.dedup();
                w
            })
            .collect();
        let mut state = vec![Slot::Pending; steps.len()];
        let mut known: BTreeMap<StepId, BTreeMap<String, Digest>> = BTreeMap::new();
        let mut keys: BTreeMap<StepId, Digest> = BTreeMap::new();
        let mut observed: Arc<BTreeMap<StepId, BTreeMap<String, Vec<u8>>>> = Arc::default();
        let mut done: Vec<(usize, Realised)> = Vec::new();
        let mut errors: Vec<(usize, EngineError)> = Vec::new();
        let (to_main, from_workers) = mpsc::channel::<Msg>();
        let (to_workers, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = Mutex::new(jobs_rx);
        std::thread::scope(|scope| {
            // With one job the steps run on this thread (no pool): same order, same results.
            if jobs > 1 {
                for _ in 0..jobs {
                    let (rx, tx) = (&jobs_rx, to_main.clone());
                    scope.spawn(move || {
                        loop {
                            let job = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            let i = job.index;
                            // A panicking builder must not leave the scheduler waiting.
                            let outcome =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    self.run_one(&steps[i], builders, job, &tx)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(EngineError::Step(StepError {
                                        step: steps[i].id.clone(),
                                        message: "the step's builder panicked".into(),
                                    }))
                                });
                            if let Ok(o) = &outcome {
                                publish.published(&steps[i], &o.realised);
                            }
                            if tx.send(Msg::Done(i, outcome)).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
            let mut running = 0usize;
            loop {
                // Steps whose prerequisites failed (or were skipped) do not run.
                for i in 0..steps.len() {
                    if state[i] != Slot::Pending {
                        continue;
                    }
                    let failed: Vec<StepId> = waits[i]
                        .iter()
                        .filter(|&&w| matches!(state[w], Slot::Failed | Slot::Skipped))
                        .map(|&w| steps[w].id.clone())
                        .collect();
                    if !failed.is_empty() {
                        state[i] = Slot::Skipped;
                        observer.skipped(&steps[i], &failed);
                    }
                }
                while running < jobs {
                    let ready = (0..steps.len())
                        .filter(|&i| {
                            state[i] == Slot::Pending
                                && waits[i].iter().all(|&w| state[w] == Slot::Done)
                        })
                        .min_by_key(|&i| (steps[i].id.node().is_some(), i));
                    let Some(i) = ready else { break };
                    let step = &steps[i];
                    let inputs = match self.inputs_for(step, &known) {
                        Ok(inputs) => inputs,
                        Err(missing) => {
                            state[i] = Slot::Failed;
                            let e = EngineError::Step(StepError {
                                step: step.id.clone(),
                                message: format!(
                                    "inputs not realised: {}",
                                    missing
                                        .iter()
                                        .map(|s| s.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            });
                            observer.failed(step, &e);
                            errors.push((i, e));
                            continue;
                        }
                    };
                    let dep_keys: BTreeMap<StepId, Digest> = step
                        .deps
                        .iter()
                        .filter_map(|d| keys.get(&d.step).map(|k| (d.step.clone(), *k)))
                        .collect();
                    let job = Job {
                        index: i,
                        key: inputs.key(),
                        inputs,
                        forced: force.contains(&step.id),
                        dep_keys,
                        observed: observed.clone(),
                    };
                    state[i] = Slot::Running;
                    running += 1;
                    if jobs > 1 {
                        // The workers outlive this loop (they stop when the sender is dropped).
                        let _ = to_workers.send(job);
                    } else {
                        let outcome = self.run_one(step, builders, job, &to_main);
                        if let Ok(o) = &outcome {
                            publish.published(step, &o.realised);
                        }
                        let _ = to_main.send(Msg::Done(i, outcome));
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok(msg) = from_workers.recv() else { break };
                match msg {
                    Msg::Started(i, status) => observer.started(&steps[i], &status),
                    Msg::Done(i, outcome) => {
                        running -= 1;
                        let step = &steps[i];
                        match outcome {
                            Ok(o) => {
                                state[i] = Slot::Done;
                                known.insert(step.id.clone(), o.outputs);
                                keys.insert(step.id.clone(), o.realised.key);
                                if let Some(fresh) = o.fresh {
                                    let mut next = (*observed).clone();
                                    next.insert(step.id.clone(), fresh);
                                    observed = Arc::new(next);
                                }
                                observer.finished(&o.realised, &o.status);
                                done.push((i, o.realised));
                            }
                            Err(e) => {
                                state[i] = Slot::Failed;
                                observer.failed(step, &e);
                                errors.push((i, e));
                            }
                        }
                    }
                }
            }
            drop(to_workers);
        });
        if !errors.is_empty() {
            errors.sort_by_key(|(i, _)| *i);
            let mut errors: Vec<EngineError> = errors.into_iter().map(|(_, e)| e).collect();
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                EngineError::Several(errors)
            });
        }
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, r)| r).collect())
    }

    /// One step: its stored object when it can be used, else its builder's outputs, stored.
    fn run_one(
        &self,
        step: &Step,
        builders: &Builders,
        job: Job,
        started_tx: &mpsc::Sender<Msg>,
    ) -> Result<Ran, EngineError> {
        let Job {
            index,
            key,
            inputs,
            forced,
            dep_keys,
            observed,
        } = job;
        // Step timing for profiling (`TALIX_LOG=talix::engine=debug`): where a run's time goes.
        tracing::debug!(step = %step.id, "step: looking it up");
        if let Some(m) = self.cached(step, &key, forced, true)?.filter(|_| !forced) {
            self.store.set_ref(&self.profile.name, &step.id, &key)?;
            return Ok(Ran {
                outputs: m.output_hashes(),
                realised: Realised {
                    id: step.id.clone(),
                    ran: false,
                    key,
                    duration_ms: 0,
                },
                status: Status::Cached,
                fresh: None,
            });
        }
        let status = self.status_for_miss(step, &inputs)?;
        let builder = builders
            .get(step.id.kind())
            .ok_or_else(|| EngineError::NoBuilder {
                step: step.id.clone(),
                kind: step.id.kind().to_string(),
            })?;
        let _ = started_tx.send(Msg::Started(index, status.clone()));
        let started = Instant::now();
        let cx = BuildContext {
            step,
            profile: self.profile,
            tools: self.tools,
            store: self.store,
            cipher: self.cipher,
            dep_keys: &dep_keys,
            observed: &observed,
        };
        tracing::debug!(step = %step.id, "step: building");
        let built = builder.build(&cx)?;
        tracing::debug!(step = %step.id, ms = started.elapsed().as_millis() as u64, "step: built");
        let fresh = forced.then(|| {
            built
                .iter()
                .filter_map(|(n, o)| match o {
                    BuiltOutput::Content(b) => Some((n.clone(), b.clone())),
                    BuiltOutput::HashOnly(_) => None,
                })
                .collect::<BTreeMap<String, Vec<u8>>>()
        });
        let mut stored = BTreeMap::new();
        let mut infos = BTreeMap::new();
        for (name, output) in built {
            match output {
                BuiltOutput::Content(mut bytes) => {
                    let bytes_stored = if step.secret {
                        let cipher = self.cipher.ok_or_else(|| EngineError::Cipher {
                            step: step.id.clone(),
                            message: "secret output but no age recipients configured".into(),
                        })?;
                        cipher
                            .encrypt(&bytes)
                            .map_err(|message| EngineError::Cipher {
                                step: step.id.clone(),
                                message,
                            })?
                    } else {
                        bytes.clone()
                    };
                    infos.insert(
                        name.clone(),
                        output_info(&bytes, &bytes_stored, step.secret),
                    );
                    if step.secret {
                        // The plaintext is not needed any more: wipe it, not just free it.
                        zeroize::Zeroize::zeroize(&mut bytes);
                    }
                    stored.insert(name, bytes_stored);
                }
                BuiltOutput::HashOnly(hash) => {
                    infos.insert(
                        name,
                        crate::store::OutputInfo {
                            hash,
                            size: 0,
                            encrypted: step.secret,
                            stored_hash: hash,
                            stored: false,
                        },
                    );
                }
            }
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let manifest = Manifest {
            layout: LAYOUT_VERSION,
            key,
            step: step.id.clone(),
            profile: self.profile.name.clone(),
            effect: step.effect,
            inputs,
            outputs: infos,
            created: now_rfc3339(),
            duration_ms,
            // The objects this one was built from: its closure, for gc and export.
            deps: dep_keys,
        };
        self.store.put_with(&manifest, &stored, step.durability())?;
        self.store.set_ref(&self.profile.name, &step.id, &key)?;
        // Dependants key on what the store holds under this key: for a forced re-run of an
        // existing key that is the first realisation (objects are immutable); the fresh
        // observation reaches this run's builders through `latest_output`.
        let stored_manifest = self.store.manifest(&key)?.unwrap_or(manifest);
        tracing::debug!(step = %step.id, "step: stored");
        Ok(Ran {
            outputs: stored_manifest.output_hashes(),
            realised: Realised {
                id: step.id.clone(),
                ran: true,
                key,
                duration_ms,
            },
            status,
            fresh,
        })
    }
}

/// Told about each step as [`Engine::realise_scheduled`] moves it along (on the calling
/// thread, in the order things happen).
pub trait Observer {
    /// The step's object is missing (or the step is forced): its builder starts now.
    fn started(&mut self, _step: &Step, _status: &Status) {}
    /// The step finished: reused (`ran == false`) or built and stored.
    fn finished(&mut self, r: &Realised, status: &Status);
    /// The step failed; nothing was stored for it.
    fn failed(&mut self, _step: &Step, _error: &EngineError) {}
    /// The step did not run because `because` failed (or were skipped themselves).
    fn skipped(&mut self, _step: &Step, _because: &[StepId]) {}
}

/// Told of each finished step (reused or built and stored) on the thread that ran it, before
/// the scheduler counts it as finished: nothing that depends on the step or comes after it
/// starts before `published` returns, and the [`Observer`] hears of it afterwards. For work
/// that must follow a step at once without holding up the scheduler (files written outside
/// the store for the operator and for later steps: the scheduler's thread serialised 60 such
/// writes before any render could start, issue 10). Not called for a failed step.
pub trait Publish: Sync {
    fn published(&self, step: &Step, r: &Realised);
}

/// Nothing to publish.
impl Publish for () {
    fn published(&self, _step: &Step, _r: &Realised) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// A step handed to a worker, with everything computed from the steps before it.
struct Job {
    index: usize,
    key: Digest,
    inputs: DrvInputs,
    forced: bool,
    dep_keys: BTreeMap<StepId, Digest>,
    observed: Arc<BTreeMap<StepId, BTreeMap<String, Vec<u8>>>>,
}

/// What a worker reports.
enum Msg {
    Started(usize, Status),
    Done(usize, Result<Ran, EngineError>),
}

/// A finished step: its output hashes (for dependants' keys) and, when forced, its fresh
/// outputs.
struct Ran {
    outputs: BTreeMap<String, Digest>,
    realised: Realised,
    status: Status,
    fresh: Option<BTreeMap<String, Vec<u8>>>,
}

#[cfg(test)]
mod tests {
    //! The engine on its own: secret outputs are stored as ciphertext and read back as
    //! plaintext, a missing cipher or builder is a clear error, forcing re-runs a cached step.
    use super::*;
    use crate::derivation::Effect;
    use crate::store::memory::MemoryStore;

    struct Xor;
    impl ObjectCipher for Xor {
        fn encrypt(&self, p: &[u8]) -> Result<Vec<u8>, String> {
            Ok(p.iter().map(|b| b ^ 0x5a).collect())
        }
        fn decrypt(&self, s: &[u8]) -> Result<Vec<u8>, String> {
            Ok(s.iter().map(|b| b ^ 0x5a).collect())
        }
    }

    struct Emit(&'static str, std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Builder for Emit {
        fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut text = self.0.to_string();
            for dep in &cx.step.deps {
                text.push_str(&String::from_utf8(cx.dep_output(&dep.step, "out")?).unwrap());
            }
            Ok([("out".to_string(), BuiltOutput::Content(text.into_bytes()))].into())
        }
    }

    fn profile() -> Profile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, "name: p\nnetwork: {api_endpoint: 10.0.0.10, subnet: 10.0.0.0/24, pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}\ntalos: {version: v1.11.5, kubernetes_version: 1.34.1, factory: {schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba}}\nsecrets: {recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]}\nnodes: {controlplane: {assignments: [{name: cp1, ip: 10.0.0.11}]}}\n").unwrap();
        crate::profile::load(&path).unwrap().profile
    }

    fn two_steps() -> Vec<Step> {
        vec![
            Step::new(StepId("a".into()), 1, Effect::Pure)
                .value("v", "1")
                .secret(),
            Step::new(StepId("b".into()), 1, Effect::Observe).dep(StepId("a".into()), &["out"]),
        ]
    }

    #[test]
    fn secret_outputs_are_stored_encrypted_and_read_back_plain() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("a", Box::new(Emit("secret-a", runs.clone())));
        b.register("b", Box::new(Emit("b+", runs.clone())));
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: Some(&Xor),
        };
        let done = engine.realise(&two_steps(), &b, |_, _| {}).unwrap();
        let stored_a = store.read_output(&done[0].key, "out").unwrap();
        assert_ne!(stored_a, b"secret-a", "ciphertext in the store");
        assert!(store.manifest(&done[0].key).unwrap().unwrap().outputs["out"].encrypted);
        assert_eq!(
            store.read_output(&done[1].key, "out").unwrap(),
            b"b+secret-a",
            "the dependant saw plaintext"
        );
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn missing_cipher_and_missing_builder_are_errors() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("a", Box::new(Emit("x", runs.clone())));
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        let e = engine
            .realise(&two_steps(), &b, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret output but no age recipients"), "{e}");
        assert!(
            store.keys().unwrap().is_empty(),
            "nothing stored in plaintext"
        );
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: Some(&Xor),
        };
        let e = engine
            .realise(&two_steps(), &b, |_, _| {})
            .unwrap_err()
            .to_string();
        assert_eq!(e, "b: no builder for steps of kind \"b\" yet");
    }

    #[test]
    fn forcing_reruns_a_cached_step_and_hands_its_fresh_output_on() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("a", Box::new(Emit("x", runs.clone())));
        b.register("b", Box::new(Emit("y", runs.clone())));
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: Some(&Xor),
        };
        engine.realise(&two_steps(), &b, |_, _| {}).unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        engine.realise(&two_steps(), &b, |_, _| {}).unwrap();
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "all cached"
        );
        let force = [StepId("b".into())].into();
        let mut ran = Vec::new();
        engine
            .realise_forcing(&two_steps(), &b, &force, |r, _| {
                ran.push((r.id.to_string(), r.ran))
            })
            .unwrap();
        assert_eq!(ran, [("a".to_string(), false), ("b".to_string(), true)]);
    }

    /// Each builder run waits (bounded) until `want` of them are running at once; a run that
    /// times out fails with "ran alone". Proves concurrency by observation, not by timing.
    struct Meet {
        running: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
        want: usize,
        bound: std::time::Duration,
    }
    impl Builder for Meet {
        fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
            let (lock, cvar) = &*self.running;
            let mut n = lock.lock().unwrap();
            *n += 1;
            cvar.notify_all();
            let (mut n, timeout) = cvar
                .wait_timeout_while(n, self.bound, |n| *n < self.want)
                .unwrap();
            if timeout.timed_out() {
                *n -= 1;
            }
            drop(n);
            if timeout.timed_out() {
                return Err(cx.fail("ran alone"));
            }
            Ok([(
                "out".to_string(),
                BuiltOutput::Content(cx.step.id.0.clone().into_bytes()),
            )]
            .into())
        }
    }

    #[derive(Default)]
    struct Seen {
        order: Vec<String>,
        failed: Vec<String>,
        skipped: Vec<(String, Vec<String>)>,
    }
    impl Observer for Seen {
        fn started(&mut self, step: &Step, _: &Status) {
            self.order.push(format!("start {}", step.id));
        }
        fn finished(&mut self, r: &Realised, _: &Status) {
            self.order.push(format!("done {}", r.id));
        }
        fn failed(&mut self, step: &Step, _: &EngineError) {
            self.failed.push(step.id.to_string());
        }
        fn skipped(&mut self, step: &Step, because: &[StepId]) {
            self.skipped.push((
                step.id.to_string(),
                because.iter().map(|b| b.to_string()).collect(),
            ));
        }
    }

    fn meet_steps() -> Vec<Step> {
        ["n/a", "n/b", "n/c"]
            .iter()
            .map(|id| Step::new(StepId(id.to_string()), 1, Effect::Pure).value("v", id))
            .collect()
    }

    #[test]
    fn independent_steps_run_at_the_same_time_up_to_jobs() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let meet = |want, bound| {
            let mut b = Builders::default();
            b.register(
                "n",
                Box::new(Meet {
                    running: Default::default(),
                    want,
                    bound,
                }),
            );
            b
        };
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        // Three steps with three jobs: all three run at once (a generous bound: only a
        // scheduler that runs them one by one can miss it).
        let b = meet(3, std::time::Duration::from_secs(120));
        let done = engine
            .realise_scheduled(
                &meet_steps(),
                &b,
                &Default::default(),
                3,
                &mut Seen::default(),
            )
            .unwrap();
        let ids: Vec<String> = done.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["n/a", "n/b", "n/c"], "results in list order");
        // With one job they cannot meet (the bound only decides how long this part takes).
        let store = MemoryStore::default();
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        let b = meet(2, std::time::Duration::from_millis(50));
        let e = engine
            .realise_scheduled(
                &meet_steps(),
                &b,
                &Default::default(),
                1,
                &mut Seen::default(),
            )
            .unwrap_err();
        assert_eq!(e.failures().len(), 3, "{e}");
        assert!(e.to_string().contains("n/a: ran alone"), "{e}");
    }

    #[test]
    fn a_failed_step_stops_only_what_depends_on_it_or_comes_after_it() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        struct FailA;
        impl Builder for FailA {
            fn build(
                &self,
                cx: &BuildContext<'_>,
            ) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
                if cx.step.id.0 == "x/a" {
                    return Err(cx.fail("refused"));
                }
                Ok([("out".to_string(), BuiltOutput::Content(b"ok".to_vec()))].into())
            }
        }
        let mut b = Builders::default();
        b.register("x", Box::new(FailA));
        let id = |s: &str| StepId(s.to_string());
        let steps = vec![
            Step::new(id("x/a"), 1, Effect::SideEffect).value("v", "a"),
            Step::new(id("x/b"), 1, Effect::SideEffect)
                .value("v", "b")
                .dep(id("x/a"), &[]),
            Step::new(id("x/c"), 1, Effect::SideEffect).value("v", "c"),
            Step::new(id("x/d"), 1, Effect::SideEffect)
                .value("v", "d")
                .after(id("x/a")),
            Step::new(id("x/e"), 1, Effect::SideEffect)
                .value("v", "e")
                .dep(id("x/b"), &[]),
        ];
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        for jobs in [1, 4] {
            let mut seen = Seen::default();
            let e = engine
                .realise_scheduled(&steps, &b, &Default::default(), jobs, &mut seen)
                .unwrap_err();
            assert_eq!(e.to_string(), "x/a: refused");
            assert_eq!(seen.failed, ["x/a"]);
            let skipped: Vec<&str> = seen.skipped.iter().map(|(s, _)| s.as_str()).collect();
            assert_eq!(skipped, ["x/b", "x/d", "x/e"], "jobs {jobs}");
            assert_eq!(seen.skipped[2].1, ["x/b"], "skipped because its dep was");
            assert!(
                seen.order.contains(&"done x/c".to_string()),
                "{:?}",
                seen.order
            );
        }
        // Only the step that succeeded left an object.
        assert_eq!(store.keys().unwrap().len(), 1);
    }

    /// Events shared by the builders and the publisher of the publishing test, with a wait for
    /// one of them (generous bound: only a scheduler that stalls can miss it).
    #[derive(Default)]
    struct Events(std::sync::Mutex<Vec<String>>, std::sync::Condvar);
    impl Events {
        fn push(&self, e: String) {
            self.0.lock().unwrap().push(e);
            self.1.notify_all();
        }
        fn wait_for(&self, e: &str) -> bool {
            let (guard, t) = self
                .1
                .wait_timeout_while(
                    self.0.lock().unwrap(),
                    std::time::Duration::from_secs(60),
                    |v| !v.iter().any(|x| x == e),
                )
                .unwrap();
            drop(guard);
            !t.timed_out()
        }
        fn all(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }
    struct Gate(std::sync::Arc<Events>);
    impl Builder for Gate {
        fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
            let id = cx.step.id.to_string();
            // g/x finishes only once g/a is being published.
            if id == "g/x" && !self.0.wait_for("publishing g/a") {
                return Err(cx.fail("g/a was never published"));
            }
            self.0.push(format!("build {id}"));
            Ok([("out".to_string(), BuiltOutput::Content(id.into_bytes()))].into())
        }
    }
    impl Publish for Gate {
        fn published(&self, step: &Step, _r: &Realised) {
            if step.id.as_str() == "g/a" {
                self.0.push("publishing g/a".into());
                // Held until g/b (which needs g/x) has started: the scheduler must go on
                // starting steps while a step is being published.
                let met = self.0.wait_for("build g/b");
                self.0
                    .push(format!("published g/a{}", if met { "" } else { " alone" }));
            }
        }
    }

    #[test]
    fn a_step_being_published_holds_up_only_what_comes_after_it() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let events = std::sync::Arc::new(Events::default());
        let mut b = Builders::default();
        b.register("g", Box::new(Gate(events.clone())));
        let step = |id: &str| Step::new(StepId(id.into()), 1, Effect::Pure).value("v", id);
        let steps = vec![
            step("g/a"),
            step("g/x"),
            step("g/b").dep(StepId("g/x".into()), &["out"]),
            step("g/c").after(StepId("g/a".into())),
        ];
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        let mut seen = Seen::default();
        engine
            .realise_publishing(
                &steps,
                &b,
                &Default::default(),
                4,
                &mut seen,
                &Gate(events.clone()),
            )
            .unwrap();
        let all = events.all();
        let at = |e: &str| {
            all.iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("{e}: {all:?}"))
        };
        // While g/a was being published, g/x finished and g/b started.
        assert!(at("publishing g/a") < at("build g/b"), "{all:?}");
        assert!(at("published g/a") > at("build g/b"), "{all:?}");
        // What comes after g/a waited for its publication.
        assert!(at("build g/c") > at("published g/a"), "{all:?}");
    }

    #[test]
    fn after_orders_steps_without_entering_the_key() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("a", Box::new(Emit("x", runs.clone())));
        let later = Step::new(StepId("a/2".into()), 1, Effect::Pure).value("v", "2");
        let first = Step::new(StepId("a/1".into()), 1, Effect::Pure).value("v", "1");
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: None,
        };
        let steps = vec![later.clone().after(first.id.clone()), first.clone()];
        let mut seen = Seen::default();
        let done = engine
            .realise_scheduled(&steps, &b, &Default::default(), 4, &mut seen)
            .unwrap();
        assert_eq!(
            seen.order,
            ["start a/1", "done a/1", "start a/2", "done a/2"],
            "a/2 waited for a/1 although listed first"
        );
        let plain = engine.plan(&[later]).unwrap();
        assert_eq!(
            plain[0].key,
            Some(done[0].key),
            "the ordering edge is not in the key"
        );
    }

    #[test]
    fn a_damaged_receipt_of_a_replayable_step_is_run_again_one_of_an_apply_stops() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("apply", Box::new(Emit("applied", runs.clone())));
        b.register("ready", Box::new(Emit("ready", runs.clone())));
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: Some(&Xor),
        };
        let steps = || {
            vec![
                Step::new(StepId("apply/a".into()), 1, Effect::SideEffect).value("v", "1"),
                Step::new(StepId("ready/a".into()), 1, Effect::SideEffect)
                    .value("v", "1")
                    .replayable(),
            ]
        };
        assert_eq!(
            steps().iter().map(|s| s.durability()).collect::<Vec<_>>(),
            [
                crate::store::Durability::Synced,
                crate::store::Durability::Relaxed
            ]
        );
        let done = engine.realise(&steps(), &b, |_, _| {}).unwrap();
        let damage = |key: &Digest| {
            store
                .objects
                .lock()
                .unwrap()
                .get_mut(key)
                .unwrap()
                .1
                .get_mut("out")
                .unwrap()[0] ^= 1
        };
        // A power loss tore the readiness receipt: plan says it runs, up runs the check again.
        damage(&done[1].key);
        assert_eq!(engine.plan(&steps()).unwrap()[1].status.word(), "run");
        let mut ran = Vec::new();
        engine
            .realise(&steps(), &b, |r, _| ran.push((r.id.to_string(), r.ran)))
            .unwrap();
        assert_eq!(
            ran,
            [
                ("apply/a".to_string(), false),
                ("ready/a".to_string(), true)
            ]
        );
        assert!(
            store.checked(&done[1].key).unwrap().is_some(),
            "rebuilt intact"
        );
        // The apply's receipt damaged: never sent again on a guess; the error names the repair.
        damage(&done[0].key);
        let e = engine
            .realise(&steps(), &b, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&done[0].key.to_string()) && e.contains("talix store prune"),
            "{e}"
        );
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn a_damaged_pure_object_is_rebuilt_and_a_damaged_receipt_stops_with_the_repair() {
        let (p, store, tools) = (profile(), MemoryStore::default(), ToolVersions::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = Builders::default();
        b.register("a", Box::new(Emit("x", runs.clone())));
        b.register("b", Box::new(Emit("y", runs.clone())));
        let engine = Engine {
            profile: &p,
            store: &store,
            tools: &tools,
            cipher: Some(&Xor),
        };
        let done = engine.realise(&two_steps(), &b, |_, _| {}).unwrap();
        let (a, b_key) = (done[0].key, done[1].key);
        // Flip a byte of the pure step's (encrypted) output.
        store
            .objects
            .lock()
            .unwrap()
            .get_mut(&a)
            .unwrap()
            .1
            .get_mut("out")
            .unwrap()[0] ^= 1;
        let planned = engine.plan(&two_steps()).unwrap();
        assert_eq!(
            planned[0].status.word(),
            "run",
            "plan: damaged means rebuild"
        );
        let mut ran = Vec::new();
        engine
            .realise(&two_steps(), &b, |r, _| ran.push((r.id.to_string(), r.ran)))
            .unwrap();
        assert_eq!(ran, [("a".to_string(), true), ("b".to_string(), false)]);
        assert!(store.checked(&a).unwrap().is_some(), "rebuilt intact");
        assert_eq!(store.read_output(&b_key, "out").unwrap(), b"yx");

        // The observation step's object (not pure) with a garbage manifest: an error naming it.
        store.objects.lock().unwrap().get_mut(&b_key).unwrap().0 = b"garbage".to_vec();
        for e in [
            engine.plan(&two_steps()).unwrap_err().to_string(),
            engine
                .realise(&two_steps(), &b, |_, _| {})
                .unwrap_err()
                .to_string(),
        ] {
            assert!(
                e.contains(&b_key.to_string()) && e.contains("talix store prune"),
                "{e}"
            );
        }
    }
}
