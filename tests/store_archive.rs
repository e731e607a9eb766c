//! `talix store export` / `talix store import`: a profile's closure travels as a tar archive to
//! another machine (simulated by another temp dir and store path holding only the committed
//! files), where `plan` finds everything cached and the imported objects equal a local build;
//! a corpus of hostile archives is refused entry by entry with the store left byte-for-byte
//! as it was.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{Cluster, Workspace};

const HOMELAB: &str = "profiles/homelab.yaml";
const DEMO: &str = "profiles/demo.yaml";

/// Another machine: a fresh temp dir holding only the committed files of `from` (profiles,
/// patches, lock files, encrypted secrets), its own store elsewhere, the same age identity.
struct Elsewhere {
    ws: Workspace,
    store: tempfile::TempDir,
    talosctl: PathBuf,
    key: PathBuf,
}

impl Elsewhere {
    fn of(from: &Cluster) -> Self {
        let ws = Workspace::empty();
        common::copy_dir(&from.root().join("profiles"), &ws.root().join("profiles"));
        Self {
            ws,
            store: tempfile::tempdir().unwrap(),
            talosctl: from.root().join("bin/talosctl"),
            key: from.root().join("key.txt"),
        }
    }

    fn store(&self) -> &Path {
        self.store.path()
    }

    fn talix(&self) -> Command {
        let mut cmd = self.ws.talix();
        cmd.env("TALIX_TALOSCTL", &self.talosctl)
            .env("TALIX_AGE_KEY_FILE", &self.key)
            .arg("--store")
            .arg(self.store());
        cmd
    }
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().success().get_output().stdout.clone()).unwrap()
}

