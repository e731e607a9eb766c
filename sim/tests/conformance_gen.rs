//! Conformance of the simulator's `talosctl gen config` with upstream's own generator golden
//! files (vendored in `sim/testdata/upstream/`, see its `SOURCE`), byte for byte, for every
//! supported version contract (v1.11..v1.14), run through a `talosctl` symlink the way talix
//! runs it.
//!
//! How upstream produces the goldens (`pkg/machinery/config/types/v1alpha1/v1alpha1_stability_test.go`
//! @v1.14.0-rc.1): `generate.NewInput("base", "https://base:6443", "1.28.0",
//! WithSecretsBundle(testdata/stability/secrets.yaml), WithVersionContract(c))`, then
//! `Config(type).EncodeBytes(WithComments(CommentsDisabled))`.
//!
//! What `talosctl gen config` adds on top of that Go API (`cmd/talosctl/cmd/mgmt/gen/config.go`
//! @v1.14.0-rc.1 and @v1.11.6, `cmd/talosctl/pkg/mgmt/helpers/image.go` at both tags,
//! `pkg/images/images.go` @v1.14.0-rc.1): every option of `generate.NewInput` the CLI passes is
//! the Go API default except
//! - `--install-disk` (default `/dev/sda`; `generate.DefaultOptions()` has an empty disk), and
//! - `--install-image` (default `helpers.DefaultImage(repo)` = `<repo>:<$TAG or version.Tag>`, repo
//!   `ghcr.io/siderolabs/installer` up to v1.13 (`images.DefaultInstallerImageRepository`),
//!   `factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba`
//!   on v1.14 (`images.InstallerImageRepository("metal")`); the Go API default is empty);
//! - `--with-docs`/`--with-examples` (default on: comments; off = `CommentsDisabled`).
//!
//! The remaining CLI options equal the Go API defaults: `--dns-domain cluster.local`
//! (`DefaultOptions`), `--with-cluster-discovery` true (`NewInput` defaults it to true),
//! `--additional-sans` empty, `--with-kubespan` false (not passed at all when false), no registry
//! mirrors, `--persist` true on v1.11/v1.12 (`DefaultOptions`).
//!
//! So [`go_api_flags_reproduce_the_goldens_byte_for_byte`] drives the simulator with
//! `--install-disk "" --install-image "" --with-docs=false --with-examples=false`, which is
//! exactly the Go API call, and needs no transformation at all. [`cli_defaults_add_only_the_install_defaults`]
//! runs with the CLI's defaults and removes exactly what those two defaults add, nothing else:
//! - contracts ≤ v1.13 (`init.go`/`worker.go`: `machine.install` with `InstallDisk`,
//!   `InstallImage`): the two lines `disk: /dev/sda` and `image: <default>` right after
//!   `    install:` in the v1alpha1 document;
//! - contract v1.14 (`generate/init.go`, `worker.go` @v1.14.0-rc.1: `machine.install` is not
//!   generated when `UnattendedInstallConfig()`; with a non-empty install disk an
//!   `UnattendedInstallConfig` document is appended right after `DiscoveryIdentityConfig`, its
//!   `installer.image` the install image, `provisioning.diskSelector.match` the CEL
//!   `disk.dev_path == %q` of the disk, `provisioning.wipe` false): that one document.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/upstream/stability");

/// Contracts with goldens, each with the talosctl releases that generate it (every release from
/// the contract's own on; the goldens are identical at v1.11.6, v1.12.11, v1.13.9, see SOURCE).
const CONTRACTS: &[(&str, &[&str])] = &[
    ("v1.11", &["v1.11.6", "v1.12.11", "v1.13.9", "v1.14.0-rc.1"]),
    ("v1.12", &["v1.12.11", "v1.13.9", "v1.14.0-rc.1"]),
    ("v1.13", &["v1.13.9", "v1.14.0-rc.1"]),
    ("v1.14", &["v1.14.0-rc.1"]),
];

const KINDS: [&str; 2] = ["controlplane", "worker"];

fn golden(name: &str) -> String {
    fs_err::read_to_string(Path::new(UPSTREAM).join(name)).unwrap()
}

