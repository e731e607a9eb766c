//! Conformance of `talosctl machineconfig patch` with upstream's config patcher on upstream's
//! own fixtures: each test replays one case of
//! pkg/machinery/config/configpatcher/apply_test.go@v1.14.0-rc.1 through the simulator CLI
//! and requires byte-identical output (or the upstream error).
//!
//! The CLI (cmd/talosctl/cmd/mgmt/machineconfig/patch.go@v1.14.0-rc.1) reads the input file
//! and calls `configpatcher.Apply(configpatcher.WithBytes(data), patches)` with the patches
//! loaded by `configpatcher.LoadPatches` in flag order, then prints `patched.Bytes()` with
//! `fmt.Printf("%s\n")`, or writes the bytes as they are to `-o`. So each case corresponds to
//! the `WithBytes` subtest of its apply_test.go test (the `WithConfig` subtests expect the
//! same bytes). It does not validate the result. The fixtures are vendored under
//! sim/testdata/upstream/configpatcher (see SOURCE there).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/upstream/configpatcher")
}

/// A scratch directory with a `talosctl` symlink to the simulator binary.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talos-sim"), dir.path().join("talosctl"))
            .unwrap();
        Sandbox { dir }
    }

    /// `talosctl machineconfig patch <input> --patch @<p>... [extra]`, run in the fixture
    /// directory so that the `@testdata/...`-style relative patch paths resolve as upstream.
    fn patch(&self, input: &str, patches: &[&str], extra: &[&str]) -> Output {
        let mut cmd = Command::new(self.dir.path().join("talosctl"));
        cmd.current_dir(fixtures())
            .env("HOME", self.dir.path())
            .env_remove("TALOSCONFIG")
            .env_remove("TALOSCTL_SIM_LOG")
            .args(["machineconfig", "patch", input]);
        for p in patches {
            cmd.arg("--patch").arg(format!("@{p}"));
        }
        cmd.args(extra).output().unwrap()
    }

    fn out_path(&self) -> PathBuf {
        self.dir.path().join("out").join("patched.yaml")
    }
}

