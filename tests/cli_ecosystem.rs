//! What talix hands the operator's environment, tested as a user meets it: completion scripts
//! for every shell (bash really completing a subcommand), man pages rendered by `man -l`, and a
//! flake.nix that Nix parses (CI installs nix-bin, man-db; see .ci/run).

mod common;

use std::path::Path;
use std::process::Command as Std;

use common::Workspace;

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

fn completions(ws: &Workspace, shell: &str) -> String {
    let out = ws
        .talix()
        .args(["completions", shell])
        .assert()
        .success()
        .stderr("")
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

fn have(program: &str) -> bool {
    Std::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_shell_gets_a_script_that_knows_the_subcommands() {
    let ws = Workspace::empty();
    for shell in SHELLS {
        let script = completions(&ws, shell);
        for word in [
            "validate",
            "plan",
            "why",
            "secrets",
            "rekey",
            "json",
            "allow-contract-change",
            "completions",
        ] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        assert!(!script.contains('\u{1b}'), "{shell}: escape codes");
    }
    // A shell that is not supported is a usage error naming the choices.
    ws.talix()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicates::str::contains("possible values: bash"));
}

#[test]
fn the_scripts_parse_in_their_shells() {
    let ws = Workspace::empty();
    for (shell, check) in [
        ("bash", ["bash", "-n"]),
        ("zsh", ["zsh", "-n"]),
        ("fish", ["fish", "-n"]),
    ] {
        if !have(check[0]) {
            println!(
                "SKIPPED syntax check of the {shell} script: {} is not installed",
                check[0]
            );
            continue;
        }
        let file = ws.write(&format!("talix.{shell}"), &completions(&ws, shell));
        let out = Std::new(check[0])
            .arg(check[1])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// COMPREPLY of the generated bash completion for the words typed so far (the last one is the
/// word under the cursor), as bash's programmable completion would call it.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        r#"source '{script}'
spec=$(complete -p talix) || exit 3
fn=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\) talix$/\1/p')
[ -n "$fn" ] || exit 4
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
"$fn" talix '{cur}' '{prev}'
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = quoted.join(" "),
        cur = words[cword],
    );
    let out = Std::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash completion failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_subcommands_nested_subcommands_and_flags() {
    let ws = Workspace::empty();
    let script = ws.write("talix.bash", &completions(&ws, "bash"));

    let reply = bash_complete(&script, &["talix", "pl"]);
    assert_eq!(reply, ["plan"], "talix pl<TAB>");

    let reply = bash_complete(&script, &["talix", ""]);
    for sub in [
        "validate", "plan", "why", "build", "up", "secrets", "store", "man",
    ] {
        assert!(
            reply.iter().any(|r| r == sub),
            "{sub} not offered: {reply:?}"
        );
    }

    let reply = bash_complete(&script, &["talix", "secrets", "re"]);
    assert_eq!(reply, ["rekey"], "talix secrets re<TAB>");

    let reply = bash_complete(&script, &["talix", "plan", "--js"]);
    assert_eq!(reply, ["--json"], "talix plan --js<TAB>");

    let reply = bash_complete(&script, &["talix", "si"]);
    assert_eq!(reply, ["sim"], "talix si<TAB>");

    let reply = bash_complete(&script, &["talix", "completions", "fi"]);
    assert_eq!(reply, ["fish"], "talix completions fi<TAB>");
}

/// `man -l FILE` rendered at 80 columns, as plain text.
fn render_man(file: &Path) -> String {
    let out = Std::new("man")
        .arg("-l")
        .arg(file)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MAN_KEEP_FORMATTING", "")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (Debian man-db) is installed");
    assert!(
        out.status.success(),
        "man -l {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Off a terminal man-db emits no bold/underline overstrikes; keep the check honest anyway.
    text.replace("\u{8}", "")
}

#[test]
fn man_renders_with_man_l_and_names_every_subcommand_and_exit_code() {
    let ws = Workspace::empty();
    let roff = ws
        .talix()
        .arg("man")
        .assert()
        .success()
        .stderr("")
        .get_output()
        .stdout
        .clone();
    let page = ws.root().join("talix.1");
    std::fs::write(&page, &roff).unwrap();
    let text = render_man(&page);
    for word in [
        "NAME",
        "SYNOPSIS",
        "talix-validate(1)",
        "talix-plan(1)",
        "talix-why(1)",
        "talix-build(1)",
        "talix-up(1)",
        "talix-export(1)",
        "talix-secrets(1)",
        "talix-store(1)",
        "talix-completions(1)",
        "talix-sim(1)",
        "talix-man(1)",
        "--verbose",
        "Exit status:",
        "NO_COLOR",
    ] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "wider than MANWIDTH:\n{text}"
    );
}