/// A scratch directory with a `talosctl` symlink to the simulator and upstream's secrets.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "home", "work"] {
            fs_err::create_dir(dir.path().join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_talos-sim"),
            dir.path().join("bin").join("talosctl"),
        )
        .unwrap();
        fs_err::write(
            dir.path().join("work").join("secrets.yaml"),
            golden("secrets.yaml"),
        )
        .unwrap();
        fs_err::write(
            dir.path().join("work").join("patch.yaml"),
            golden("patch.yaml"),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn run(&self, client: &str, args: &[&str]) -> Output {
        self.run_with_tag(client, None, args)
    }

    fn run_with_tag(&self, client: &str, tag: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.dir.path().join("bin").join("talosctl"));
        if let Some(tag) = tag {
            cmd.env("TAG", tag);
        } else {
            cmd.env_remove("TAG");
        }
        cmd.current_dir(self.work())
            .env("HOME", self.dir.path().join("home"))
            .env("TALOSCTL_SIM_VERSION", client)
            .env_remove("TALOSCONFIG")
            .env_remove("TALOS_HOME")
            .env_remove("TALOSCTL_SIM_LOG")
            .args(args)
            .output()
            .unwrap()
    }

    /// `gen config` as in the stability test, plus `extra`, one output type to stdout.
    fn gen_config(&self, client: &str, contract: &str, kind: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "gen",
            "config",
            "base",
            "https://base:6443",
            "--kubernetes-version",
            "1.28.0",
            "--with-secrets",
            "secrets.yaml",
            "--talos-version",
            contract,
            "--with-docs=false",
            "--with-examples=false",
            "-t",
            kind,
            "-o",
            "-",
        ];
        args.extend(extra);
        let out = self.run(client, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{client} {contract} {kind}: {stderr}"
        );
        assert_eq!(stderr, "generating PKI and tokens\n");
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Splits a multi-document stream into its documents' text (separator lines removed).
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line == "---\n" {
            docs.push(String::new());
        } else {
            docs.last_mut().unwrap().push_str(line);
        }
    }
    docs
}

fn kind_of(doc: &str) -> &str {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or("v1alpha1")
}

#[test]
fn go_api_flags_reproduce_the_goldens_byte_for_byte() {
    let sb = Sandbox::new();
    for (contract, clients) in CONTRACTS {
        for client in *clients {
            for kind in KINDS {
                let out = sb.gen_config(
                    client,
                    contract,
                    kind,
                    &["--install-disk", "", "--install-image", ""],
                );
                let expected = golden(&format!("{contract}/base-{kind}.yaml"));
                assert!(
                    out == expected,
                    "talosctl {client} --talos-version {contract} {kind}:\n{}",
                    first_difference(&out, &expected)
                );
            }
        }
    }
}

/// An older talosctl asked for a newer contract generates its own series' layout: its generator
/// has no gate past its own series (newest `Greater(...)` in pkg/machinery/config/contract.go:
/// `TalosVersion1_10`@v1.11.6, `TalosVersion1_11`@v1.12.11, `TalosVersion1_12`@v1.13.9), so
/// the output is its own contract's golden.
#[test]
fn older_talosctl_asked_for_v1_14_generates_its_own_series() {
    let sb = Sandbox::new();
    for (client, series) in [
        ("v1.11.6", "v1.11"),
        ("v1.12.11", "v1.12"),
        ("v1.13.9", "v1.13"),
    ] {
        for kind in KINDS {
            let out = sb.gen_config(
                client,
                "v1.14",
                kind,
                &["--install-disk", "", "--install-image", ""],
            );
            let expected = golden(&format!("{series}/base-{kind}.yaml"));
            assert!(
                out == expected,
                "talosctl {client} --talos-version v1.14 {kind}:\n{}",
                first_difference(&out, &expected)
            );
        }
    }
}

/// The installer image talosctl `client` defaults `--install-image` to (TAG unset).
fn default_install_image(client: &str) -> String {
    if client.starts_with("v1.14.") {
        format!(
            "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:{client}"
        )
    } else {
        format!("ghcr.io/siderolabs/installer:{client}")
    }
}

