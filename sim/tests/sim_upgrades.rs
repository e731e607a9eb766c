//! Talos and Kubernetes upgrades as upstream does them:
//! - talosctl ≥ v1.13 against nodes ≥ v1.13 pulls, installs, then drains with a kubeconfig
//!   fetched from the *endpoint* (cmd/talosctl/cmd/talos/upgrade.go, drain.go@v1.13.9), so a
//!   worker as its own endpoint fails with the Kubeconfig API's Unimplemented answer
//!   (internal/app/internal/machinehelper/machinehelper.go@v1.13.9 CheckControlplane);
//! - legacy upgrade flags are deprecated in v1.13 and `--insecure` is gone in v1.14
//!   (upgrade.go@v1.14.0-rc.1);
//! - a new config moves kubelets and static pods but not kube-proxy (manifest_apply.go creates
//!   missing objects only); `upgrade-k8s` moves kube-proxy and refuses to skip a minor
//!   (go-kubernetes kubernetes/upgrade/path.go@v0.2.41, talos_managed.go@v1.14.0-rc.1).

mod sim_nodes_support;

use std::process::Command;
use std::time::Duration;

use sim_nodes_support::*;

struct Up {
    work: Workdir,
    files: ClusterFiles,
    _service: Service,
    tc: String,
    cp: String,
    w: String,
}

fn cluster(first: u8, install: &str, k8s: &str) -> Up {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [
        Machine {
            name: "cp1",
            controlplane: true,
            dhcp: first,
            static_ip: first + 100,
        },
        Machine {
            name: "w1",
            controlplane: false,
            dhcp: first + 1,
            static_ip: first + 101,
        },
    ];
    let image = format!("ghcr.io/siderolabs/installer:{install}");
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.{}:6443", first + 100),
        &["--install-image", &image, "--kubernetes-version", k8s],
    );
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[]));
    let tc = files.talosconfig.display().to_string();
    for m in &ms {
        work.talosctl_ok(&[
            "apply-config",
            "--insecure",
            "-n",
            &files.dhcp(m),
            "-f",
            &files.config(m),
        ]);
    }
    for m in &ms {
        let out = work.talosctl_until_ok(
            &["--talosconfig", &tc, "-n", &files.static_addr(m), "version"],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let cp = files.static_addr(&ms[0]);
    let w = files.static_addr(&ms[1]);
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &cp, "bootstrap"]);
    Up {
        work,
        files,
        _service: service,
        tc,
        cp,
        w,
    }
}

const V113: &[(&str, &str)] = &[("TALOSCTL_SIM_VERSION", "v1.13.9")];
const V114: &[(&str, &str)] = &[("TALOSCTL_SIM_VERSION", "v1.14.0-rc.1")];

#[test]
fn upgrade_drains_via_the_endpoint_and_fails_on_a_worker_endpoint() {
    let up = cluster(61, "v1.13.9", "1.34.1");
    let (work, tc, cp, w) = (&up.work, &up.tc, &up.cp, &up.w);
    let image = "ghcr.io/siderolabs/installer:v1.13.10";
    // A worker as its own endpoint: the kubeconfig API is control-plane only.
    let out = work.talosctl_env(
        &[
            "--talosconfig",
            tc,
            "-e",
            w,
            "-n",
            w,
            "upgrade",
            "--image",
            image,
        ],
        V113,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "{w}: pulled image {image}\n{w}: upgrade completed\nerror creating Kubernetes client for drain: error fetching kubeconfig from Talos API: rpc error: code = Unimplemented desc = kubeconfig is only available on control plane nodes\n"
        )
    );
    // Installed but not rebooted: the worker still runs its old version.
    let out = work.talosctl_ok(&["--talosconfig", tc, "-e", w, "-n", w, "version"]);
    assert!(out.contains("Tag:         v1.13.9"), "{out}");
    // The kubeconfig API answers the same on a worker directly.
    let out = work.talosctl(&["--talosconfig", tc, "-e", w, "-n", w, "kubeconfig", "-"]);
    assert!(
        stderr(&out).contains(
            "rpc error: code = Unimplemented desc = kubeconfig is only available on control plane nodes"
        ),
        "{}",
        stderr(&out)
    );
    // Through a control-plane endpoint it drains, reboots into the new version, uncordons.
    let out = work.talosctl_env(
        &[
            "--talosconfig",
            tc,
            "-e",
            cp,
            "-n",
            w,
            "upgrade",
            "--image",
            image,
        ],
        V113,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for line in [
        "w1: cordoning node",
        "w1: node drained",
        "w1: node uncordoned",
    ] {
        assert!(err.lines().any(|l| l == line), "{line:?} missing:\n{err}");
    }
    let out = work.talosctl_ok(&["--talosconfig", tc, "-e", cp, "-n", w, "version"]);
    assert!(out.contains("Tag:         v1.13.10"), "{out}");
}

