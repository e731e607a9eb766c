//! The offline half of the talosctl simulator, driven the way talix drives it: the talix binary
//! invoked through a symlink named `talosctl`, checked against talosctl-cli.md (exact stdout,
//! stderr and exit codes) and the generator fixtures in formats.md.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use talos_sim::machineconfig::yaml::{self, Yaml};
use talos_sim::machineconfig::{self, MachineType};
use talos_sim::pki;
use talos_sim::talosctl::talosconfig::Talosconfig;

const SAMPLE_SECRETS: &str = include_str!("../src/machineconfig/testdata/secrets.yaml");
const SAMPLE_CP_V111: &str =
    include_str!("../src/machineconfig/testdata/controlplane-contract-v1.11.yaml");
const SAMPLE_WORKER_V111: &str =
    include_str!("../src/machineconfig/testdata/worker-contract-v1.11.yaml");
const SAMPLE_CP_V114: &str =
    include_str!("../src/machineconfig/testdata/controlplane-contract-v1.14-multidoc.yaml");

/// A scratch directory with a `talosctl` symlink to the talix binary.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("bin")).unwrap();
        fs_err::create_dir(dir.path().join("home")).unwrap();
        fs_err::create_dir(dir.path().join("work")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_talos-sim"),
            dir.path().join("bin").join("talosctl"),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work().join(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        fs_err::write(&path, content).unwrap();
        path
    }

    fn read(&self, name: &str) -> String {
        fs_err::read_to_string(self.path(name)).unwrap()
    }

    fn command(&self, version: &str) -> Command {
        let mut cmd = Command::new(self.dir.path().join("bin").join("talosctl"));
        cmd.current_dir(self.work())
            .env("HOME", self.dir.path().join("home"))
            .env("TALOSCTL_SIM_VERSION", version)
            .env_remove("TALOSCONFIG")
            .env_remove("TALOS_HOME")
            .env_remove("TAG")
            .env_remove("TALOSCTL_SIM_LOG");
        cmd
    }

    fn run(&self, version: &str, args: &[&str]) -> Output {
        self.command(version).args(args).output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Every `kind:dotted.path` of every document (list items as `[]`), for shape comparisons.
fn key_paths(text: &str) -> BTreeSet<String> {
    fn walk(node: &Yaml, prefix: &str, out: &mut BTreeSet<String>) {
        match node {
            Yaml::Map(entries) => {
                for (k, v) in entries {
                    let path = format!("{prefix}.{k}");
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            Yaml::Seq(items) => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for doc in yaml::parse_documents(text).unwrap() {
        let kind = doc
            .get("kind")
            .and_then(Yaml::as_str)
            .unwrap_or("v1alpha1")
            .to_string();
        walk(&doc, &kind, &mut out);
    }
    out
}

fn document_kinds(text: &str) -> Vec<String> {
    yaml::parse_documents(text)
        .unwrap()
        .iter()
        .map(|d| {
            d.get("kind")
                .and_then(Yaml::as_str)
                .unwrap_or("v1alpha1")
                .to_string()
        })
        .collect()
}

const PLAIN: [&str; 2] = ["--with-docs=false", "--with-examples=false"];

// ---------------------------------------------------------------- gen secrets

#[test]
fn gen_secrets_writes_a_private_bundle_silently_that_parses_like_the_sample() {
    let sb = Sandbox::new();
    let o = sb.run("v1.11.5", &["gen", "secrets"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "");
    assert_eq!(mode(&sb.path("secrets.yaml")), 0o600);

    let text = sb.read("secrets.yaml");
    let bundle = pki::parse(text.as_bytes()).unwrap();
    assert_eq!(bundle.validate(), vec![]);
    assert_eq!(bundle.to_yaml(), text, "round trip is byte-identical");
    let sample = pki::parse(SAMPLE_SECRETS.as_bytes()).unwrap();
    assert_eq!(sample.validate(), vec![]);
    // Same key order and nesting as the reference sample (its comment line aside).
    assert_eq!(key_paths(&text), key_paths(SAMPLE_SECRETS));
    assert!(text.starts_with("cluster:\n    id: "));
    let (_, os_key) = bundle.ca_pem("os");
    assert!(os_key.starts_with("-----BEGIN ED25519 PRIVATE KEY-----\n"));
    let sa = pki::decode_b64_text(&bundle.certs.k8sserviceaccount.unwrap().key).unwrap();
    assert!(sa.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
}

#[test]
fn gen_secrets_refuses_to_overwrite_without_force() {
    let sb = Sandbox::new();
    assert_exit(&sb.run("v1.11.5", &["gen", "secrets"]), 0);
    let before = sb.read("secrets.yaml");
    let o = sb.run("v1.11.5", &["gen", "secrets"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "file \"secrets.yaml\" already exists, use --force to overwrite\n"
    );
    assert_eq!(sb.read("secrets.yaml"), before);
    let o = sb.run(
        "v1.11.5",
        &["gen", "secrets", "--force", "-o", "secrets.yaml"],
    );
    assert_exit(&o, 0);
    assert_ne!(sb.read("secrets.yaml"), before, "every bundle is fresh");
}

#[test]
fn gen_secrets_prints_to_stdout_only_from_v1_12() {
    let sb = Sandbox::new();
    let old = sb.run("v1.11.5", &["gen", "secrets", "-o", "-"]);
    assert_exit(&old, 0);
    assert_eq!(stdout(&old), "");
    assert!(sb.path("-").exists(), "v1.11 treats - as a file name");

    let new = sb.run("v1.12.0", &["gen", "secrets", "-o", "-"]);
    assert_exit(&new, 0);
    let bundle = pki::parse(&new.stdout).unwrap();
    assert_eq!(bundle.validate(), vec![]);
    assert!(!sb.path("secrets.yaml").exists());
}

#[test]
fn gen_secrets_rejects_bad_talos_version() {
    let sb = Sandbox::new();
    let o = sb.run("v1.11.5", &["gen", "secrets", "--talos-version", "banana"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "invalid talos-version: error parsing version \"banana\"\n"
    );
}

// ---------------------------------------------------------------- gen config

#[test]
fn gen_config_writes_three_files_with_talosctl_messages() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let mut args = vec![
        "gen",
        "config",
        "demo",
        "https://10.5.0.10:6443",
        "--with-secrets",
        "secrets.yaml",
    ];
    args.extend(PLAIN);
    let o = sb.run("v1.11.5", &args);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");
    let cwd = sb.work().canonicalize().unwrap();
    assert_eq!(
        stderr(&o),
        format!(
            "generating PKI and tokens\nCreated {0}/controlplane.yaml\nCreated {0}/worker.yaml\nCreated {0}/talosconfig\n",
            cwd.display()
        )
    );
    for name in ["controlplane.yaml", "worker.yaml", "talosconfig"] {
        assert_eq!(mode(&sb.path(name)), 0o644, "{name}");
    }

    let cp = machineconfig::validate(sb.read("controlplane.yaml").as_bytes()).unwrap();
    assert_eq!(cp.machine_type, MachineType::ControlPlane);
    assert_eq!(cp.cluster_name.as_deref(), Some("demo"));
    assert_eq!(
        cp.control_plane_endpoint.as_deref(),
        Some("https://10.5.0.10:6443")
    );
    assert_eq!(cp.kubernetes_version.as_deref(), Some("1.34.1"));
    assert_eq!(cp.install_disk.as_deref(), Some("/dev/sda"));
    assert_eq!(
        cp.install_image.as_deref(),
        Some("ghcr.io/siderolabs/installer:v1.11.5")
    );
    let worker = machineconfig::validate(sb.read("worker.yaml").as_bytes()).unwrap();
    assert_eq!(worker.machine_type, MachineType::Worker);

    let talosconfig = sb.read("talosconfig");
    let config = Talosconfig::parse(&talosconfig, Path::new("talosconfig")).unwrap();
    assert_eq!(config.context, "demo");
    let ctx = &config.contexts["demo"];
    assert!(ctx.endpoints.is_empty());
    assert!(talosconfig.contains("        endpoints: []\n"));
    assert!(!talosconfig.contains("nodes:"));
    let bundle = pki::parse(SAMPLE_SECRETS.as_bytes()).unwrap();
    assert_eq!(ctx.ca, bundle.certs.os.as_ref().unwrap().crt);
    let client = pki::certificate_facts(&pki::decode_b64_text(&ctx.crt).unwrap()).unwrap();
    assert_eq!(client.organizations, ["os:admin"]);
    assert!(
        pki::decode_b64_text(&ctx.key)
            .unwrap()
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----")
    );
}

#[test]
fn gen_config_is_byte_identical_for_identical_inputs_but_talosconfig_is_fresh() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    // Output paths are shown as filepath.Join cleans them.
    for (out, shown) in [("./a", "a"), ("b/", "b")] {
        let mut args = vec![
            "gen",
            "config",
            "demo",
            "https://10.5.0.10:6443",
            "--with-secrets",
            "secrets.yaml",
            "-o",
            out,
            "--additional-sans",
            "cp.example,10.5.0.10",
        ];
        args.extend(PLAIN);
        let o = sb.run("v1.12.3", &args);
        assert_exit(&o, 0);
        assert_eq!(
            stderr(&o),
            format!(
                "generating PKI and tokens\nCreated {shown}/controlplane.yaml\nCreated {shown}/worker.yaml\nCreated {shown}/talosconfig\n"
            )
        );
    }
    assert_eq!(
        sb.read("a/controlplane.yaml"),
        sb.read("b/controlplane.yaml")
    );
    assert_eq!(sb.read("a/worker.yaml"), sb.read("b/worker.yaml"));
    let a = Talosconfig::parse(&sb.read("a/talosconfig"), Path::new("a")).unwrap();
    let b = Talosconfig::parse(&sb.read("b/talosconfig"), Path::new("b")).unwrap();
    assert_eq!(a.contexts["demo"].ca, b.contexts["demo"].ca);
    assert_ne!(a.contexts["demo"].crt, b.contexts["demo"].crt);
    assert_ne!(a.contexts["demo"].key, b.contexts["demo"].key);

    // Without --with-secrets every run is a new cluster.
    let o1 = sb.run(
        "v1.12.3",
        &[
            "gen",
            "config",
            "x",
            "https://a:6443",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    let o2 = sb.run(
        "v1.12.3",
        &[
            "gen",
            "config",
            "x",
            "https://a:6443",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    assert_exit(&o1, 0);
    assert_ne!(o1.stdout, o2.stdout);
}

fn gen_with_sample_secrets(version: &str, talos_version: &str, kind: &str) -> String {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let mut args = vec![
        "gen",
        "config",
        "base",
        "https://base:6443",
        "--with-secrets",
        "secrets.yaml",
        "--kubernetes-version",
        "v1.28.0",
        "--install-disk",
        "",
        "-t",
        kind,
        "-o",
        "-",
    ];
    if !talos_version.is_empty() {
        args.extend(["--talos-version", talos_version]);
    }
    args.extend(PLAIN);
    let o = sb.run(version, &args);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o), "generating PKI and tokens\n");
    stdout(&o)
}

#[test]
fn gen_config_v1_11_contract_is_shaped_like_the_upstream_fixtures() {
    let image_line = "        image: ghcr.io/siderolabs/installer:v1.11.5\n";
    for (kind, sample) in [
        ("controlplane", SAMPLE_CP_V111),
        ("worker", SAMPLE_WORKER_V111),
    ] {
        let out = gen_with_sample_secrets("v1.11.5", "", kind);
        assert_eq!(document_kinds(&out), ["v1alpha1"]);
        let extra: Vec<String> = key_paths(&out)
            .difference(&key_paths(sample))
            .cloned()
            .collect();
        assert_eq!(extra, ["v1alpha1.machine.install.image"], "{kind}");
        assert!(key_paths(sample).is_subset(&key_paths(&out)));
        // Real gen config differs from the fixture only by the installer image.
        assert_eq!(out.replace(image_line, ""), sample, "{kind}");
    }
}

#[test]
fn gen_config_v1_12_contract_adds_hostname_config_and_drops_legacy_fields() {
    let out = gen_with_sample_secrets("v1.12.0", "", "controlplane");
    assert_eq!(document_kinds(&out), ["v1alpha1", "HostnameConfig"]);
    assert!(out.ends_with("---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n"));
    let paths = key_paths(&out);
    let sample = key_paths(SAMPLE_CP_V111);
    let missing: BTreeSet<String> = sample.difference(&paths).cloned().collect();
    let expected_missing: BTreeSet<String> = [
        "v1alpha1.machine.features.rbac",
        "v1alpha1.machine.features.stableHostname",
        "v1alpha1.machine.features.apidCheckExtKeyUsage",
        "v1alpha1.cluster.apiServer.disablePodSecurityPolicy",
        "v1alpha1.cluster.apiServer.certSANs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(missing, expected_missing);
    assert!(paths.contains("v1alpha1.machine.install.grubUseUKICmdline"));
    assert!(paths.contains("HostnameConfig.auto"));
    // A v1.12 talosctl pinned to the v1.11 contract produces the classic single document.
    let pinned = gen_with_sample_secrets("v1.12.0", "v1.11", "controlplane");
    assert_eq!(document_kinds(&pinned), ["v1alpha1"]);
}

#[test]
fn gen_config_v1_14_contract_is_the_multidoc_layout() {
    let out = gen_with_sample_secrets("v1.14.0", "", "controlplane");
    assert_eq!(document_kinds(&out), document_kinds(SAMPLE_CP_V114));
    assert_eq!(key_paths(&out), key_paths(SAMPLE_CP_V114));
    assert_eq!(out, SAMPLE_CP_V114);
    let summary = machineconfig::validate(out.as_bytes()).unwrap();
    assert_eq!(summary.shape, machineconfig::ContractShape::MultiDocument);
    // A v1.11 talosctl asked for the v1.14 contract cannot produce it: its generator knows no
    // contract past v1.11 (pkg/machinery/config/contract.go@v1.11.6), so it writes the classic
    // v1.11 document (plus its installer image).
    let pinned = gen_with_sample_secrets("v1.11.5", "v1.14", "controlplane");
    assert_eq!(
        pinned.replace("        image: ghcr.io/siderolabs/installer:v1.11.5\n", ""),
        SAMPLE_CP_V111
    );
}

#[test]
fn gen_config_honours_generation_flags() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let mut args = vec![
        "gen",
        "config",
        "lab",
        "https://lab.example:6443",
        "--with-secrets",
        "secrets.yaml",
        "--install-image",
        "factory.example/installer:v9",
        "--install-disk",
        "/dev/vda",
        "--kubernetes-version",
        "1.33.2",
        "--dns-domain",
        "lab.local",
        "--additional-sans",
        "10.5.0.10",
        "--with-cluster-discovery=false",
        "-t",
        "controlplane",
        "-o",
        "new/dir/cp.yaml",
    ];
    args.extend(PLAIN);
    let o = sb.run("v1.11.5", &args);
    assert_exit(&o, 0);
    assert_eq!(
        stderr(&o),
        "generating PKI and tokens\nCreated new/dir/cp.yaml\n"
    );
    let doc = yaml::parse_one(&sb.read("new/dir/cp.yaml")).unwrap();
    let text = |p: &str| doc.path(p).and_then(Yaml::as_str).map(str::to_string);
    assert_eq!(
        text("machine.install.image").as_deref(),
        Some("factory.example/installer:v9")
    );
    assert_eq!(text("machine.install.disk").as_deref(), Some("/dev/vda"));
    assert_eq!(
        text("machine.kubelet.image").as_deref(),
        Some("ghcr.io/siderolabs/kubelet:v1.33.2")
    );
    assert_eq!(
        text("cluster.apiServer.image").as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.33.2")
    );
    assert_eq!(
        text("cluster.network.dnsDomain").as_deref(),
        Some("lab.local")
    );
    assert_eq!(
        doc.path("cluster.discovery.enabled"),
        Some(&Yaml::Bool(false))
    );
    assert_eq!(
        doc.path("machine.certSANs"),
        Some(&Yaml::Seq(vec![Yaml::str("10.5.0.10")]))
    );
    assert_eq!(
        doc.path("cluster.apiServer.certSANs"),
        Some(&Yaml::Seq(vec![
            Yaml::str("lab.example"),
            Yaml::str("10.5.0.10")
        ]))
    );
    // Docs on: a comment header, still valid YAML with the same content.
    let o = sb.run(
        "v1.11.5",
        &[
            "gen",
            "config",
            "lab",
            "https://lab.example:6443",
            "--with-secrets",
            "secrets.yaml",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with('#'));
    assert!(machineconfig::validate(&o.stdout).is_ok());
}

#[test]
fn gen_config_reads_secrets_from_dev_fd() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let talosctl = sb.dir.path().join("bin").join("talosctl");
    let script = format!(
        "exec '{}' gen config demo https://10.5.0.10:6443 --with-secrets /dev/fd/3 -t worker -o - --with-docs=false --with-examples=false 3< secrets.yaml",
        talosctl.display()
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(sb.work())
        .env("TALOSCTL_SIM_VERSION", "v1.11.5")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let summary = machineconfig::summarize(&o.stdout).unwrap();
    let sample = pki::parse(SAMPLE_SECRETS.as_bytes()).unwrap();
    assert_eq!(summary.os_ca.crt_pem, sample.ca_pem("os").0);
}

#[test]
fn gen_config_errors_match_talosctl() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let case = |args: &[&str]| {
        let o = sb.run("v1.11.5", args);
        assert_exit(&o, 1);
        assert_eq!(stdout(&o), "");
        stderr(&o)
    };

    let err = case(&["gen", "config", "demo"]);
    assert!(
        err.starts_with("accepts 2 arg(s), received 1\n\nUsage:\n  talosctl gen config <cluster name> <cluster endpoint> [flags]\n"),
        "{err}"
    );
    let err = case(&["gen", "config", "demo", "https://a:6443", "--bogus"]);
    assert!(
        err.starts_with("unknown flag: --bogus\n\nUsage:\n"),
        "{err}"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "10.5.0.2"]),
        "no scheme and port specified for the cluster endpoint URL\ntry: \"https://10.5.0.2:6443\"\n"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "10.5.0.2:6443"]),
        "no scheme specified for the cluster endpoint URL\ntry: \"https://10.5.0.2:6443\"\n"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "http://10.5.0.2:6443"]),
        "the control plane endpoint URL should have scheme https://\ntry: \"https://10.5.0.2:6443\"\n"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "https://a:6443", "-t", "init"]),
        "1 error occurred:\n\t* invalid output type: \"init\"\n\n\n"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "https://a:6443", "-o", "-"]),
        "can't use multiple output types with stdout\n"
    );
    assert_eq!(
        case(&[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "-o",
            "x",
            "--output-dir",
            "y"
        ]),
        "can't use both output-dir and output\n"
    );
    assert_eq!(
        case(&[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--with-secrets",
            "missing.yaml"
        ]),
        "failed to load secrets bundle: open missing.yaml: no such file or directory\n"
    );
    sb.write(
        "broken.yaml",
        &SAMPLE_SECRETS.replace("trustdinfo:\n    token: d8cwfa.eyvpi0xwxyarbfid\n", ""),
    );
    assert_eq!(
        case(&[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--with-secrets",
            "broken.yaml"
        ]),
        "failed to validate secrets bundle: 1 error occurred:\n\t* trustdinfo.token is required\n\n\n"
    );
    assert_eq!(
        case(&[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--registry-mirror",
            "docker.io"
        ]),
        "invalid registry mirror spec: \"docker.io\"\n"
    );
    assert_eq!(
        case(&[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--config-patch",
            "@nope.yaml"
        ]),
        "error parsing config JSON patch: open nope.yaml: no such file or directory\n"
    );
    assert_eq!(
        case(&["gen", "config", "demo", "https://a:6443", "--version", "v2"]),
        "unknown config version: \"v2\"\n"
    );

    // Existing files: the first file is refused, nothing is overwritten.
    let ok = sb.run(
        "v1.11.5",
        &[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--with-secrets",
            "secrets.yaml",
            "-o",
            "out",
        ],
    );
    assert_exit(&ok, 0);
    let before = sb.read("out/worker.yaml");
    assert_eq!(
        case(&["gen", "config", "demo", "https://a:6443", "-o", "out"]),
        "generating PKI and tokens\nfile \"out/controlplane.yaml\" already exists, use --force to overwrite\n"
    );
    assert_eq!(sb.read("out/worker.yaml"), before);
    let forced = sb.run(
        "v1.11.5",
        &[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "-o",
            "out",
            "--force",
        ],
    );
    assert_exit(&forced, 0);
    assert_ne!(sb.read("out/worker.yaml"), before);

    // -p is --persist up to v1.12 and gone in v1.13.
    let o = sb.run(
        "v1.13.9",
        &[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "-p",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with("unknown shorthand flag: 'p' in -p\n\nUsage:"));
    let o = sb.run(
        "v1.12.1",
        &[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "-p",
            "-t",
            "worker",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 0);
}

#[test]
fn gen_config_json6902_patch_fails_on_multidoc_contracts_and_works_on_v1_11() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    sb.write(
        "subnets.json",
        r#"[{"op": "replace", "path": "/cluster/network/podSubnets", "value": ["10.100.0.0/16"]}]"#,
    );
    let o = sb.run(
        "v1.12.0",
        &[
            "gen",
            "config",
            "demo",
            "https://a:6443",
            "--with-secrets",
            "secrets.yaml",
            "--config-patch-control-plane",
            "@subnets.json",
            "-t",
            "controlplane",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "generating PKI and tokens\nfailed to generate config bundle: error patching control plane configs: JSON6902 patches are not supported for multi-document machine configuration\n"
    );
    let mut args = vec![
        "gen",
        "config",
        "demo",
        "https://a:6443",
        "--with-secrets",
        "secrets.yaml",
        "--config-patch",
        "@subnets.json",
        "--talos-version",
        "v1.11",
        "-t",
        "controlplane",
        "-o",
        "-",
    ];
    args.extend(PLAIN);
    let o = sb.run("v1.12.0", &args);
    assert_exit(&o, 0);
    let doc = yaml::parse_one(&stdout(&o)).unwrap();
    assert_eq!(
        doc.path("cluster.network.podSubnets"),
        Some(&Yaml::Seq(vec![Yaml::str("10.100.0.0/16")]))
    );
    // gen config re-encodes in Talos field order, 4-space.
    assert!(stdout(&o).starts_with(
        "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n    type: controlplane\n"
    ));
}

#[test]
fn gen_config_strategic_patches_apply_per_machine_type() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    sb.write(
        "cp.yaml",
        "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.5.0.2/24]\n        vip:\n          ip: 10.5.0.10\n",
    );
    let mut args = vec![
        "gen",
        "config",
        "demo",
        "https://10.5.0.10:6443",
        "--with-secrets",
        "secrets.yaml",
        "--config-patch",
        "cluster: {network: {podSubnets: [10.100.0.0/16]}}",
        "--config-patch-control-plane",
        "@cp.yaml",
        "--config-patch-worker",
        "machine: {nodeLabels: {role: worker}}",
    ];
    args.extend(PLAIN);
    let o = sb.run("v1.11.5", &args);
    assert_exit(&o, 0);
    let cp = machineconfig::validate(sb.read("controlplane.yaml").as_bytes()).unwrap();
    assert_eq!(cp.vip, Some("10.5.0.10".parse().unwrap()));
    assert_eq!(cp.interfaces[0].addresses[0].to_string(), "10.5.0.2/24");
    let worker_text = sb.read("worker.yaml");
    let worker = yaml::parse_one(&worker_text).unwrap();
    assert!(worker.path("machine.network.interfaces").is_none());
    assert_eq!(
        worker
            .path("machine.nodeLabels.role")
            .and_then(Yaml::as_str),
        Some("worker")
    );
    for text in [sb.read("controlplane.yaml"), worker_text] {
        let doc = yaml::parse_one(&text).unwrap();
        assert_eq!(
            doc.path("cluster.network.podSubnets"),
            Some(&Yaml::Seq(vec![Yaml::str("10.100.0.0/16")]))
        );
    }
}

// ---------------------------------------------------------------- machineconfig patch

#[test]
fn machineconfig_patch_strategic_merge_and_outputs() {
    let sb = Sandbox::new();
    sb.write("cp.yaml", SAMPLE_CP_V111);
    sb.write(
        "net.yaml",
        "machine:\n  network:\n    hostname: cp1\n    interfaces:\n      - interface: eth0\n        addresses: [10.5.0.2/24]\n",
    );
    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "cp.yaml", "-p", "@net.yaml"],
    );
    assert_exit(&o, 0);
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    let expected = SAMPLE_CP_V111.replace(
        "    network: {}\n",
        "    network:\n        hostname: cp1\n        interfaces:\n            - interface: eth0\n              addresses:\n                - 10.5.0.2/24\n",
    ) + "\n";
    assert_eq!(out, expected);

    // A second patch merges into the same interface by name.
    let o = sb.run(
        "v1.11.5",
        &[
            "machineconfig",
            "patch",
            "cp.yaml",
            "-p",
            "@net.yaml",
            "-p",
            "machine: {network: {interfaces: [{interface: eth0, addresses: [10.5.0.3/24]}]}}",
            "-o",
            "sub/out.yaml",
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");
    assert_eq!(mode(&sb.path("sub/out.yaml")), 0o644);
    let summary = machineconfig::summarize(sb.read("sub/out.yaml").as_bytes()).unwrap();
    assert_eq!(summary.interfaces.len(), 1);
    let addresses: Vec<String> = summary.interfaces[0]
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(addresses, ["10.5.0.2/24", "10.5.0.3/24"]);

    // No patch: the input bytes unchanged plus the trailing newline.
    let o = sb.run("v1.11.5", &["machineconfig", "patch", "cp.yaml"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), format!("{SAMPLE_CP_V111}\n"));
}

#[test]
fn machineconfig_patch_json6902_only_on_single_document_configs() {
    let sb = Sandbox::new();
    sb.write("single.yaml", SAMPLE_CP_V111);
    sb.write("multi.yaml", SAMPLE_CP_V114);
    let patch = r#"[{"op": "add", "path": "/machine/network/hostname", "value": "cp1"}]"#;
    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "single.yaml", "-p", patch],
    );
    assert_exit(&o, 0);
    let out = stdout(&o);
    // ghodss/yaml output: keys sorted, 2-space style.
    assert!(out.starts_with("cluster:\n  aggregatorCA:\n"), "{out}");
    assert!(out.contains("\n  network:\n    hostname: cp1\n"));
    assert_eq!(
        yaml::parse_one(&out)
            .unwrap()
            .path("machine.network.hostname"),
        Some(&Yaml::str("cp1"))
    );

    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "multi.yaml", "-p", patch],
    );
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "JSON6902 patches are not supported for multi-document machine configuration\n"
    );

    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "nope.yaml", "-p", patch],
    );
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "open nope.yaml: no such file or directory\n");
    let o = sb.run("v1.11.5", &["machineconfig", "patch"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with(
        "accepts 1 arg(s), received 0\n\nUsage:\n  talosctl machineconfig patch <machineconfig-file> [flags]\n"
    ));
    let o = sb.run(
        "v1.11.5",
        &[
            "machineconfig",
            "patch",
            "single.yaml",
            "-p",
            "machine: {netwrk: {}}",
        ],
    );
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "unknown keys found during decoding:\nmachine:\n    netwrk: {}\n\n"
    );
}

