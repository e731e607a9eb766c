//! Closures that travel: the objects a profile's latest realisation needs (every object its
//! steps' refs reach, through the output hashes of their dependencies) written as one
//! deterministic tar archive, and the import that checks every entry of such an archive before
//! anything lands in a store.
//!
//! The archive mirrors the on-disk layout (`v1/objects/<key>/manifest.json`,
//! `v1/objects/<key>/out/<name>`, see [`super::local`]) plus one header entry,
//! [`HEADER_NAME`], that lists the objects, the number of entries and the profile's refs (refs
//! travel in the header, never as files). Secret outputs travel as the age ciphertext the store
//! holds: nothing here decrypts.
//!
//! Import is two phases. [`read_archive`] reads the whole archive into memory (bounded by
//! [`Limits`]) and refuses it, naming the entry and the reason, unless every entry is a regular
//! file or folder at a path of the store layout, and every object's manifest belongs to its key
//! and every output matches its manifest. Only then does [`import`] take the store's writer
//! lock and publish each object with [`Store::put`] (staged in the store's scratch, one
//! `rename` per object; an intact object already in the store is kept).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{LAYOUT_VERSION, Manifest, Store, StoreError};
use crate::derivation::StepId;
use crate::digest::Digest;

/// Name of the header entry (the first entry of every export).
pub const HEADER_NAME: &str = "talix-export-v1.json";
/// `format` of the header.
pub const FORMAT: &str = "talix-store-export";
/// `version` of the header this talix writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Step kinds whose outputs are secret (graph.rs declares them `.secret()`): an imported object
/// of one of these kinds must hold only age ciphertext.
pub const SECRET_KINDS: &[&str] = &[
    "secrets",
    "base-config",
    "talosconfig",
    "render",
    "kubeconfig",
];

/// Bounds on what an archive may hold; an archive beyond them is refused before its data is
/// read. Export checks the same bounds, so it never writes an archive import would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one file entry (machine configs and manifests are kilobytes).
    pub max_entry_bytes: u64,
    /// Bytes of all file entries together.
    pub max_total_bytes: u64,
    /// Entries, folders included (an object is about five).
    pub max_entries: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_entry_bytes: 16 << 20,
        max_total_bytes: 256 << 20,
        max_entries: 16_384,
    };

    /// The largest archive file worth opening: every entry's 512-byte header plus its data
    /// padded to 512 bytes, and the end-of-archive blocks (tar writers may pad further).
    pub fn max_archive_bytes(&self) -> u64 {
        self.max_total_bytes + (self.max_entries as u64 + 1) * 1024 + (1 << 20)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The header entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub format: String,
    pub version: u32,
    /// The profile whose realisation this is (its refs are restored under this name).
    pub profile: String,
    /// The profile's refs: step -> key of its latest realisation.
    pub refs: BTreeMap<StepId, Digest>,
    /// Every object in the archive.
    pub objects: Vec<Digest>,
    /// Entries after the header (so a cut at an entry boundary is noticed).
    pub entries: u64,
}

/// One object: its manifest and its stored bytes (ciphertext for secret steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub manifest: Manifest,
    pub stored: BTreeMap<String, Vec<u8>>,
}

/// A closure: what an archive holds, and what import publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Closure {
    pub profile: String,
    pub refs: BTreeMap<StepId, Digest>,
    pub objects: BTreeMap<Digest, Object>,
}

/// An archive refused by import: the entry and why. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?} refused: {reason}")]
pub struct Refused {
    pub entry: String,
    pub reason: String,
}

fn refused(entry: impl Into<String>, reason: impl Into<String>) -> Refused {
    Refused {
        entry: entry.into(),
        reason: reason.into(),
    }
}

/// Export failures (the store cannot give a complete, intact closure).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Incomplete(String),
}

/// Whether `s` is a DNS label (profile and node names, step kinds): safe as a path component.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `step` is a step id refs may be stored under: `kind` or `kind/node`, each a label.
fn is_step_id(step: &StepId) -> bool {
    match step.as_str().split_once('/') {
        Some((kind, node)) => is_label(kind) && is_label(node),
        None => is_label(step.as_str()),
    }
}

/// Whether `name` may name an output file: what [`super::local::LocalStore::put`] accepts,
/// narrowed to the characters talix uses.
fn is_output_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Whether stored bytes are age ciphertext (armored, as talix writes it, or binary).
fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        || bytes.starts_with(b"age-encryption.org/v1\n")
}

// ---------------------------------------------------------------------------------------------
// Export