fn fixture(name: &str) -> Vec<u8> {
    fs_err::read(fixtures().join(name)).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a case both ways: `-o FILE` must hold exactly `expected`, stdout exactly `expected`
/// plus the newline `fmt.Printf("%s\n")` adds.
fn assert_patches_to(input: &str, patches: &[&str], expected: &str) {
    let sb = Sandbox::new();
    let want = fixture(expected);

    let out_path = sb.out_path();
    let o = sb.patch(input, patches, &["-o", out_path.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert_eq!(o.stdout, b"", "nothing on stdout with -o");
    let written = fs_err::read(&out_path).unwrap();
    assert_eq!(
        text(&written),
        text(&want),
        "-o output differs from {expected}"
    );
    assert_eq!(written, want);

    let o = sb.patch(input, patches, &[]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let mut want_stdout = want.clone();
    want_stdout.push(b'\n');
    assert_eq!(
        text(&o.stdout),
        text(&want_stdout),
        "stdout differs from {expected}"
    );
}

/// Runs a case that must fail; returns stderr.
fn assert_fails(input: &str, patches: &[&str]) -> String {
    let sb = Sandbox::new();
    let out_path = sb.out_path();
    let o = sb.patch(input, patches, &["-o", out_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", text(&o.stdout));
    assert_eq!(o.stdout, b"");
    assert!(!out_path.exists(), "nothing is written on failure");
    text(&o.stderr)
}

/// apply_test.go `TestApply`: strategic, two JSON6902 (joined into one by LoadPatches), then
/// two strategic patches; zero values of non-omitempty fields appear (`type: ""`,
/// `certSANs: []`, vlan `routes: []`), `foo: {$patch: delete}` removes a map key.
#[test]
fn apply_mixed_strategic_and_json_patches() {
    assert_patches_to(
        "apply/config.yaml",
        &[
            "apply/strategic1.yaml",
            "apply/jsonpatch1.yaml",
            "apply/jsonpatch2.yaml",
            "apply/strategic2.yaml",
            "apply/strategic3.yaml",
        ],
        "apply/expected.yaml",
    );
}

/// apply_test.go `TestApplyMultiDocFail`: a JSON6902 patch on a multi-document config.
#[test]
fn apply_json_patch_to_multidoc_fails() {
    let stderr = assert_fails(
        "multidoc/config.yaml",
        &["multidoc/jsonpatch.yaml", "multidoc/strategic1.yaml"],
    );
    assert!(
        stderr.contains(
            "JSON6902 patches are not supported for multi-document machine configuration"
        ),
        "{stderr}"
    );
}

/// apply_test.go `TestApplyMultiDoc`: typed documents merge by (apiVersion, kind, name),
/// ExtensionServiceConfig config files by mountPath, and deleting a document that is not
/// there (strategic3.yaml) is silently skipped; `cluster: null` is how Go encodes a nil
/// cluster.
#[test]
fn apply_multidoc_strategic_patches() {
    assert_patches_to(
        "multidoc/config.yaml",
        &[
            "multidoc/strategic1.yaml",
            "multidoc/strategic2.yaml",
            "multidoc/strategic3.yaml",
        ],
        "multidoc/expected.yaml",
    );
}

/// apply_test.go `TestApplyToEmptyConfig` patches an empty `container.New()`, which has no
/// CLI equivalent (an input file without documents); its patch alone must load and apply to
/// the multi-document fixture, appending nothing twice.
#[test]
fn apply_to_config_without_those_documents_appends_them() {
    let sb = Sandbox::new();
    let o = sb.patch("apply/config.yaml", &["multidoc/strategic2.yaml"], &[]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.matches("\n---\n").count(), 2, "{out}");
    assert!(out.contains("kind: SideroLinkConfig\n"));
    assert!(out.contains("kind: ExtensionServiceConfig\n"));
}

/// apply_test.go `TestApplyAuditPolicy`: `auditPolicy` carries `merge:"replace"`.
#[test]
fn apply_audit_policy_is_replaced() {
    assert_patches_to(
        "auditpolicy/config.yaml",
        &["auditpolicy/patch1.yaml"],
        "auditpolicy/expected.yaml",
    );
}

/// apply_test.go `TestApplyWithManifestNewline`: leading blank lines of inline manifest
/// contents are dropped when decoding.
#[test]
fn apply_inline_manifest_leading_newline_is_dropped() {
    assert_patches_to(
        "apply/config.yaml",
        &["apply/strategic4.yaml"],
        "apply/expected_manifests.yaml",
    );
}

/// apply_test.go `TestApplyMultiDocDelete`: delete a document, a list item by key and a field,
/// then re-add an item that was deleted.
#[test]
fn apply_multidoc_delete() {
    assert_patches_to(
        "patchdelete/config.yaml",
        &["patchdelete/strategic1.yaml"],
        "patchdelete/expected.yaml",
    );
}

/// apply_test.go `TestApplyMultiDocCPDelete`: deletes leave no empty `nodeLabels: {}` or
/// `admissionControl: []` behind (omitempty).
#[test]
fn apply_controlplane_delete() {
    assert_patches_to(
        "patchdelete/controlplane_orig.yaml",
        &[
            "patchdelete/strategic2.yaml",
            "patchdelete/strategic3.yaml",
            "patchdelete/strategic4.yaml",
        ],
        "patchdelete/controlplane_expected.yaml",
    );
}

/// apply_test.go `TestPatchDeleteMissing`: deleting below a nil pointer fails.
#[test]
fn patch_delete_missing_path_fails() {
    let stderr = assert_fails(
        "patchdeletemissing/config.yaml",
        &["patchdeletemissing/strategic1.yaml"],
    );
    assert!(
        stderr.contains(
            "patch delete: path 'machine.network.hostname' in document '/v1alpha1': failed to delete path 'machine.network.hostname': lookup failed"
        ),
        "{stderr}"
    );
}

/// apply_test.go `TestPatchLink`: delete a LinkConfig address by value and add another.
#[test]
fn patch_link_config() {
    assert_patches_to(
        "patchlink/base.yaml",
        &["patchlink/patch.yaml"],
        "patchlink/expected.yaml",
    );
}

/// apply_test.go `TestPatchMixed`: three documents of one kind and name in one patch file
/// (delete a field, re-add it, set another) apply in order.
#[test]
fn patch_mixed_same_document_several_times() {
    assert_patches_to(
        "patchmixed/base.yaml",
        &["patchmixed/patch.yaml"],
        "patchmixed/expected.yaml",
    );
}

/// patch.go: without patches the input bytes are printed unchanged (plus the newline), and
/// nothing is validated: a config no node would accept still patches.
#[test]
fn patch_does_not_validate() {
    let sb = Sandbox::new();
    let o = sb.patch("patchdeletemissing/config.yaml", &[], &[]);
    assert!(o.status.success());
    let mut want = fixture("patchdeletemissing/config.yaml");
    want.push(b'\n');
    assert_eq!(o.stdout, want);
    // `machine: {}` has no type, token or CA: invalid for any node, yet it patches.
    let o = sb.patch("patchdeletemissing/config.yaml", &["strategic.yaml"], &[]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "version: v1alpha1\nmachine:\n    type: \"\"\n    token: \"\"\n    certSANs: []\n    network:\n        hostname: foo.bar\ncluster: null\n\n"
    );
}