// ---------------------------------------------------------------- config

#[test]
fn config_commands_edit_the_talosconfig() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let o = sb.run(
        "v1.11.5",
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.10:6443",
            "--with-secrets",
            "secrets.yaml",
            "-t",
            "talosconfig",
            "-o",
            "talosconfig",
        ],
    );
    assert_exit(&o, 0);
    let tc = "--talosconfig=talosconfig";

    let o = sb.run(
        "v1.11.5",
        &[tc, "config", "endpoint", "10.5.0.2", "10.5.0.3"],
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "");
    assert_eq!(mode(&sb.path("talosconfig")), 0o600);
    let o = sb.run(
        "v1.11.5",
        &[
            "config",
            "nodes",
            "10.5.0.2",
            "--talosconfig",
            "talosconfig",
        ],
    );
    assert_exit(&o, 0);
    let text = sb.read("talosconfig");
    assert!(text.contains(
        "    demo:\n        endpoints:\n            - 10.5.0.2\n            - 10.5.0.3\n        nodes:\n            - 10.5.0.2\n        ca: "
    ), "{text}");

    let o = sb.run("v1.11.5", &[tc, "config", "info"]);
    assert_exit(&o, 0);
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    assert_eq!(
        stdout(&o),
        format!(
            "Current context:     demo\nNodes:               10.5.0.2\nEndpoints:           10.5.0.2, 10.5.0.3\nRoles:               os:admin\nCertificate expires: 1 year from now ({})\n",
            expiry.date()
        )
    );
    let o = sb.run("v1.11.5", &[tc, "config", "info", "-o", "json"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "{{\n  \"context\": \"demo\",\n  \"nodes\": [\n    \"10.5.0.2\"\n  ],\n  \"endpoints\": [\n    \"10.5.0.2\",\n    \"10.5.0.3\"\n  ],\n  \"roles\": [\n    \"os:admin\"\n  ],\n  \"certTTL\": \"1 year from now\",\n  \"certNotAfter\": \"{}\"\n}}\n",
            expiry.date()
        )
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["context"], "demo");
    let o = sb.run("v1.11.5", &[tc, "config", "info", "-o", "yaml"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with("context: demo\nnodes:\n    - 10.5.0.2\n"));

    let o = sb.run("v1.11.5", &[tc, "config", "contexts"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "CURRENT   NAME   ENDPOINTS           NODES\n*         demo   10.5.0.2,10.5.0.3   10.5.0.2\n"
    );

    let o = sb.run("v1.11.5", &[tc, "config", "context", "nope"]);
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "context \"nope\" is not defined\n");
    let o = sb.run(
        "v1.11.5",
        &[tc, "--context", "nope", "config", "endpoint", "1.2.3.4"],
    );
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "context \"nope\" is not defined\n");
    let o = sb.run("v1.11.5", &[tc, "config", "endpoint"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with("requires at least 1 arg(s), only received 0\n\nUsage:\n"));

    // merge: clashing names are renamed and the merged context becomes current.
    fs_err::copy(sb.path("talosconfig"), sb.path("other")).unwrap();
    let o = sb.run("v1.11.5", &[tc, "config", "merge", "other"]);
    assert_exit(&o, 0);
    assert_eq!(
        stderr(&o),
        "renamed talosconfig context \"demo\" -> \"demo-1\"\n"
    );
    let merged = Talosconfig::load(&sb.path("talosconfig")).unwrap();
    assert_eq!(merged.context, "demo-1");
    assert_eq!(merged.contexts.len(), 2);
    let o = sb.run("v1.11.5", &[tc, "config", "context", "demo"]);
    assert_exit(&o, 0);
    assert_eq!(
        Talosconfig::load(&sb.path("talosconfig")).unwrap().context,
        "demo"
    );
}