/// The closure of `profile`'s latest realisation of `steps`: each step's ref, and every object
/// those reach through their dependencies' output hashes (resolved to the dependency's own ref
/// when it produced that hash, else to any intact object of that step that did). Every object
/// is read verified. `Ok(None)` when no step has a ref.
pub fn closure(
    store: &dyn Store,
    profile: &str,
    steps: &[StepId],
) -> Result<Option<Closure>, ExportError> {
    let mut refs = BTreeMap::new();
    for step in steps {
        if let Some(key) = store.get_ref(profile, step)? {
            refs.insert(step.clone(), key);
        }
    }
    if refs.is_empty() {
        return Ok(None);
    }
    // Which objects produced which output: (step, output, hash) -> keys.
    let mut producers: BTreeMap<(StepId, String, Digest), BTreeSet<Digest>> = BTreeMap::new();
    for key in store.keys()? {
        // A damaged object is no producer; it only matters if nothing else is.
        if let Ok(Some(m)) = store.manifest(&key) {
            for (name, info) in &m.outputs {
                producers
                    .entry((m.step.clone(), name.clone(), info.hash))
                    .or_default()
                    .insert(key);
            }
        }
    }
    let intact = |key: &Digest| -> Result<Manifest, ExportError> {
        match store.checked(key) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(ExportError::Incomplete(format!(
                "object {key} is not in the store"
            ))),
            Err(e) => Err(e.into()),
        }
    };
    let mut objects: BTreeMap<Digest, Object> = BTreeMap::new();
    let mut queue: Vec<(Digest, String)> = refs
        .iter()
        .map(|(step, key)| (*key, format!("the ref of {step}")))
        .collect();
    while let Some((key, why)) = queue.pop() {
        if objects.contains_key(&key) {
            continue;
        }
        let manifest = intact(&key).map_err(|e| {
            ExportError::Incomplete(format!("{why} (object {key}): {}", first_line(&e)))
        })?;
        for (dep, hash) in &manifest.inputs.deps {
            let Some((step, output)) = dep.rsplit_once(':') else {
                return Err(ExportError::Incomplete(format!(
                    "object {key} ({}) names a dependency {dep:?} without an output",
                    manifest.step
                )));
            };
            let step = StepId(step.to_string());
            let candidates = producers
                .get(&(step.clone(), output.to_string(), *hash))
                .cloned()
                .unwrap_or_default();
            let preferred = refs.get(&step).filter(|k| candidates.contains(k));
            let mut found = None;
            for k in preferred.into_iter().chain(candidates.iter()) {
                if objects.contains_key(k) || intact(k).is_ok() {
                    found = Some(*k);
                    break;
                }
            }
            match found {
                Some(k) => queue.push((k, format!("{dep} of {}", manifest.step))),
                None => {
                    return Err(ExportError::Incomplete(format!(
                        "object {key} ({}) depends on output {dep} {}, which no intact object in the store holds",
                        manifest.step,
                        hash.short()
                    )));
                }
            }
        }
        let mut stored = BTreeMap::new();
        for (name, info) in &manifest.outputs {
            if info.stored {
                stored.insert(name.clone(), store.read_output(&key, name)?);
            }
        }
        objects.insert(key, Object { manifest, stored });
    }
    Ok(Some(Closure {
        profile: profile.to_string(),
        refs,
        objects,
    }))
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The archive's entries in order: (path, `Some(bytes)` for a file, `None` for a folder).
fn entries_of(c: &Closure) -> Vec<(String, Option<Vec<u8>>)> {
    let base = format!("v{LAYOUT_VERSION}");
    let mut entries: Vec<(String, Option<Vec<u8>>)> = vec![
        (format!("{base}/"), None),
        (format!("{base}/objects/"), None),
    ];
    for (key, obj) in &c.objects {
        let dir = format!("{base}/objects/{key}");
        entries.push((format!("{dir}/"), None));
        let json = serde_json::to_vec_pretty(&obj.manifest).expect("manifest serialises");
        entries.push((format!("{dir}/manifest.json"), Some(json)));
        entries.push((format!("{dir}/out/"), None));
        for (name, bytes) in &obj.stored {
            entries.push((format!("{dir}/out/{name}"), Some(bytes.clone())));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let header = ExportHeader {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        profile: c.profile.clone(),
        refs: c.refs.clone(),
        objects: c.objects.keys().copied().collect(),
        entries: entries.len() as u64,
    };
    let mut json = serde_json::to_vec_pretty(&header).expect("header serialises");
    json.push(b'\n');
    entries.insert(0, (HEADER_NAME.to_string(), Some(json)));
    entries
}

/// The archive of `c`, byte-for-byte the same for the same closure: entries sorted by path
/// (the header first), ustar headers with mtime 0, uid/gid 0, no user or group names, mode
/// 0644 for files and 0755 for folders. Refuses a closure beyond `limits`.
pub fn write_archive(c: &Closure, limits: &Limits) -> Result<Vec<u8>, ExportError> {
    let entries = entries_of(c);
    if entries.len() > limits.max_entries {
        return Err(ExportError::Incomplete(format!(
            "the closure has {} entries, more than an archive may hold ({})",
            entries.len(),
            limits.max_entries
        )));
    }
    let mut total = 0u64;
    for (path, data) in &entries {
        let len = data.as_ref().map_or(0, |d| d.len() as u64);
        if len > limits.max_entry_bytes {
            return Err(ExportError::Incomplete(format!(
                "{path} has {len} bytes, more than an archive entry may hold ({})",
                limits.max_entry_bytes
            )));
        }
        total += len;
    }
    if total > limits.max_total_bytes {
        return Err(ExportError::Incomplete(format!(
            "the closure has {total} bytes, more than an archive may hold ({})",
            limits.max_total_bytes
        )));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| ExportError::Incomplete(format!("{path}: {e}")))?;
        match data {
            Some(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(bytes.len() as u64);
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            }
        }
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let body: &[u8] = data.as_deref().unwrap_or_default();
        builder
            .append(&h, body)
            .map_err(|e| ExportError::Incomplete(format!("{path}: {e}")))?;
    }
    builder
        .into_inner()
        .map_err(|e| ExportError::Incomplete(format!("finishing the archive: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Import: the entry checker

/// Where an entry's path puts it in the store layout.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryPath {
    Header,
    /// `v1/`, `v1/objects/`, `v1/objects/<key>/`, `v1/objects/<key>/out/`.
    Folder,
    Manifest(Digest),
    Output(Digest, String),
}

/// Classify an entry by its raw path and whether it is a folder; `Err` is the reason to refuse
/// it. Only the exact store layout is accepted: no `..`, no absolute path, no `.` or empty
/// component, nothing outside `v1/objects/<key>/{manifest.json,out/<name>}` but the header.
pub fn classify(raw: &[u8], folder: bool) -> Result<(String, EntryPath), String> {
    let path = std::str::from_utf8(raw).map_err(|_| "its path is not UTF-8".to_string())?;
    if path.is_empty() {
        return Err("its path is empty".into());
    }
    if path.starts_with('/') {
        return Err("absolute path (entries must be relative to the store)".into());
    }
    if path.contains('\\') {
        return Err("a backslash in its path".into());
    }
    // A folder may be written with or without its trailing slash; a file never has one.
    let trimmed = match (folder, path.strip_suffix('/')) {
        (true, Some(p)) => p,
        (false, Some(_)) => return Err("a file path ending in `/`".into()),
        (_, None) => path,
    };
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts.contains(&"..") {
        return Err("path traversal (`..`)".into());
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err("not a normalised path (empty or `.` component)".into());
    }
    let base = format!("v{LAYOUT_VERSION}");
    let want_file = |what: EntryPath| -> Result<(String, EntryPath), String> {
        if folder {
            Err("a folder where the store layout has a file".into())
        } else {
            Ok((trimmed.to_string(), what))
        }
    };
    let want_folder = || -> Result<(String, EntryPath), String> {
        if folder {
            Ok((trimmed.to_string(), EntryPath::Folder))
        } else {
            Err("a file where the store layout has a folder".into())
        }
    };
    let key = |s: &str| -> Result<Digest, String> {
        s.parse::<Digest>()
            .map_err(|_| format!("{s:?} is not an object key (64 lower-case hex characters)"))
    };
    match parts.as_slice() {
        [h] if *h == HEADER_NAME => want_file(EntryPath::Header),
        [v, ..] if *v != base => Err(format!(
            "not part of a talix store export (the top level holds only {HEADER_NAME} and {base}/)"
        )),
        [_] => want_folder(),
        [_, "objects"] => want_folder(),
        [_, "objects", k] => {
            key(k)?;
            want_folder()
        }
        [_, "objects", k, "manifest.json"] => want_file(EntryPath::Manifest(key(k)?)),
        [_, "objects", k, "out"] => {
            key(k)?;
            want_folder()
        }
        [_, "objects", k, "out", name] => {
            let k = key(k)?;
            if !is_output_name(name) {
                return Err(format!("{name:?} is not an output name"));
            }
            want_file(EntryPath::Output(k, name.to_string()))
        }
        [_, "objects", _, ..] => {
            Err("not part of a store object (expected manifest.json or out/<name>)".into())
        }
        [_, "refs", ..] => Err("refs travel in the header, not as files".into()),
        _ => Err(format!(
            "not part of the store layout (expected {base}/objects/...)"
        )),
    }
}

/// Why an entry type is refused (`None`: a regular file or a folder, accepted).
pub fn refuse_type(t: tar::EntryType) -> Option<String> {
    use tar::EntryType as T;
    let what = match t {
        T::Regular | T::Directory => return None,
        T::Symlink => "a symbolic link",
        T::Link => "a hard link",
        T::Char => "a character device",
        T::Block => "a block device",
        T::Fifo => "a fifo",
        T::Continuous => "a contiguous file",
        T::GNULongName | T::GNULongLink => "a GNU long-name extension (talix exports use none)",
        T::XHeader | T::XGlobalHeader => "a pax extension header (talix exports use none)",
        T::GNUSparse => "a sparse file",
        other => {
            return Some(format!(
                "entry type {:?} (only regular files and folders are allowed)",
                other.as_byte() as char
            ));
        }
    };
    Some(format!(
        "{what} (only regular files and folders are allowed)"
    ))
}

/// Read and check a whole archive (see the module documentation); nothing is written.
pub fn read_archive<R: Read>(reader: R, limits: &Limits) -> Result<Closure, Refused> {
    let eof = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut archive = tar::Archive::new(EofWatch {
        inner: reader,
        hit: eof.clone(),
    });
    // Raw: every header as it is (GNU long names and pax headers are refused, not applied, so
    // what is checked is exactly what the headers say).
    let entries = archive
        .entries()
        .map_err(|e| refused("(archive)", format!("not a tar archive: {e}")))?
        .raw(true);
    let mut header_bytes: Option<Vec<u8>> = None;
    let mut manifests: BTreeMap<Digest, (String, Vec<u8>)> = BTreeMap::new();
    let mut outputs: BTreeMap<(Digest, String), (String, Vec<u8>)> = BTreeMap::new();
    let mut folders: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut count = 0usize;
    let mut total = 0u64;
    let mut last = String::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            refused(
                position(count, &last),
                format!("truncated or corrupt archive: {e}"),
            )
        })?;
        count += 1;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        if count > limits.max_entries {
            return Err(refused(
                shown,
                format!("more than {} entries", limits.max_entries),
            ));
        }
        let etype = entry.header().entry_type();
        if let Some(why) = refuse_type(etype) {
            return Err(refused(shown, why));
        }
        let folder = etype == tar::EntryType::Directory;
        let (path, place) = classify(&raw_path, folder).map_err(|why| refused(&shown, why))?;
        if !seen.insert(path.clone()) {
            return Err(refused(shown, "duplicate entry (the path appears twice)"));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| refused(&shown, format!("unreadable size: {e}")))?;
        if folder {
            if size != 0 {
                return Err(refused(
                    shown,
                    format!("a folder with {size} bytes of data"),
                ));
            }
            folders.insert(path.clone());
            last = path;
            continue;
        }
        if size > limits.max_entry_bytes {
            return Err(refused(
                shown,
                format!(
                    "declares {size} bytes, more than the bound of {} bytes per entry",
                    limits.max_entry_bytes
                ),
            ));
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(refused(
                shown,
                format!(
                    "the entries so far hold {total} bytes, more than the bound of {} bytes per archive",
                    limits.max_total_bytes
                ),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| refused(&shown, format!("unreadable data: {e}")))?;
        if data.len() as u64 != size {
            return Err(refused(
                shown,
                format!("truncated archive: {} of {size} bytes present", data.len()),
            ));
        }
        match place {
            EntryPath::Header => header_bytes = Some(data),
            EntryPath::Manifest(k) => {
                manifests.insert(k, (path.clone(), data));
            }
            EntryPath::Output(k, name) => {
                outputs.insert((k, name), (path.clone(), data));
            }
            EntryPath::Folder => unreachable!("folders are handled above"),
        }
        last = path;
    }
    // The reader stops at the end-of-archive block; running out of bytes first means the
    // archive was cut (at an entry boundary, or nothing else would have got this far).
    if eof.get() {
        return Err(refused(
            position(count, &last),
            "truncated archive: it ends without the end-of-archive blocks",
        ));
    }
    check_contents(header_bytes, manifests, outputs, folders, count)
}

/// How to name the entry after `count` entries, the last one at `last`, when its header
/// cannot be read.
fn position(count: usize, last: &str) -> String {
    if count == 0 {
        "#1 (the first entry)".to_string()
    } else {
        format!("#{} (after {last})", count + 1)
    }
}

/// A reader that records whether it ran out of bytes.
struct EofWatch<R> {
    inner: R,
    hit: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit.set(true);
        }
        Ok(n)
    }
}

/// The checks across entries: the header, each object against its key and its manifest, refs.
fn check_contents(
    header_bytes: Option<Vec<u8>>,
    manifests: BTreeMap<Digest, (String, Vec<u8>)>,
    mut outputs: BTreeMap<(Digest, String), (String, Vec<u8>)>,
    folders: BTreeSet<String>,
    count: usize,
) -> Result<Closure, Refused> {
    let header_bytes = header_bytes
        .ok_or_else(|| refused(HEADER_NAME, "missing: this is not a talix store export"))?;
    let header: ExportHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| refused(HEADER_NAME, format!("does not parse: {e}")))?;
    if header.format != FORMAT || header.version != FORMAT_VERSION {
        return Err(refused(
            HEADER_NAME,
            format!(
                "format {:?} version {}; this talix reads {FORMAT:?} version {FORMAT_VERSION}",
                header.format, header.version
            ),
        ));
    }
    if header.entries != count as u64 - 1 {
        return Err(refused(
            HEADER_NAME,
            format!(
                "lists {} entries after it, the archive has {} (truncated or altered)",
                header.entries,
                count - 1
            ),
        ));
    }
    if !is_label(&header.profile) {
        return Err(refused(
            HEADER_NAME,
            format!("profile {:?} is not a profile name", header.profile),
        ));
    }
    let listed: BTreeSet<Digest> = header.objects.iter().copied().collect();
    if listed.len() != header.objects.len() {
        return Err(refused(HEADER_NAME, "lists an object twice"));
    }
    let base = format!("v{LAYOUT_VERSION}");
    for f in &folders {
        let parts: Vec<&str> = f.split('/').collect();
        if let [_, "objects", k, ..] = parts.as_slice()
            && !k.parse::<Digest>().is_ok_and(|k| listed.contains(&k))
        {
            return Err(refused(f, "an object the header does not list"));
        }
    }
    for k in manifests.keys() {
        if !listed.contains(k) {
            return Err(refused(
                format!("{base}/objects/{k}/manifest.json"),
                "an object the header does not list",
            ));
        }
    }
    let mut objects = BTreeMap::new();
    for key in &listed {
        let Some((mpath, bytes)) = manifests.get(key) else {
            return Err(refused(
                format!("{base}/objects/{key}/manifest.json"),
                "missing (the header lists this object)",
            ));
        };
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| refused(mpath, format!("does not parse as a manifest: {e}")))?;
        super::check_belongs(key, &manifest).map_err(|e| refused(mpath, damage_reason(e)))?;
        if !is_step_id(&manifest.step) {
            return Err(refused(
                mpath,
                format!("step {:?} is not a step id", manifest.step.as_str()),
            ));
        }
        let secret = SECRET_KINDS.contains(&manifest.step.kind());
        let mut stored = BTreeMap::new();
        for (name, info) in &manifest.outputs {
            let opath = format!("{base}/objects/{key}/out/{name}");
            let file = outputs.remove(&(*key, name.clone()));
            if !info.stored {
                if file.is_some() {
                    return Err(refused(
                        opath,
                        "its manifest records no stored bytes for it",
                    ));
                }
                continue;
            }
            let Some((opath, data)) = file else {
                return Err(refused(opath, "missing (its manifest lists it)"));
            };
            super::check_output(key, &manifest, name, &data)
                .map_err(|e| refused(&opath, damage_reason(e)))?;
            if secret && !(info.encrypted && is_age(&data)) {
                return Err(refused(
                    opath,
                    format!(
                        "an output of secret step {} that is not age ciphertext",
                        manifest.step
                    ),
                ));
            }
            stored.insert(name.clone(), data);
        }
        objects.insert(*key, Object { manifest, stored });
    }
    if let Some((_, (opath, _))) = outputs.into_iter().next() {
        return Err(refused(
            opath,
            "an output its object's manifest does not list",
        ));
    }
    for (step, key) in &header.refs {
        if !is_step_id(step) {
            return Err(refused(
                HEADER_NAME,
                format!("ref {:?} is not a step id", step.as_str()),
            ));
        }
        match objects.get(key) {
            None => {
                return Err(refused(
                    HEADER_NAME,
                    format!("ref {step} names object {key}, which the archive does not hold"),
                ));
            }
            Some(o) if o.manifest.step != *step => {
                return Err(refused(
                    HEADER_NAME,
                    format!(
                        "ref {step} names object {key}, which is a realisation of {}",
                        o.manifest.step
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Closure {
        profile: header.profile,
        refs: header.refs,
        objects,
    })
}

/// The reason of a store check failure, without the store's repair hint (which is about
/// damaged objects in a store, not an archive).
fn damage_reason(e: StoreError) -> String {
    match e {
        StoreError::Damaged { reason, .. } => reason,
        StoreError::MissingOutput { output, .. } => format!("its manifest has no output {output}"),
        other => first_line(&other),
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Objects published.
    pub added: Vec<Digest>,
    /// Objects already in the store, intact: kept as they are (objects are immutable).
    pub kept: Vec<Digest>,
    /// Objects in the store that were damaged and are replaced by the archive's.
    pub replaced: Vec<Digest>,
    /// Refs set.
    pub refs: usize,
}

/// Publish a checked closure into `store`, holding its writer lock: each object with one
/// atomic [`Store::put`] (an intact object with the same key is kept, a damaged one replaced),
/// then the profile's refs.
pub fn import(store: &dyn Store, closure: &Closure) -> Result<ImportReport, StoreError> {
    let _lock = store.lock(true)?;
    let mut report = ImportReport::default();
    for (key, obj) in &closure.objects {
        match store.checked(key) {
            Ok(Some(_)) => {
                report.kept.push(*key);
                continue;
            }
            Ok(None) => report.added.push(*key),
            Err(e) if e.is_damage() || matches!(e, StoreError::MissingOutput { .. }) => {
                store.discard(key)?;
                report.replaced.push(*key);
            }
            Err(e) => return Err(e),
        }
        store.put(&obj.manifest, &obj.stored)?;
        if store.checked(key)?.is_none() {
            return Err(StoreError::Corrupt {
                path: key.to_string(),
                reason: "the imported object is not readable after publishing it".into(),
            });
        }
    }
    for (step, key) in &closure.refs {
        store.set_ref(&closure.profile, step, key)?;
        report.refs += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derivation::InputValue;
    use crate::store::conformance::manifest_for;
    use crate::store::memory::MemoryStore;

    const K: &str = "1ea67a60f4148bf2c19e9bc536240b10075d4485d8622ee37341886f12549938";

    fn ok(path: &str, folder: bool) -> EntryPath {
        classify(path.as_bytes(), folder)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .1
    }
    fn no(path: &str, folder: bool) -> String {
        classify(path.as_bytes(), folder)
            .map(|p| panic!("{path} accepted as {p:?}"))
            .unwrap_err()
    }

    #[test]
    fn the_store_layout_is_accepted() {
        let k: Digest = K.parse().unwrap();
        assert_eq!(ok(HEADER_NAME, false), EntryPath::Header);
        for f in [
            "v1",
            "v1/",
            "v1/objects/",
            &format!("v1/objects/{K}/"),
            &format!("v1/objects/{K}/out"),
        ] {
            assert_eq!(ok(f, true), EntryPath::Folder, "{f}");
        }
        assert_eq!(
            ok(&format!("v1/objects/{K}/manifest.json"), false),
            EntryPath::Manifest(k)
        );
        assert_eq!(
            ok(&format!("v1/objects/{K}/out/controlplane"), false),
            EntryPath::Output(k, "controlplane".into())
        );
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        for (path, folder, why) in [
            ("../x", false, "path traversal"),
            ("v1/../../x", false, "path traversal"),
            (
                &format!("v1/objects/{K}/out/../../../x") as &str,
                false,
                "path traversal",
            ),
            ("/etc/passwd", false, "absolute path"),
            (
                &format!("/v1/objects/{K}/manifest.json"),
                false,
                "absolute path",
            ),
            ("", false, "empty"),
            ("./v1/objects", true, "not a normalised path"),
            ("v1//objects", true, "not a normalised path"),
            ("README", false, "not part of a talix store export"),
            ("v2/objects", true, "not part of a talix store export"),
            (
                "v1/refs/homelab/secrets",
                false,
                "refs travel in the header",
            ),
            ("v1/tmp/x", false, "not part of the store layout"),
            ("v1/lock", false, "not part of the store layout"),
            (
                "v1/objects/nothex/manifest.json",
                false,
                "is not an object key",
            ),
            (
                &format!("v1/objects/{}/manifest.json", K.to_uppercase()),
                false,
                "is not an object key",
            ),
            (
                &format!("v1/objects/{K}/other.json"),
                false,
                "not part of a store object",
            ),
            (
                &format!("v1/objects/{K}/out/.hidden"),
                false,
                "is not an output name",
            ),
            (
                &format!("v1/objects/{K}/out/a/b"),
                false,
                "not part of a store object",
            ),
            (
                &format!("v1/objects/{K}/manifest.json"),
                true,
                "a folder where",
            ),
            (
                &format!("v1/objects/{K}/manifest.json/"),
                false,
                "ending in `/`",
            ),
            ("v1/objects", false, "a file where"),
            (HEADER_NAME, true, "a folder where"),
            ("v1\\objects", true, "backslash"),
        ] {
            let e = no(path, folder);
            assert!(e.contains(why), "{path:?}: {e}");
        }
        assert!(
            classify(&[b'v', b'1', 0xff], true)
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn only_regular_files_and_folders_pass_the_type_check() {
        use tar::EntryType as T;
        assert_eq!(refuse_type(T::Regular), None);
        assert_eq!(refuse_type(T::new(b'\0')), None, "old-style regular file");
        assert_eq!(refuse_type(T::Directory), None);
        for (t, why) in [
            (T::Symlink, "symbolic link"),
            (T::Link, "hard link"),
            (T::Char, "character device"),
            (T::Block, "block device"),
            (T::Fifo, "fifo"),
            (T::GNULongName, "GNU long-name"),
            (T::XHeader, "pax"),
            (T::XGlobalHeader, "pax"),
            (T::GNUSparse, "sparse"),
            (T::new(b'Z'), "entry type 'Z'"),
        ] {
            let e = refuse_type(t).unwrap();
            assert!(
                e.contains(why) && e.contains("only regular files and folders"),
                "{e}"
            );
        }
    }

    #[test]
    fn step_ids_and_names_that_become_paths_are_labels() {
        for ok in ["secrets", "render/cp1", "upgrade-k8s"] {
            assert!(is_step_id(&StepId(ok.into())), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "render/../x",
            "render/a/b",
            "Render",
            "render/",
            "a b",
            "-x",
        ] {
            assert!(!is_step_id(&StepId(bad.into())), "{bad}");
        }
        assert!(is_output_name("controlplane") && is_output_name("config.yaml"));
        assert!(!is_output_name(".x") && !is_output_name("a/b") && !is_output_name(""));
    }

    /// A store with a two-object chain: `apply/n` depends on `patch/n`'s output.
    fn chain(store: &MemoryStore) -> (Manifest, Manifest) {
        let (patch, out) = manifest_for("patch/n", "p", &[("patch", b"machine: {}\n")]);
        store.put(&patch, &out).unwrap();
        let (mut render, rout) = manifest_for("apply/n", "r", &[("receipt", b"applied\n")]);
        render
            .inputs
            .deps
            .insert("patch/n:patch".into(), patch.outputs["patch"].hash);
        render.inputs.values.insert("x".into(), InputValue::of(1));
        render.key = render.inputs.key();
        store.put(&render, &rout).unwrap();
        store.set_ref("p", &render.step, &render.key).unwrap();
        (patch, render)
    }

    #[test]
    fn a_closure_follows_deps_and_round_trips_through_an_archive() {
        let store = MemoryStore::default();
        let (patch, render) = chain(&store);
        // An unrelated object is not part of the closure.
        let (other, oout) = manifest_for("patch/z", "z", &[("patch", b"z")]);
        store.put(&other, &oout).unwrap();
        let c = closure(&store, "p", &[render.step.clone(), patch.step.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(
            c.objects.keys().copied().collect::<BTreeSet<_>>(),
            [patch.key, render.key].into(),
            "the ref's object and what its deps reach, nothing else"
        );
        assert_eq!(c.refs, [(render.step.clone(), render.key)].into());
        let bytes = write_archive(&c, &Limits::DEFAULT).unwrap();
        assert_eq!(
            bytes,
            write_archive(&c, &Limits::DEFAULT).unwrap(),
            "deterministic"
        );
        let back = read_archive(&bytes[..], &Limits::DEFAULT).unwrap();
        assert_eq!(back, c);

        let empty = MemoryStore::default();
        let r = import(&empty, &back).unwrap();
        assert_eq!((r.added.len(), r.kept.len(), r.refs), (2, 0, 1));
        assert_eq!(
            empty.read_output(&patch.key, "patch").unwrap(),
            b"machine: {}\n"
        );
        assert_eq!(empty.get_ref("p", &render.step).unwrap(), Some(render.key));
        let again = import(&empty, &back).unwrap();
        assert_eq!(
            (again.added.len(), again.kept.len()),
            (0, 2),
            "a second import keeps what is there"
        );
    }

    #[test]
    fn import_replaces_a_damaged_object_and_keeps_an_intact_one() {
        let src = MemoryStore::default();
        let (patch, render) = chain(&src);
        let c = closure(&src, "p", std::slice::from_ref(&render.step))
            .unwrap()
            .unwrap();
        let dst = MemoryStore::default();
        let (_, out) = manifest_for("patch/n", "p", &[("patch", b"machine: {}\n")]);
        dst.put(&patch, &out).unwrap();
        dst.objects
            .lock()
            .unwrap()
            .get_mut(&patch.key)
            .unwrap()
            .1
            .insert("patch".into(), b"tampered".to_vec());
        let r = import(&dst, &c).unwrap();
        assert_eq!((r.added, r.replaced), (vec![render.key], vec![patch.key]));
        assert_eq!(
            dst.read_output(&patch.key, "patch").unwrap(),
            b"machine: {}\n"
        );
    }

    #[test]
    fn export_refuses_an_incomplete_closure_and_nothing_realised_is_none() {
        let store = MemoryStore::default();
        let (patch, render) = chain(&store);
        assert!(
            closure(&store, "other", std::slice::from_ref(&render.step))
                .unwrap()
                .is_none()
        );
        store.discard(&patch.key).unwrap();
        let e = closure(&store, "p", std::slice::from_ref(&render.step))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("patch/n:patch") && e.contains("no intact object"),
            "{e}"
        );
    }

    #[test]
    fn small_limits_bound_entries_sizes_and_totals() {
        let store = MemoryStore::default();
        let (_, render) = chain(&store);
        let c = closure(&store, "p", std::slice::from_ref(&render.step))
            .unwrap()
            .unwrap();
        let bytes = write_archive(&c, &Limits::DEFAULT).unwrap();
        let count = Limits {
            max_entries: 5,
            ..Limits::DEFAULT
        };
        let e = read_archive(&bytes[..], &count).unwrap_err();
        assert!(e.reason.contains("more than 5 entries"), "{e}");
        let entry = Limits {
            max_entry_bytes: 10,
            ..Limits::DEFAULT
        };
        let e = read_archive(&bytes[..], &entry).unwrap_err();
        assert_eq!(e.entry, HEADER_NAME, "{e}");
        assert!(
            e.reason
                .contains("more than the bound of 10 bytes per entry"),
            "{e}"
        );
        let data: u64 = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().size())
            .sum();
        let total = Limits {
            max_total_bytes: data - 1,
            ..Limits::DEFAULT
        };
        let e = read_archive(&bytes[..], &total).unwrap_err();
        assert!(e.reason.contains("bytes per archive"), "{e}");
        assert!(
            write_archive(&c, &count).is_err(),
            "export checks the same bounds"
        );
        assert!(write_archive(&c, &entry).is_err());
        // Truncated anywhere before the end-of-archive blocks: refused, never a partial
        // closure (a cut at an entry boundary is caught by the header's entry count).
        for cut in (0..bytes.len() - 1024)
            .step_by(97)
            .chain([bytes.len() - 1024])
        {
            assert!(
                read_archive(&bytes[..cut], &Limits::DEFAULT).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_empty_or_garbage_input_is_refused() {
        let e = read_archive(&b""[..], &Limits::DEFAULT).unwrap_err();
        assert_eq!(e.entry, "#1 (the first entry)");
        assert!(e.reason.contains("truncated"), "{e}");
        let e = read_archive(&[b'x'; 2048][..], &Limits::DEFAULT).unwrap_err();
        assert!(e.reason.contains("corrupt archive"), "{e}");
        // Only the end-of-archive blocks: a valid tar, but not an export.
        let e = read_archive(&[0u8; 1024][..], &Limits::DEFAULT).unwrap_err();
        assert_eq!(e.entry, HEADER_NAME, "{e}");
    }

    /// Kept in step with graph.rs: every step declared secret has its kind in SECRET_KINDS.
    #[test]
    fn secret_kinds_match_the_graph() {
        let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let p = crate::profile::load(&profiles.join("homelab.yaml"))
            .unwrap()
            .profile;
        let contract: crate::profile::Contract = "v1.11".parse().unwrap();
        let mut declared = BTreeSet::new();
        for step in crate::graph::steps(&p, contract) {
            if step.secret {
                declared.insert(step.id.kind().to_string());
            } else {
                assert!(
                    !SECRET_KINDS.contains(&step.id.kind()),
                    "{} is not secret",
                    step.id
                );
            }
        }
        assert_eq!(
            declared,
            SECRET_KINDS.iter().map(|s| s.to_string()).collect()
        );
    }
}