/// `plan --json`: step id -> (status, key).
fn plan(cmd: &mut Command) -> BTreeMap<String, (String, Option<String>)> {
    let out = cmd.assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                (
                    s["status"].as_str().unwrap().to_string(),
                    s["key"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

#[test]
fn export_then_import_into_an_empty_store_elsewhere_plans_all_cached() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    c.talix_fast().args(["up", DEMO]).assert().success();
    // A bare file name: written in the current folder.
    let text = stdout(c.talix().args(["store", "export", DEMO, "-o", "demo.tar"]));
    assert!(
        text.contains("demo.tar: ") && text.contains(" refs"),
        "{text}"
    );
    let archive = c.root().join("demo.tar");
    let first = std::fs::read(&archive).unwrap();
    // Deterministic: the same store gives the same bytes.
    c.talix()
        .args(["store", "export", DEMO, "-o", "again.tar"])
        .assert()
        .success();
    assert_eq!(first, std::fs::read(c.root().join("again.tar")).unwrap());
    let here = plan(c.talix().args(["plan", "--json", DEMO]));

    let there = Elsewhere::of(&c);
    assert!(!there.store().join("v1").exists(), "an empty store");
    let text = stdout(there.talix().args(["store", "import"]).arg(&archive));
    assert!(text.contains(" added, 0 already present"), "{text}");
    let imported = plan(there.talix().args(["plan", "--json", DEMO]));
    assert_eq!(imported.len(), 34, "{imported:?}");
    for (id, (status, _)) in &imported {
        assert_eq!(status, "cached", "{id}");
    }
    assert_eq!(imported, here, "the same steps with the same keys");
    // The imported store exports the very same archive, and importing twice adds nothing.
    there
        .talix()
        .args(["store", "export", DEMO, "-o"])
        .arg(there.ws.root().join("back.tar"))
        .assert()
        .success();
    assert_eq!(
        first,
        std::fs::read(there.ws.root().join("back.tar")).unwrap()
    );
    let text = stdout(there.talix().args(["store", "import"]).arg(&archive));
    assert!(text.contains(": imported 34 objects"), "{text}");
    assert!(text.contains("(0 added, 34 already present"), "{text}");
    there.talix().args(["store", "verify"]).assert().success();
    // Secret objects travelled as ciphertext: no secret of the bundle is in the archive.
    let secret_outputs = parse(&first)
        .into_iter()
        .filter(|e| {
            let p = e.path();
            [
                "/out/controlplane",
                "/out/worker",
                "/out/config",
                "/out/talosconfig",
                "/out/kubeconfig",
            ]
            .iter()
            .any(|s| p.ends_with(s))
        })
        .map(|e| e.data)
        .collect::<Vec<_>>();
    assert_eq!(
        secret_outputs.len(),
        2 + 5 + 1 + 1,
        "base configs, renders, talosconfig, kubeconfig"
    );
    for bytes in &secret_outputs {
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "age ciphertext"
        );
    }
    let bundle = stdout(c.talix().args(["secrets", "show", DEMO]));
    let needles = common::secret_needles(&bundle);
    assert!(needles.len() > 5, "{}", needles.len());
    for n in &needles {
        assert!(
            !common::contains(&first, n.as_bytes()),
            "a secret in the archive"
        );
    }
}

/// The stored bytes of every plain output of `key` in the store at `store`.
fn plain_outputs(store: &Path, key: &str) -> BTreeMap<String, (bool, Vec<u8>)> {
    let dir = store.join("v1/objects").join(key);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, i)| i["stored"].as_bool().unwrap())
        .map(|(name, i)| {
            (
                name.clone(),
                (
                    i["encrypted"].as_bool().unwrap(),
                    std::fs::read(dir.join("out").join(name)).unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn an_imported_object_equals_what_a_local_build_produces() {
    let c = Cluster::new();
    c.talix().args(["build", HOMELAB]).assert().success();
    c.talix()
        .args(["store", "export", HOMELAB, "-o", "homelab.tar"])
        .assert()
        .success();
    let archive = c.root().join("homelab.tar");

    let imported = Elsewhere::of(&c);
    imported
        .talix()
        .args(["store", "import"])
        .arg(&archive)
        .assert()
        .success();
    let built = Elsewhere::of(&c);
    let text = stdout(built.talix().args(["build", HOMELAB]));
    assert!(
        text.contains("homelab: 14 built, 0 cached"),
        "a real local build: {text}"
    );
    // After the import nothing needs building.
    let text = stdout(imported.talix().args(["build", HOMELAB]));
    assert!(text.contains("homelab: 0 built, 14 cached"), "{text}");

    let a = plan(imported.talix().args(["plan", "--json", HOMELAB]));
    let b = plan(built.talix().args(["plan", "--json", HOMELAB]));
    assert_eq!(a, b, "identical keys");
    let kinds = [
        "secrets",
        "base-config",
        "talosconfig",
        "kubeconfig",
        "patch",
        "render",
    ];
    let mut compared = 0;
    let mut secret = 0;
    for (id, (status, key)) in &a {
        if !kinds.contains(&id.split('/').next().unwrap()) {
            continue;
        }
        assert_eq!(status, "cached", "{id}");
        let key = key.as_ref().unwrap();
        let (x, y) = (
            plain_outputs(imported.store(), key),
            plain_outputs(built.store(), key),
        );
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "{id}"
        );
        for (name, (encrypted, bytes)) in &x {
            if *encrypted {
                secret += 1; // ciphertext differs by design; compared as plaintext below
            } else {
                assert_eq!(bytes, &y[name].1, "{id} output {name}");
                compared += 1;
            }
        }
    }
    assert_eq!(
        (compared, secret),
        (5, 9),
        "5 patches; 2 base configs, talosconfig, kubeconfig, 5 renders"
    );

    // Secret outputs: the decrypted plaintext, through `talix export`.
    let (dx, dy) = (imported.ws.root().join("x"), built.ws.root().join("y"));
    imported
        .talix()
        .args(["export", HOMELAB, "--out"])
        .arg(&dx)
        .assert()
        .success();
    built
        .talix()
        .args(["export", HOMELAB, "--out"])
        .arg(&dy)
        .assert()
        .success();
    let mut names: Vec<String> = std::fs::read_dir(&dx)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in &names {
        assert_eq!(
            std::fs::read(dx.join(name)).unwrap(),
            std::fs::read(dy.join(name)).unwrap(),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

/// One tar entry as raw header fields: whatever a hostile tool could write.
#[derive(Clone)]
struct Raw {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
    /// Declared size, when it differs from the data's.
    size: Option<u64>,
    link: Vec<u8>,
}

impl Raw {
    fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            kind: b'0',
            data: data.to_vec(),
            size: None,
            link: vec![],
        }
    }
    fn path(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A tar archive of `entries`, headers written field by field (no path checks), ended by the
/// two zero blocks.
fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(&e.name);
            old.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// The entries of an archive talix wrote.
fn parse(bytes: &[u8]) -> Vec<Raw> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            Raw {
                name: e.path_bytes().into_owned(),
                kind: e.header().entry_type().as_byte(),
                data,
                size: None,
                link: vec![],
            }
        })
        .collect()
}

/// Every path below `dir` with its type, mode and content: the store byte for byte.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        return vec![];
    }
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.path().symlink_metadata().unwrap();
            let what = if meta.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                format!(
                    "file {:o} {}",
                    meta.permissions().mode(),
                    blake3::hash(&bytes)
                )
            } else {
                format!("{:?} {:o}", meta.file_type(), meta.permissions().mode())
            };
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                what,
            )
        })
        .collect()
}