#[test]
fn config_without_context_and_default_path_resolution() {
    let sb = Sandbox::new();
    // No talosconfig anywhere: ~/.talos/config is created empty, then the command fails.
    let o = sb.run("v1.11.5", &["config", "endpoint", "10.5.0.2"]);
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "no context is set\n");
    let created = sb.dir.path().join("home/.talos/config");
    assert_eq!(
        fs_err::read_to_string(&created).unwrap(),
        "context: \"\"\ncontexts: {}\n"
    );
    assert_eq!(mode(&created), 0o600);
    // An existing $TALOSCONFIG wins over ~/.talos/config.
    let env_path = sb.write(
        "env-talosconfig",
        "context: env\ncontexts:\n    env:\n        endpoints:\n            - 10.9.9.9\n",
    );
    let o = sb
        .command("v1.11.5")
        .env("TALOSCONFIG", &env_path)
        .args(["config", "contexts"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "CURRENT   NAME   ENDPOINTS   NODES\n*         env    10.9.9.9    \n"
    );
    // A missing $TALOSCONFIG falls back to the existing ~/.talos/config.
    let o = sb
        .command("v1.11.5")
        .env("TALOSCONFIG", sb.path("absent"))
        .args(["config", "contexts"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "CURRENT   NAME   ENDPOINTS   NODES\n");
    assert!(!sb.path("absent").exists());
}

// ---------------------------------------------------------------- dispatcher

#[test]
fn unknown_commands_and_flags_fail_like_cobra() {
    let sb = Sandbox::new();
    let o = sb.run("v1.11.5", &["bogus"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with(
        "unknown command \"bogus\" for \"talosctl\"\n\nUsage:\n  talosctl [command]\n"
    ));
    let o = sb.run("v1.11.5", &["gen", "secrets", "--nope"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).starts_with("unknown flag: --nope\n\nUsage:\n  talosctl gen secrets [flags]\n")
    );
    let o = sb.run("v1.11.5", &["gen", "secrets", "-o"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with("flag needs an argument: 'o' in -o\n\nUsage:"));
}

#[test]
fn node_commands_reach_the_remote_half_with_arguments_unchanged() {
    let sb = Sandbox::new();
    let log = sb.path("log.jsonl");
    let args = ["--talosconfig", "tc", "-n", "127.0.0.1", "bootstrap"];
    let o = sb
        .command("v1.11.5")
        .env("TALOSCTL_SIM_LOG", &log)
        .args(args)
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("unknown command"), "{}", stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(fs_err::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["argv"], serde_json::json!(args));
}

#[test]
fn invocation_log_has_one_json_line_per_invocation_even_concurrently() {
    let sb = Sandbox::new();
    let log = sb.path("log.jsonl");
    let run = |args: &[&str]| {
        sb.command("v1.12.0")
            .env("TALOSCTL_SIM_LOG", &log)
            .args(args)
            .output()
            .unwrap()
    };
    assert_exit(&run(&["gen", "secrets", "-o", "s.yaml"]), 0);
    assert_exit(&run(&["gen", "secrets", "-o", "s.yaml"]), 1);
    let lines: Vec<serde_json::Value> = fs_err::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"argv": ["gen", "secrets", "-o", "s.yaml"], "exit": 0}),
            serde_json::json!({"argv": ["gen", "secrets", "-o", "s.yaml"], "exit": 1}),
        ]
    );

    let children: Vec<std::process::Child> = (0..8)
        .map(|i| {
            sb.command("v1.12.0")
                .env("TALOSCTL_SIM_LOG", &log)
                .args(["config", "contexts", "--talosconfig", &format!("tc{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let text = fs_err::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 10);
    let contexts_runs = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["argv"][0] == "config")
        .count();
    assert_eq!(contexts_runs, 8);
}

#[test]
fn talix_sim_talosctl_behaves_like_the_symlink() {
    let sb = Sandbox::new();
    let o = Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["talosctl", "gen", "secrets", "-o", "-"])
        .current_dir(sb.work())
        .env("TALOSCTL_SIM_VERSION", "v1.12.0")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(pki::parse(&o.stdout).unwrap().validate(), vec![]);
    let o = Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["talosctl", "bogus"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with("unknown command \"bogus\" for \"talosctl\"\n"));
}

// ---------------------------------------------------------------- validation

#[test]
fn validation_catches_what_talos_rejects_in_generated_configs() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let mut args = vec![
        "gen",
        "config",
        "demo",
        "https://10.5.0.10:6443",
        "--with-secrets",
        "secrets.yaml",
        "-t",
        "worker",
        "-o",
        "-",
    ];
    args.extend(PLAIN);
    let o = sb.run("v1.12.0", &args);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(machineconfig::validate(out.as_bytes()).is_ok());

    // Trap 2: a static hostname next to the v1.12 HostnameConfig document.
    let hostname = out.replace("    network: {}\n", "    network:\n        hostname: w1\n");
    assert_eq!(
        machineconfig::validate(hostname.as_bytes()).unwrap_err(),
        [machineconfig::HOSTNAME_CONFLICT]
    );
    // Trap 5: a v1.12-contract config on a v1.11 node.
    assert_eq!(
        machineconfig::validate_for(out.as_bytes(), "v1.11.5").unwrap_err(),
        [
            "failed to parse config: unknown keys found during decoding:\nmachine:\n    install:\n        grubUseUKICmdline: true\n"
        ]
    );
    assert!(machineconfig::validate_for(out.as_bytes(), "v1.12.4").is_ok());
    // A VIP on a worker.
    let vip = out.replace(
        "    network: {}\n",
        "    network:\n        interfaces:\n            - interface: eth0\n              addresses: [10.5.0.5/24]\n              vip:\n                ip: 10.5.0.10\n",
    );
    assert_eq!(
        machineconfig::validate(vip.as_bytes()).unwrap_err(),
        [machineconfig::VIP_ON_WORKER]
    );
    // Unknown fields.
    let typo = out.replace("    network: {}\n", "    netwrok: {}\n");
    assert_eq!(
        machineconfig::validate(typo.as_bytes()).unwrap_err(),
        [
            // upstream: decoder.go@v1.12.11+ names the document and its line.
            "failed to parse config: error decoding document /v1alpha1/ (line 1): unknown keys found during decoding:\nmachine:\n    netwrok: {}\n"
        ]
    );
    // Malformed addresses (a bare IP is fine, as in Talos).
    let address = out.replace(
        "    network: {}\n",
        "    network:\n        interfaces:\n            - interface: eth0\n              addresses: [10.5.0.5, 10.5.0.300/24]\n",
    );
    assert_eq!(
        machineconfig::validate(address.as_bytes()).unwrap_err(),
        ["[networking.os.device.addresses] \"eth0\": invalid CIDR address: 10.5.0.300/24"]
    );
    // No v1alpha1 document.
    let only_hostname = "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
    assert_eq!(
        machineconfig::validate(only_hostname.as_bytes()).unwrap_err(),
        [machineconfig::MISSING_V1ALPHA1]
    );
}

#[test]
fn machineconfig_patch_deletes_and_yaml_json6902_lists() {
    let sb = Sandbox::new();
    sb.write("multi.yaml", SAMPLE_CP_V114);
    sb.write(
        "delete.yaml",
        "apiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n",
    );
    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "multi.yaml", "-p", "@delete.yaml"],
    );
    assert_exit(&o, 0);
    let kinds = document_kinds(&stdout(&o));
    assert!(!kinds.contains(&"HostnameConfig".to_string()));
    assert_eq!(kinds.len(), document_kinds(SAMPLE_CP_V114).len() - 1);

    sb.write("single.yaml", SAMPLE_CP_V111);
    sb.write(
        "ops.yaml",
        "- op: replace\n  path: /cluster/network/serviceSubnets/0\n  value: 10.200.0.0/16\n- op: remove\n  path: /debug\n",
    );
    let o = sb.run(
        "v1.11.5",
        &["machineconfig", "patch", "single.yaml", "-p", "@ops.yaml"],
    );
    assert_exit(&o, 0);
    let doc = yaml::parse_one(&stdout(&o)).unwrap();
    assert_eq!(
        doc.path("cluster.network.serviceSubnets"),
        Some(&Yaml::Seq(vec![Yaml::str("10.200.0.0/16")]))
    );
    assert!(doc.get("debug").is_none());

    // Deleting a field of the (empty but present) `network: {}` struct is no error upstream
    // (configloader/internal/decoder/selector.go@v1.14.0-rc.1: SetZero); only a nil pointer
    // on the way fails the lookup.
    let o = sb.run(
        "v1.11.5",
        &[
            "machineconfig",
            "patch",
            "single.yaml",
            "-p",
            "machine: {network: {hostname: {$patch: delete}}}",
        ],
    );
    assert_exit(&o, 0);
    sb.write(
        "no-network.yaml",
        &SAMPLE_CP_V111.replace("    network: {}\n", ""),
    );
    let o = sb.run(
        "v1.11.5",
        &[
            "machineconfig",
            "patch",
            "no-network.yaml",
            "-p",
            "machine: {network: {hostname: {$patch: delete}}}",
        ],
    );
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': failed to delete path 'machine.network.hostname': lookup failed\n"
    );
}