#[test]
fn man_out_dir_writes_one_page_per_command() {
    let ws = Workspace::empty();
    let out = ws
        .talix()
        .args(["man", "--out-dir", "man1"])
        .assert()
        .success()
        .stderr(predicates::str::contains("man pages"))
        .get_output()
        .stdout
        .clone();
    let listed: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let dir = ws.root().join("man1");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(listed.len(), names.len(), "{listed:?} vs {names:?}");
    for want in [
        "talix.1",
        "talix-plan.1",
        "talix-secrets-init.1",
        "talix-secrets-verify.1",
        "talix-store-prune.1",
        "talix-man.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with(".talix-tmp")),
        "{names:?}"
    );
    let init = render_man(&dir.join("talix-secrets-init.1"));
    for word in [
        "talix-secrets-init",
        "--force",
        "--i-know-this-breaks-the-cluster",
        "--from",
    ] {
        assert!(init.contains(word), "{word} missing in:\n{init}");
    }
    // A file where the directory should be: bad input, nothing written.
    ws.write("not-a-dir", "x");
    ws.talix()
        .args(["man", "--out-dir", "not-a-dir"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicates::str::contains("not-a-dir: not a directory"));
}

#[test]
fn flake_nix_parses() {
    let flake = Path::new(env!("CARGO_MANIFEST_DIR")).join("flake.nix");
    let text = std::fs::read_to_string(&flake).unwrap();
    for needle in [
        "buildRustPackage",
        "cargoLock.lockFile = ./Cargo.lock",
        "devShells",
        "apps",
        "checks",
        "nativeCheckInputs",
    ] {
        assert!(text.contains(needle), "flake.nix lacks {needle}");
    }
    if !have("nix-instantiate") {
        println!(
            "SKIPPED flake_nix_parses: nix-instantiate is not installed (CI installs nix-bin, see .ci/run)"
        );
        return;
    }
    let out = Std::new("nix-instantiate")
        .arg("--parse")
        .arg(&flake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-instantiate --parse flake.nix: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The flake's outputs evaluated against a stub nixpkgs (no network: the stubs stand for the
/// packages): every output CI cannot build exists for each system, the check runs the tests
/// with the programs they need, and the dev shell has talosctl, kubectl, age and the toolchain.
#[test]
fn flake_outputs_evaluate_against_a_stub_nixpkgs() {
    if !have("nix-instantiate") {
        println!(
            "SKIPPED flake_outputs_evaluate_against_a_stub_nixpkgs: nix-instantiate is not installed"
        );
        return;
    }
    let ws = Workspace::empty();
    let flake = Path::new(env!("CARGO_MANIFEST_DIR")).join("flake.nix");
    let mock = ws.write(
        "eval.nix",
        &STUB_EVAL.replace("@FLAKE@", &flake.display().to_string()),
    );
    let out = Std::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(&mock)
        .env("NIX_STATE_DIR", ws.root().join("nix-state"))
        .env("HOME", ws.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evaluating the flake's outputs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {v}"))
            .iter()
            .map(|s| {
                s.as_str()
                    .unwrap()
                    .trim_start_matches("/nix/store/stub-")
                    .to_string()
            })
            .collect()
    };
    for system in ["x86_64-linux", "aarch64-linux"] {
        assert_eq!(
            v["systems"][system],
            serde_json::json!(true),
            "{system}: {v}"
        );
    }
    assert_eq!(v["pname"], "talix");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["cargoLock"], "Cargo.lock");
    assert_eq!(v["checkRunsTests"], serde_json::json!(true));
    assert_eq!(v["packageRunsTests"], serde_json::json!(false));
    assert_eq!(v["app"], "/nix/store/talix/bin/talix");
    let check_inputs = names("checkInputs");
    for tool in [
        "age",
        "kubectl",
        "openssh",
        "jq",
        "bc",
        "man-db",
        "util-linux",
        "fish",
    ] {
        assert!(
            check_inputs.iter().any(|t| t == tool),
            "{tool} not in {check_inputs:?}"
        );
    }
    let shell = names("shell");
    for tool in [
        "talosctl", "kubectl", "age", "cargo", "rustc", "clippy", "rustfmt",
    ] {
        assert!(
            shell.iter().any(|t| t == tool),
            "{tool} not in the dev shell: {shell:?}"
        );
    }
    let post_patch = v["postPatch"].as_str().unwrap();
    assert!(
        post_patch.contains("/nix/store/stub-kubectl/bin"),
        "{post_patch}"
    );
    let post_install = v["postInstall"].as_str().unwrap();
    for needle in [
        "talix completions bash",
        "talix man --out-dir",
        "installManPage",
    ] {
        assert!(
            post_install.contains(needle),
            "{needle} missing in {post_install}"
        );
    }
}

/// A stub nixpkgs: just the functions and attributes flake.nix uses; packages are store-path
/// strings named after their attribute, so a misspelt attribute fails the evaluation.
const STUB_EVAL: &str = r#"
let
  flake = import @FLAKE@;
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    cleanSourceWith = a: a;
    removePrefix = p: s: s;
    hasPrefix = p: s: false;
    optionalString = c: s: if c then s else "";
    makeBinPath = l: builtins.concatStringsSep ":" (map (x: "${x}/bin") l);
    platforms.linux = [ ];
  };
  stub = name: "/nix/store/stub-${name}";
  pkgs = {
    inherit lib;
    stdenv.hostPlatform.system = "x86_64-linux";
    rustPlatform = {
      buildRustPackage = a: a // { outPath = "/nix/store/talix"; };
      rustLibSrc = stub "rust-lib-src";
    };
    mkShell = a: a;
    runCommand = name: attrs: script: attrs // { inherit name script; };
  } // lib.genAttrs [ "age" "openssh" "kubectl" "jq" "bc" "man-db" "util-linux" "bash"
    "coreutils" "gnused" "zsh" "fish" "cargo" "rustc" "clippy" "rustfmt" "rust-analyzer" "talosctl" "nix"
    "installShellFiles" ] stub;
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: pkgs);
  };
  out = flake.outputs { self = out; inherit nixpkgs; };
  tests = out.checks.x86_64-linux.tests;
  pkg = out.packages.x86_64-linux.default;