/// The output entry of the first object whose manifest names `kind`, and its object key.
fn output_of(entries: &[Raw], kind: &str) -> (usize, String) {
    let key = manifest_of(entries, kind).1;
    let i = entries
        .iter()
        .position(|e| e.path().starts_with(&format!("v1/objects/{key}/out/")) && e.kind == b'0')
        .unwrap();
    (i, key)
}

/// The manifest entry (index, key, parsed) of the first object of step kind `kind`.
fn manifest_of(entries: &[Raw], kind: &str) -> (usize, String, serde_json::Value) {
    entries
        .iter()
        .enumerate()
        .find_map(|(i, e)| {
            let p = e.path();
            let key = p
                .strip_prefix("v1/objects/")?
                .strip_suffix("/manifest.json")?;
            let m: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
            (m["step"].as_str()?.split('/').next() == Some(kind)).then(|| (i, key.to_string(), m))
        })
        .unwrap()
}

fn object_hash(bytes: &[u8]) -> String {
    talix::digest::Digest::of_domain(talix::digest::domain::OBJECT, bytes).to_string()
}

/// (name, archive bytes, the entry refused, a part of the reason).
fn corpus(legit: &[u8]) -> Vec<(&'static str, Vec<u8>, String, &'static str)> {
    let entries = parse(legit);
    let with = |edit: &dyn Fn(&mut Vec<Raw>)| {
        let mut e = entries.clone();
        edit(&mut e);
        raw_tar(&e)
    };
    let appended = |extra: Raw| with(&|e| e.push(extra.clone()));
    let (patch_i, _) = output_of(&entries, "patch");
    let patch_path = entries[patch_i].path();
    let (render_i, _) = output_of(&entries, "render");
    let typed = |kind: u8, link: &str| {
        with(&|e| {
            e[patch_i].kind = kind;
            e[patch_i].data.clear();
            e[patch_i].link = link.as_bytes().to_vec();
        })
    };
    let (ma, ka, _) = manifest_of(&entries, "patch");
    let (mb, kb, _) = manifest_of(&entries, "render");
    let (tc_m, tc_key, mut tc) = manifest_of(&entries, "talosconfig");
    let plain = b"context: plaintext\n";
    let info = &mut tc["outputs"]["talosconfig"];
    info["encrypted"] = false.into();
    info["hash"] = object_hash(plain).into();
    info["stored_hash"] = object_hash(plain).into();
    info["size"] = plain.len().into();
    let tc_plain = serde_json::to_vec_pretty(&tc).unwrap();
    let header = |edit: &dyn Fn(&mut serde_json::Value)| {
        with(&|e| {
            let mut h: serde_json::Value = serde_json::from_slice(&e[0].data).unwrap();
            edit(&mut h);
            e[0].data = serde_json::to_vec_pretty(&h).unwrap();
        })
    };
    let big = {
        let mut r = Raw::file(&patch_path.replace("/out/patch", "/out/big"), b"");
        r.size = Some((16 << 20) + 1);
        // Only the header: the declared size is never read.
        let mut bytes = raw_tar(&entries[..1]);
        bytes.truncate(bytes.len() - 1024);
        bytes.extend(raw_tar(&[r])[..512].iter());
        bytes
    };
    let many = {
        let mut e = vec![entries[0].clone()];
        for i in 0..16_384u32 {
            let mut d = Raw::file(&format!("v1/objects/{i:064x}/"), b"");
            d.kind = b'5';
            e.push(d);
        }
        raw_tar(&e)
    };
    let header_name = "talix-export-v1.json".to_string();
    vec![
        (
            "traversal",
            appended(Raw::file("../x", b"evil")),
            "../x".into(),
            "path traversal",
        ),
        (
            "traversal inside v1",
            appended(Raw::file("v1/../../x", b"evil")),
            "v1/../../x".into(),
            "path traversal",
        ),
        (
            "absolute path",
            appended(Raw::file("/tmp/talix-evil", b"evil")),
            "/tmp/talix-evil".into(),
            "absolute path",
        ),
        (
            "symlink",
            typed(b'2', "/etc/passwd"),
            patch_path.clone(),
            "symbolic link",
        ),
        (
            "hard link",
            typed(b'1', "talix-export-v1.json"),
            patch_path.clone(),
            "hard link",
        ),
        (
            "char device",
            typed(b'3', ""),
            patch_path.clone(),
            "character device",
        ),
        (
            "block device",
            typed(b'4', ""),
            patch_path.clone(),
            "block device",
        ),
        ("fifo", typed(b'6', ""), patch_path.clone(), "fifo"),
        (
            "pax header",
            with(&|e| {
                let mut x = Raw::file("pax", b"30 path=v1/objects/evil/x\n");
                x.kind = b'x';
                e.insert(1, x);
            }),
            "pax".into(),
            "pax extension header",
        ),
        (
            "flipped byte in a plain object",
            with(&|e| e[patch_i].data[0] ^= 1),
            patch_path.clone(),
            "does not match its hash",
        ),
        (
            "flipped byte in a secret object",
            with(&|e| {
                let n = e[render_i].data.len();
                e[render_i].data[n / 2] ^= 1
            }),
            entries[render_i].path(),
            "does not match its hash",
        ),
        (
            "a manifest for another key",
            with(&|e| e[ma].data = e[mb].data.clone()),
            format!("v1/objects/{ka}/manifest.json"),
            "belongs to object",
        ),
        (
            "a secret step's output in plaintext",
            with(&|e| {
                e[tc_m].data = tc_plain.clone();
                let out = e
                    .iter()
                    .position(|r| r.path() == format!("v1/objects/{tc_key}/out/talosconfig"))
                    .unwrap();
                e[out].data = plain.to_vec();
            }),
            format!("v1/objects/{tc_key}/out/talosconfig"),
            "not age ciphertext",
        ),
        (
            "truncated",
            legit[..legit.len() / 2].to_vec(),
            String::new(),
            "truncated",
        ),
        (
            "cut at an entry boundary",
            with(&|e| {
                e.pop();
            }),
            header_name.clone(),
            "entries after it",
        ),
        (
            "oversized entry",
            big,
            patch_path.replace("/out/patch", "/out/big"),
            "more than the bound",
        ),
        (
            "too many entries",
            many,
            format!("v1/objects/{:064x}/", 16_383),
            "more than 16384 entries",
        ),
        (
            "duplicate entry",
            with(&|e| {
                let d = e[patch_i].clone();
                e.push(d)
            }),
            patch_path.clone(),
            "duplicate entry",
        ),
        (
            "unknown top-level file",
            appended(Raw::file("README", b"hello")),
            "README".into(),
            "not part of a talix store export",
        ),
        (
            "a ref as a file",
            appended(Raw::file("v1/refs/homelab/secrets", kb.as_bytes())),
            "v1/refs/homelab/secrets".into(),
            "refs travel in the header",
        ),
        (
            "no header",
            with(&|e| {
                e.remove(0);
            }),
            header_name.clone(),
            "missing",
        ),
        (
            "a ref naming another step's object",
            header(&|h| h["refs"]["secrets"] = kb.clone().into()),
            header_name.clone(),
            "which is a realisation of render/",
        ),
        (
            "a ref outside the refs folder",
            header(&|h| h["refs"]["../../escape"] = kb.clone().into()),
            header_name.clone(),
            "is not a step id",
        ),
        (
            "a profile name that is a path",
            header(&|h| h["profile"] = "../../x".into()),
            header_name.clone(),
            "is not a profile name",
        ),
    ]
}