#[test]
fn gen_config_features_follow_the_contract() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SAMPLE_SECRETS);
    let generate = |version: &str| {
        let mut args = vec![
            "gen",
            "config",
            "demo",
            "https://10.5.0.10:6443",
            "--with-secrets",
            "secrets.yaml",
            "--with-kubespan",
            "--registry-mirror",
            "docker.io=http://127.0.0.1:5000",
            "-t",
            "worker",
            "-o",
            "-",
            "--talos-version",
            version,
        ];
        args.extend(PLAIN);
        let o = sb.run("v1.13.9", &args);
        assert_exit(&o, 0);
        stdout(&o)
    };
    let v111 = generate("v1.11");
    assert_eq!(document_kinds(&v111), ["v1alpha1"]);
    let doc = yaml::parse_one(&v111).unwrap();
    assert_eq!(
        doc.path("machine.network.kubespan.enabled"),
        Some(&Yaml::Bool(true))
    );
    assert_eq!(
        doc.path("machine.registries.mirrors.docker\\.io"),
        None,
        "dotted keys are not paths"
    );
    assert!(v111.contains(
        "    registries:\n        mirrors:\n            docker.io:\n                endpoints:\n                    - http://127.0.0.1:5000\n"
    ));
    // Registry documents come before HostnameConfig, KubeSpanConfig after it (upstream:
    // generate/init.go@v1.12.11 and @v1.13.9, generate/network.go@v1.13.9; the
    // stability/v1.13/overrides-worker.yaml golden@v1.14.0-rc.1 has this order).
    let v112 = generate("v1.12");
    assert_eq!(
        document_kinds(&v112),
        ["v1alpha1", "RegistryMirrorConfig", "HostnameConfig"]
    );
    let v113 = generate("v1.13");
    assert_eq!(
        document_kinds(&v113),
        [
            "v1alpha1",
            "RegistryMirrorConfig",
            "HostnameConfig",
            "KubeSpanConfig"
        ]
    );
    for text in [&v111, &v112, &v113] {
        assert!(machineconfig::validate(text.as_bytes()).is_ok());
    }
}