in {
  systems = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (s:
    out.packages.${s} ? talix && out.apps.${s} ? default && out.devShells.${s} ? default
      && out.checks.${s} ? tests && out.checks.${s} ? fmt);
  pname = pkg.pname;
  version = pkg.version;
  cargoLock = baseNameOf (toString pkg.cargoLock.lockFile);
  packageRunsTests = pkg.doCheck;
  checkRunsTests = tests.doCheck;
  checkInputs = tests.nativeCheckInputs;
  postPatch = tests.postPatch;
  postInstall = pkg.postInstall;
  app = out.apps.aarch64-linux.default.program;
  shell = out.devShells.x86_64-linux.default.packages;
}
"#;

/// fish's own completion engine (`complete -C LINE`) over the generated script; skipped with a
/// notice where fish is not installed (CI installs it, see .ci/run).
#[test]
fn fish_completes_subcommands_and_flags() {
    if !have("fish") {
        println!("SKIPPED fish_completes_subcommands_and_flags: fish is not installed");
        return;
    }
    let ws = Workspace::empty();
    let script = ws.write("talix.fish", &completions(&ws, "fish"));
    let complete = |line: &str| -> Vec<String> {
        let out = Std::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C '{line}'",
                script.display()
            ))
            .env("HOME", ws.root())
            .env("XDG_CONFIG_HOME", ws.root().join("config"))
            .env("XDG_DATA_HOME", ws.root().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(complete("talix pl"), ["plan"]);
    assert_eq!(complete("talix secrets re"), ["rekey"]);
    assert_eq!(complete("talix plan --js"), ["--json"]);
    let all = complete("talix ");
    for sub in ["validate", "why", "up", "store", "completions", "man"] {
        assert!(all.iter().any(|c| c == sub), "{sub} not offered: {all:?}");
    }
}