#[test]
fn hostile_archives_are_refused_naming_the_entry_and_change_nothing() {
    let c = Cluster::new();
    c.talix().args(["build", HOMELAB]).assert().success();
    c.talix()
        .args(["store", "export", HOMELAB, "-o", "legit.tar"])
        .assert()
        .success();
    let legit = std::fs::read(c.root().join("legit.tar")).unwrap();
    let store = c.root().join("store");
    let before = snapshot(&store);
    assert!(before.len() > 50, "a populated store: {}", before.len());
    let cases = corpus(&legit);
    assert_eq!(cases.len(), 24);
    let nowhere = tempfile::tempdir().unwrap();
    for (name, bytes, entry, why) in cases {
        let file = c.root().join("hostile.tar");
        std::fs::write(&file, &bytes).unwrap();
        // Into the populated workspace store, and into a store that does not exist yet.
        for target in [None, Some(nowhere.path().join("store"))] {
            let mut cmd = c.talix();
            if let Some(t) = &target {
                cmd.arg("--store").arg(t);
            }
            let out = cmd
                .args(["store", "import"])
                .arg(&file)
                .assert()
                .code(2)
                .get_output()
                .clone();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("entry {entry:?} refused")) || entry.is_empty(),
                "{name}: names the entry {entry:?}: {err}"
            );
            assert!(err.contains(" refused: "), "{name}: {err}");
            assert!(err.contains(why), "{name}: says why ({why}): {err}");
            assert!(err.contains("nothing was imported"), "{name}: {err}");
            assert!(out.stdout.is_empty(), "{name}");
            match &target {
                None => assert_eq!(snapshot(&store), before, "{name}: store unchanged"),
                Some(t) => assert!(!t.exists(), "{name}: no store created"),
            }
        }
        assert_eq!(
            std::fs::read_dir(store.join("v1/tmp")).unwrap().count(),
            0,
            "{name}: nothing left in scratch"
        );
    }
    // The legit archive passes the same gate (into the same store: everything already there).
    let text = stdout(c.talix().args(["store", "import", "legit.tar"]));
    assert!(text.contains("0 added, 14 already present"), "{text}");
    assert_eq!(snapshot(&store), before, "the store already held all of it");
}