/// Removes exactly the install defaults the CLI adds (see the module doc); panics if they are
/// not there exactly once, in the expected place.
fn remove_cli_install_defaults(out: &str, contract: &str, client: &str) -> String {
    let image = default_install_image(client);
    if contract != "v1.14" {
        let added = format!("    install:\n        disk: /dev/sda\n        image: {image}\n");
        assert_eq!(
            out.matches(&added).count(),
            1,
            "{client} {contract}:\n{out}"
        );
        return out.replacen(&added, "    install:\n", 1);
    }
    let added = format!(
        "apiVersion: v1alpha1\nkind: UnattendedInstallConfig\ninstaller:\n    image: {image}\nprovisioning:\n    diskSelector:\n        match: disk.dev_path == \"/dev/sda\"\n    wipe: false\n"
    );
    let mut docs = documents(out);
    let at = docs
        .iter()
        .position(|d| *d == added)
        .unwrap_or_else(|| panic!("{client} {contract}: no {added}\nin\n{out}"));
    assert_eq!(kind_of(&docs[at - 1]), "DiscoveryIdentityConfig");
    docs.remove(at);
    docs.join("---\n")
}

#[test]
fn cli_defaults_add_only_the_install_defaults() {
    let sb = Sandbox::new();
    for (contract, clients) in CONTRACTS {
        for client in *clients {
            for kind in KINDS {
                let out = sb.gen_config(client, contract, kind, &[]);
                let stripped = remove_cli_install_defaults(&out, contract, client);
                let expected = golden(&format!("{contract}/base-{kind}.yaml"));
                assert!(
                    stripped == expected,
                    "talosctl {client} --talos-version {contract} {kind}:\n{}",
                    first_difference(&stripped, &expected)
                );
            }
        }
    }
}

/// The v1.14 "overrides" worker golden, reproduced with every option the CLI can express:
/// `--additional-sans foo,bar --dns-domain example.com --install-disk /dev/vda
/// --registry-mirror ghcr.io=https://ghcr.io.my-mirror.com` and upstream's `patch.yaml` (a
/// `KubeletConfig` patch). Of the stability test's options only `WithSysctls` has no CLI flag
/// (`WithInstallExtraKernelArgs`, `WithLocalAPIServerPort`, `WithCustomCNIUrl` and
/// `WithAllowSchedulingOnControlPlanes` leave a v1.14 worker untouched, `generate/worker.go`
/// @v1.14.0-rc.1), so exactly its `SysctlConfig` document is dropped from the golden.
#[test]
fn v1_14_worker_with_cli_expressible_overrides_matches_upstream() {
    let sb = Sandbox::new();
    let out = sb.gen_config(
        "v1.14.0-rc.1",
        "v1.14",
        "worker",
        &[
            "--additional-sans",
            "foo,bar",
            "--dns-domain",
            "example.com",
            "--install-disk",
            "/dev/vda",
            "--install-image",
            "",
            "--registry-mirror",
            "ghcr.io=https://ghcr.io.my-mirror.com",
            "--config-patch-worker",
            "@patch.yaml",
        ],
    );
    let mut expected = documents(&golden("v1.14/overrides-worker.yaml"));
    let sysctl = expected
        .iter()
        .position(|d| kind_of(d) == "SysctlConfig")
        .unwrap();
    assert_eq!(
        expected.remove(sysctl),
        "apiVersion: v1alpha1\nkind: SysctlConfig\nparams:\n    foo: bar\n"
    );
    let expected = expected.join("---\n");
    assert!(
        out == expected,
        "overrides worker:\n{}",
        first_difference(&out, &expected)
    );
}

/// The same without the patch, through the no-patch rendering path: only the patched document
/// (`KubeletConfig`, which gains `clusterDNS`) and `SysctlConfig` differ from the golden.
#[test]
fn v1_14_worker_overrides_without_patch_differ_only_in_the_patched_document() {
    let sb = Sandbox::new();
    let out = sb.gen_config(
        "v1.14.0-rc.1",
        "v1.14",
        "worker",
        &[
            "--additional-sans",
            "foo,bar",
            "--dns-domain",
            "example.com",
            "--install-disk",
            "/dev/vda",
            "--install-image",
            "",
            "--registry-mirror",
            "ghcr.io=https://ghcr.io.my-mirror.com",
        ],
    );
    let expected: Vec<String> = documents(&golden("v1.14/overrides-worker.yaml"))
        .into_iter()
        .filter(|d| kind_of(d) != "SysctlConfig")
        .map(|d| d.replace("clusterDNS:\n    - 3.3.3.3\n", ""))
        .collect();
    let expected = expected.join("---\n");
    assert!(
        out == expected,
        "overrides worker without patch:\n{}",
        first_difference(&out, &expected)
    );
}