#[test]
fn legacy_upgrade_flags() {
    let up = cluster(71, "v1.13.9", "1.34.1");
    let (work, tc, cp) = (&up.work, &up.tc, &up.cp);
    // v1.13: deprecated, still accepted; --insecure with the (drain-forced) wait is refused.
    let out = work.talosctl_env(
        &[
            "--talosconfig",
            tc,
            "-n",
            cp,
            "upgrade",
            "--insecure",
            "--wait=false",
        ],
        V113,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Flag --insecure has been deprecated, legacy flag for MachineService.Upgrade fallback, to be removed in Talos 1.18\ncannot use --wait and --insecure together\n"
    );
    let out = work.talosctl_env(
        &[
            "--talosconfig",
            tc,
            "-n",
            cp,
            "upgrade",
            "-p",
            "-s",
            "-f",
            "--no-reboot",
        ],
        V113,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for flag in ["force", "preserve", "stage"] {
        assert!(
            stderr(&out).contains(&format!("Flag --{flag} has been deprecated, legacy flag for MachineService.Upgrade fallback, to be removed in Talos 1.18\n")),
            "{}",
            stderr(&out)
        );
    }
    // v1.14: --insecure no longer exists.
    let out = work.talosctl_env(
        &["--talosconfig", tc, "-n", cp, "upgrade", "--insecure"],
        V114,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("unknown flag: --insecure\n"),
        "{}",
        stderr(&out)
    );
    // apply-config --mode=reboot is gone in v1.14.
    let out = work.talosctl_env(
        &[
            "--talosconfig",
            tc,
            "-n",
            cp,
            "apply-config",
            "-f",
            &up.files.config(&Machine {
                name: "cp1",
                controlplane: true,
                dhcp: 71,
                static_ip: 171,
            }),
            "--mode",
            "reboot",
        ],
        V114,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("possible options are: auto, no-reboot, staged, try"),
        "{}",
        stderr(&out)
    );
}

fn kubectl(work: &Workdir, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/kubectl")
        .args([
            "--kubeconfig",
            &work.file("kubeconfig").display().to_string(),
        ])
        .args(args)
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn kubernetes_versions_kube_proxy_and_upgrade_path() {
    let up = cluster(81, "v1.13.9", "1.33.2");
    let (work, tc, cp) = (&up.work, &up.tc, &up.cp);
    work.talosctl_ok(&["--talosconfig", tc, "-n", cp, "kubeconfig", "."]);
    let proxy = [
        "-n",
        "kube-system",
        "get",
        "ds",
        "kube-proxy",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ];
    assert_eq!(kubectl(work, &proxy), "registry.k8s.io/kube-proxy:v1.33.2");

    // A config with new Kubernetes images moves the control plane's kubelet and static pods,
    // not kube-proxy.
    let cp_cfg = std::fs::read_to_string(up.files.configs["cp1"].clone()).unwrap();
    assert!(cp_cfg.contains("v1.33.2"));
    let new_cfg = work.write("cp1-new.yaml", &cp_cfg.replace("v1.33.2", "v1.34.1"));
    work.talosctl_ok(&[
        "--talosconfig",
        tc,
        "-n",
        cp,
        "apply-config",
        "-f",
        &new_cfg.display().to_string(),
    ]);
    assert_eq!(
        kubectl(
            work,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.nodeInfo.kubeletVersion}"
            ]
        ),
        "v1.34.1 v1.33.2"
    );
    assert_eq!(
        kubectl(
            work,
            &[
                "-n",
                "kube-system",
                "get",
                "pod",
                "kube-apiserver-cp1",
                "-o",
                "jsonpath={.spec.containers[0].image}"
            ]
        ),
        "registry.k8s.io/kube-apiserver:v1.34.1"
    );
    assert_eq!(kubectl(work, &proxy), "registry.k8s.io/kube-proxy:v1.33.2");

    // Skipping a minor is refused; the lowest version (kube-proxy, worker) is detected.
    let out = work.talosctl(&[
        "--talosconfig",
        tc,
        "-n",
        cp,
        "upgrade-k8s",
        "--to",
        "1.35.0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "automatically detected the lowest Kubernetes version 1.33.2\n"
    );
    assert_eq!(
        stderr(&out),
        "unsupported upgrade path 1.33->1.35 (from \"1.33.2\" to \"1.35.0\")\n"
    );
    assert_eq!(kubectl(work, &proxy), "registry.k8s.io/kube-proxy:v1.33.2");

    let out = work.talosctl(&[
        "--talosconfig",
        tc,
        "-n",
        cp,
        "upgrade-k8s",
        "--to",
        "1.34.1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(kubectl(work, &proxy), "registry.k8s.io/kube-proxy:v1.34.1");
    assert_eq!(
        kubectl(
            work,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.nodeInfo.kubeletVersion}"
            ]
        ),
        "v1.34.1 v1.34.1"
    );
    let pods = kubectl(
        work,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-proxy",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
    );
    assert!(pods.contains("kube-proxy:v1.34.1"), "{pods}");
}

/// `kubeconfig -` with a file named `-` in the working directory, as upstream
/// (cmd/talosctl/cmd/talos/kubeconfig.go@v1.14.0-rc.1): the default `--merge=true` merges into
/// the file, `--merge=false` alone refuses ("already exists"), and `--merge=false --force`
/// writes stdout and leaves the file alone.
#[test]
fn kubeconfig_dash_with_a_file_named_dash() {
    let up = cluster(81, "v1.13.9", "1.34.1");
    let (work, tc, cp) = (&up.work, up.tc.as_str(), up.cp.as_str());
    let dash = work.file("-");
    let base = ["--talosconfig", tc, "-e", cp, "-n", cp, "kubeconfig", "-"];

    std::fs::write(&dash, "stale\n").unwrap();
    let out = work.talosctl(&[&base[..], &["--merge=false"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kubeconfig file already exists, use --force to overwrite: \"-\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&dash).unwrap(), "stale\n");

    let out = work.talosctl(&[&base[..], &["--merge=false", "--force"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: Config"));
    assert_eq!(std::fs::read_to_string(&dash).unwrap(), "stale\n");

    std::fs::remove_file(&dash).unwrap();
    let out = work.talosctl(&base);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: Config"));
    assert!(!dash.exists());
}