#[test]
fn import_refuses_what_is_not_an_archive_and_export_what_is_not_built() {
    let c = Cluster::new();
    let out = c
        .talix()
        .args([
            "--store",
            "empty-store",
            "store",
            "export",
            HOMELAB,
            "-o",
            "x.tar",
        ])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(
        err.contains("nothing of homelab is realised") && err.contains("talix build"),
        "{err}"
    );
    assert!(!c.root().join("x.tar").exists());
    // Never over a committed file.
    c.talix().args(["build", HOMELAB]).assert().success();
    let lock = std::fs::read(c.root().join("profiles/homelab.lock")).unwrap();
    let out = c
        .talix()
        .args(["store", "export", HOMELAB, "-o", "profiles/homelab.lock"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("it is the lock file"));
    assert_eq!(
        std::fs::read(c.root().join("profiles/homelab.lock")).unwrap(),
        lock
    );
    // Not a tar file; a folder; a missing file.
    std::fs::write(c.root().join("junk.tar"), b"{ this is not tar }").unwrap();
    for (arg, why) in [
        ("junk.tar", "refused"),
        ("profiles", "is not a regular file"),
        ("missing.tar", "missing.tar"),
    ] {
        let out = c
            .talix()
            .args(["store", "import", arg])
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains(why), "{arg}: {err}");
    }
}

/// Import holds the store's writer lock: while another writer has it, import waits (and says
/// so) and writes nothing; once it is released the import completes.
#[test]
fn import_waits_for_the_store_lock_and_writes_nothing_meanwhile() {
    use std::io::BufRead;
    let c = Cluster::new();
    c.talix().args(["build", HOMELAB]).assert().success();
    c.talix()
        .args(["store", "export", HOMELAB, "-o", "homelab.tar"])
        .assert()
        .success();
    let store = c.root().join("other-store");
    std::fs::create_dir_all(store.join("v1")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join("v1/lock"))
        .unwrap();
    lock.lock().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_talix"))
        .current_dir(c.root())
        .env_remove("TALIX_STORE")
        .args(["--store"])
        .arg(&store)
        .args(["store", "import", "homelab.tar"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // A generous bound on a busy machine; the condition is the message, not the time.
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("import says it waits for the lock");
    assert!(line.contains("waiting for another talix process"), "{line}");
    assert!(
        !store.join("v1/objects").exists(),
        "nothing is written while another writer holds the lock"
    );
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("14 added"), "{text}");
    assert_eq!(
        std::fs::read_dir(store.join("v1/objects")).unwrap().count(),
        14
    );
}