/// `TAG` overrides the default installer tag even when set but empty (`os.LookupEnv` in
/// `cmd/talosctl/pkg/mgmt/helpers/image.go`@v1.14.0-rc.1 and @v1.11.6).
#[test]
fn install_image_default_takes_tag_from_the_environment() {
    let sb = Sandbox::new();
    for (tag, expected) in [
        ("v9.9.9", "ghcr.io/siderolabs/installer:v9.9.9"),
        // A plain scalar may not end in `:`; go-yaml single-quotes it.
        ("", "'ghcr.io/siderolabs/installer:'"),
    ] {
        let out = sb.run_with_tag(
            "v1.13.9",
            Some(tag),
            &[
                "gen",
                "config",
                "base",
                "https://base:6443",
                "--with-secrets",
                "secrets.yaml",
                "--with-docs=false",
                "--with-examples=false",
                "-t",
                "worker",
                "-o",
                "-",
            ],
        );
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("        image: {expected}\n        wipe: false\n")),
            "TAG={tag:?}"
        );
    }
}

/// `-p/--persist=false` (talosctl ≤ v1.12, `generate.WithPersist`, `generate/init.go`@v1.12.11
/// `ConfigPersist: pointer.To(in.Options.Persist)`) reaches the document.
#[test]
fn persist_flag_reaches_the_document_up_to_v1_12() {
    let sb = Sandbox::new();
    for client in ["v1.11.6", "v1.12.11"] {
        let out = sb.gen_config(client, "v1.12", "worker", &["--persist=false"]);
        assert!(
            out.starts_with("version: v1alpha1\ndebug: false\npersist: false\n"),
            "{client}"
        );
    }
}

/// `--kubernetes-version`: default `constants.DefaultKubernetesVersion` of the release
/// (pkg/machinery/constants/constants.go: 1.36.3@v1.13.9, 1.37.0-rc.0@v1.14.0-rc.1), one leading
/// `v` trimmed (`strings.TrimPrefix`, cmd/talosctl/cmd/mgmt/gen/config.go@v1.14.0-rc.1), an empty
/// value refused by v1.14's `generate.NewInput` and used as given before
/// (generate/generate.go@v1.14.0-rc.1 vs @v1.13.9).
#[test]
fn kubernetes_version_flag_follows_upstream() {
    let sb = Sandbox::new();
    let kubelet = |client: &str, extra: &[&str]| {
        let out = sb.gen_config(client, "v1.13", "worker", extra);
        out.lines()
            .find_map(|l| l.strip_prefix("        image: ghcr.io/siderolabs/kubelet:"))
            .unwrap()
            .to_string()
    };
    let base = ["--install-disk", "", "--install-image", ""];
    let no_version = |client: &str| {
        let args: Vec<&str> = [
            "gen",
            "config",
            "base",
            "https://base:6443",
            "--with-secrets",
            "secrets.yaml",
            "--talos-version",
            "v1.13",
            "-t",
            "worker",
            "-o",
            "-",
        ]
        .into_iter()
        .chain(base)
        .collect();
        let out = sb.run(client, &args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("        image: ghcr.io/siderolabs/kubelet:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(no_version("v1.13.9"), "v1.36.3");
    assert_eq!(no_version("v1.14.0-rc.1"), "v1.37.0-rc.0");
    assert_eq!(
        kubelet("v1.13.9", &["--kubernetes-version", "vv1.30.0"]),
        "vv1.30.0"
    );
    // The stability flags pass 1.28.0 first; the last value wins.
    assert_eq!(kubelet("v1.13.9", &["--kubernetes-version", ""]), "v");
    let out = sb.run(
        "v1.14.0-rc.1",
        &[
            "gen",
            "config",
            "base",
            "https://base:6443",
            "--with-secrets",
            "secrets.yaml",
            "--kubernetes-version",
            "",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "generating PKI and tokens\nfailed to generate config bundle: kubernetes version must be specified\n"
    );
}

/// A readable pointer to where two texts part (the texts hold key material only from the
/// vendored test bundle).
fn first_difference(actual: &str, expected: &str) -> String {
    let a: Vec<&str> = actual.lines().collect();
    let e: Vec<&str> = expected.lines().collect();
    let at = a
        .iter()
        .zip(&e)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(e.len()));
    let from = at.saturating_sub(3);
    format!(
        "first difference at line {}\n--- actual\n{}\n--- expected\n{}",
        at + 1,
        a[from..(at + 4).min(a.len())].join("\n"),
        e[from..(at + 4).min(e.len())].join("\n")
    )
}