#[test]
fn gen_secrets_imports_kubernetes_pki_and_controlplane_configs() {
    let sb = Sandbox::new();
    let sample = pki::parse(SAMPLE_SECRETS.as_bytes()).unwrap();
    fs_err::create_dir_all(sb.path("pki/etcd")).unwrap();
    for (which, crt, key) in [
        ("k8s", "pki/ca.crt", "pki/ca.key"),
        ("etcd", "pki/etcd/ca.crt", "pki/etcd/ca.key"),
        (
            "k8saggregator",
            "pki/front-proxy-ca.crt",
            "pki/front-proxy-ca.key",
        ),
    ] {
        let (crt_pem, key_pem) = sample.ca_pem(which);
        sb.write(crt, &crt_pem);
        sb.write(key, &key_pem);
    }
    let sa = pki::decode_b64_text(&sample.certs.k8sserviceaccount.as_ref().unwrap().key).unwrap();
    sb.write("pki/sa.key", &sa);
    let o = sb.run(
        "v1.12.0",
        &[
            "gen",
            "secrets",
            "-p",
            "pki",
            "-t",
            "abcdef.0123456789abcdef",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 0);
    let imported = pki::parse(&o.stdout).unwrap();
    assert_eq!(imported.validate(), vec![]);
    assert!(imported.certs.k8s == sample.certs.k8s);
    assert!(imported.certs.etcd == sample.certs.etcd);
    assert!(imported.certs.k8saggregator == sample.certs.k8saggregator);
    assert_eq!(imported.secrets.bootstraptoken, "abcdef.0123456789abcdef");
    assert!(
        imported.certs.os != sample.certs.os,
        "the Talos CA is generated"
    );

    sb.write("cp.yaml", SAMPLE_CP_V111);
    let o = sb.run(
        "v1.12.0",
        &[
            "gen",
            "secrets",
            "--from-controlplane-config",
            "cp.yaml",
            "-o",
            "-",
        ],
    );
    assert_exit(&o, 0);
    assert!(pki::parse(&o.stdout).unwrap() == sample);
    let o = sb.run(
        "v1.12.0",
        &["gen", "secrets", "--from-controlplane-config", "nope.yaml"],
    );
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "failed to load controlplane config: open nope.yaml: no such file or directory\n"
    );
}
