//! `talosctl gen secrets` and `talosctl gen config` (talosctl-cli.md §2, §3): real secrets,
//! machine configs shaped per version contract, a talosconfig with a fresh client certificate,
//! and talosctl's exact messages and file handling.

use std::io::Write as _;
use std::path::Path;

use super::flags::{self, FlagKind, FlagSpec};
use super::talosconfig::{TalosContext, Talosconfig, write_private};
use super::{CliError, command_usage, exact_args};
use crate::client_version;
use crate::machineconfig::MachineType;
use crate::machineconfig::contract::{Contract, parse_major_minor};
use crate::machineconfig::generate::{GenerateInput, generate};
use crate::machineconfig::merge::{self, Patch, Patched};
use crate::machineconfig::yaml::{self, Yaml};
use crate::pki::{self, CertAndKey, KeyOnly, SecretsBundle};

const FORCE: FlagSpec = FlagSpec::new(
    "force",
    Some('f'),
    FlagKind::Bool,
    "false",
    "will overwrite existing files",
);

const SECRETS_FLAGS: &[FlagSpec] = &[
    FlagSpec::new(
        "output-file",
        Some('o'),
        FlagKind::String,
        "secrets.yaml",
        "path of the output file, or \"-\" for stdout",
    ),
    FlagSpec::new(
        "talos-version",
        None,
        FlagKind::String,
        "",
        "the desired Talos version to generate secrets bundle for (backwards compatibility, e.g. v0.8)",
    ),
    FlagSpec::new(
        "from-kubernetes-pki",
        Some('p'),
        FlagKind::String,
        "",
        "use a Kubernetes PKI directory (e.g. /etc/kubernetes/pki) as input",
    ),
    FlagSpec::new(
        "kubernetes-bootstrap-token",
        Some('t'),
        FlagKind::String,
        "",
        "use the provided bootstrap token as input",
    ),
    FlagSpec::new(
        "from-controlplane-config",
        None,
        FlagKind::String,
        "",
        "use the provided controlplane Talos machine configuration as input",
    ),
    FORCE,
];

const CONFIG_FLAGS: &[FlagSpec] = &[
    FlagSpec::new(
        "output",
        Some('o'),
        FlagKind::String,
        "",
        "destination to output generated files. when multiple output types are specified, it must be a directory. for a single output type, it must either be a file path, or \"-\" for stdout",
    ),
    FlagSpec::new("output-dir", None, FlagKind::String, "", ""),
    FlagSpec::new(
        "output-types",
        Some('t'),
        FlagKind::StringSlice,
        "controlplane,worker,talosconfig",
        "types of outputs to be generated. valid types are: [\"controlplane\" \"worker\" \"talosconfig\"]",
    ),
    FlagSpec::new(
        "with-secrets",
        None,
        FlagKind::String,
        "",
        "use a secrets file generated using 'gen secrets'",
    ),
    FlagSpec::new(
        "install-image",
        None,
        FlagKind::String,
        "",
        "the image used to perform an installation",
    ),
    FlagSpec::new(
        "install-disk",
        None,
        FlagKind::String,
        "/dev/sda",
        "the disk to install to",
    ),
    FlagSpec::new(
        "kubernetes-version",
        None,
        FlagKind::String,
        "",
        "desired kubernetes version to run",
    ),
    FlagSpec::new(
        "talos-version",
        None,
        FlagKind::String,
        "",
        "the desired Talos version to generate config for (backwards compatibility, e.g. v0.8)",
    ),
    FlagSpec::new(
        "version",
        None,
        FlagKind::String,
        "v1alpha1",
        "the desired machine config version to generate",
    ),
    FlagSpec::new(
        "dns-domain",
        None,
        FlagKind::String,
        "cluster.local",
        "the dns domain to use for cluster",
    ),
    FlagSpec::new(
        "additional-sans",
        None,
        FlagKind::StringSlice,
        "",
        "additional Subject-Alt-Names for the APIServer certificate",
    ),
    FlagSpec::new(
        "with-cluster-discovery",
        None,
        FlagKind::Bool,
        "true",
        "enable cluster discovery feature",
    ),
    FlagSpec::new(
        "with-kubespan",
        None,
        FlagKind::Bool,
        "false",
        "enable KubeSpan feature",
    ),
    FlagSpec::new(
        "registry-mirror",
        None,
        FlagKind::StringSlice,
        "",
        "list of registry mirrors to use in format: <registry host>=<mirror URL>",
    ),
    FlagSpec::new(
        "with-docs",
        None,
        FlagKind::Bool,
        "true",
        "renders all machine configs adding the documentation for each field",
    ),
    FlagSpec::new(
        "with-examples",
        None,
        FlagKind::Bool,
        "true",
        "renders all machine configs with the commented examples",
    ),
    FlagSpec::new(
        "config-patch",
        None,
        FlagKind::StringArray,
        "",
        "patch generated machineconfigs (applied to all node types), use @file to read a patch from file",
    ),
    FlagSpec::new(
        "config-patch-control-plane",
        None,
        FlagKind::StringArray,
        "",
        "patch generated machineconfigs (applied to 'init' and 'controlplane' types)",
    ),
    FlagSpec::new(
        "config-patch-worker",
        None,
        FlagKind::StringArray,
        "",
        "patch generated machineconfigs (applied to 'worker' type)",
    ),
    FORCE,
];

const PERSIST: FlagSpec = FlagSpec::new(
    "persist",
    Some('p'),
    FlagKind::Bool,
    "true",
    "the desired persist value for configs",
);

fn client_minor() -> (u32, u32) {
    parse_major_minor(&client_version()).unwrap_or((1, 99))
}

fn config_specs() -> Vec<FlagSpec> {
    let mut specs = CONFIG_FLAGS.to_vec();
    // `-p/--persist` exists only up to talosctl v1.12.
    if client_minor() <= (1, 12) {
        specs.push(PERSIST);
    }
    specs
}

fn gen_usage() -> String {
    "Generate CAs, certificates, and private keys\n\nUsage:\n  talosctl gen [command]\n\nAvailable Commands:\n  config      Generates a set of configuration files for Talos cluster\n  secrets     Generates a secrets bundle file which can later be used to generate a config\n\nFlags:\n  -f, --force   will overwrite existing files\n  -h, --help    help for gen\n\nUse \"talosctl gen [command] --help\" for more information about a command.\n".to_string()
}

/// Runs `talosctl gen ...` (arguments after `gen`).
pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let sub = args
        .iter()
        .position(|a| !a.starts_with('-'))
        .map(|i| (i, args[i].clone()));
    match sub {
        Some((i, name)) if name == "secrets" || name == "config" => {
            let mut rest = args.clone();
            rest.remove(i);
            if name == "secrets" {
                gen_secrets(rest)
            } else {
                gen_config(rest)
            }
        }
        _ => {
            // cobra: a non-runnable parent prints its help and succeeds.
            print!("{}", gen_usage());
            Ok(())
        }
    }
}

pub use crate::go_io_error;

/// `os.WriteFile` semantics: the parent directory must exist; the mode applies to new files.
fn write_file_no_parents(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    write_private(path, bytes, mode)
}

fn read_file_go(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| go_io_error("open", path, &e))
}

fn already_exists(path: &str) -> String {
    format!("file \"{path}\" already exists, use --force to overwrite")
}

fn gen_secrets(args: Vec<String>) -> Result<(), CliError> {
    let usage = command_usage("gen secrets", SECRETS_FLAGS, false);
    let parsed = flags::parse(&args, SECRETS_FLAGS).map_err(|e| CliError::new(e, &usage))?;
    if parsed.help {
        print!(
            "Generates a secrets bundle file which can later be used to generate a config\n\n{usage}"
        );
        return Ok(());
    }
    super::no_args(&parsed.positionals, "gen secrets", &usage)?;
    let contract = Contract::parse(&parsed.string("talos-version"))
        .map_err(|e| CliError::new(e.to_string(), &usage))?;
    let mut bundle = if parsed.changed("from-controlplane-config") {
        let path = parsed.string("from-controlplane-config");
        let bytes = read_file_go(&path).map_err(|e| {
            CliError::new(format!("failed to load controlplane config: {e}"), &usage)
        })?;
        bundle_from_controlplane_config(&bytes).map_err(|e| {
            CliError::new(
                format!("failed to create secrets bundle from controlplane config: {e}"),
                &usage,
            )
        })?
    } else {
        pki::generate(contract).map_err(|e| CliError::new(e.to_string(), &usage))?
    };
    if parsed.changed("from-kubernetes-pki") {
        import_kubernetes_pki(&mut bundle, &parsed.string("from-kubernetes-pki"))
            .map_err(|e| CliError::new(format!("failed to create secrets bundle: {e}"), &usage))?;
        let token = parsed.string("kubernetes-bootstrap-token");
        if !token.is_empty() {
            bundle.secrets.bootstraptoken = token;
        }
    }
    let text = bundle.to_yaml();
    let output = parsed.string("output-file");
    if output == "-" && client_minor() >= (1, 12) {
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| CliError::new(e.to_string(), &usage))?;
        return Ok(());
    }
    if !parsed.bool("force") && Path::new(&output).exists() {
        return Err(CliError::new(already_exists(&output), &usage));
    }
    write_file_no_parents(Path::new(&output), text.as_bytes(), 0o600)
        .map_err(|e| CliError::new(go_io_error("open", &output, &e), &usage))?;
    Ok(())
}

/// Rebuilds a bundle from a classic or multi-document controlplane config.
fn bundle_from_controlplane_config(bytes: &[u8]) -> Result<SecretsBundle, String> {
    let config = crate::machineconfig::ConfigDocuments::parse(bytes).map_err(|e| e.to_string())?;
    let main = config
        .v1alpha1()
        .ok_or_else(|| crate::machineconfig::MISSING_V1ALPHA1.to_string())?;
    let text = |node: &Yaml, path: &str| {
        node.path(path)
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let pair = |node: &Yaml, path: &str| {
        Some(CertAndKey {
            crt: text(node, &format!("{path}.crt")),
            key: text(node, &format!("{path}.key")),
        })
        .filter(|c| !c.crt.is_empty())
    };
    let typed = |kind: &str| config.of_kind(kind).next().cloned().unwrap_or(Yaml::Null);
    let pem_pair = |kind: &str| {
        let doc = typed(kind);
        Some(CertAndKey {
            crt: pki::b64(&text(&doc, "issuingCA.cert")),
            key: pki::b64(&text(&doc, "issuingCA.key")),
        })
        .filter(|c| !c.crt.is_empty())
    };
    let identity = typed("DiscoveryIdentityConfig");
    let mut bundle = SecretsBundle::default();
    bundle.cluster.id = text(main, "cluster.id");
    bundle.cluster.secret = text(main, "cluster.secret");
    if bundle.cluster.id.is_empty() {
        bundle.cluster.id = text(&identity, "clusterID");
        bundle.cluster.secret = text(&identity, "clusterSecret");
    }
    bundle.secrets.bootstraptoken = text(main, "cluster.token");
    bundle.secrets.secretboxencryptionsecret = text(main, "cluster.secretboxEncryptionSecret");
    bundle.secrets.aescbcencryptionsecret = text(main, "cluster.aescbcEncryptionSecret");
    if bundle.secrets.secretboxencryptionsecret.is_empty()
        && bundle.secrets.aescbcencryptionsecret.is_empty()
    {
        let enc = typed("KubeEtcdEncryptionConfig");
        let provider = enc
            .path("config.resources")
            .and_then(Yaml::as_seq)
            .and_then(|r| r.first())
            .and_then(|r| r.get("providers"))
            .and_then(Yaml::as_seq)
            .and_then(|p| p.first())
            .cloned()
            .unwrap_or(Yaml::Null);
        let secret_of = |name: &str| {
            provider
                .get(name)
                .and_then(|p| p.get("keys"))
                .and_then(Yaml::as_seq)
                .and_then(|k| k.first())
                .map(|k| text(k, "secret"))
                .unwrap_or_default()
        };
        bundle.secrets.secretboxencryptionsecret = secret_of("secretbox");
        bundle.secrets.aescbcencryptionsecret = secret_of("aescbc");
    }
    bundle.trustdinfo.token = text(main, "machine.token");
    bundle.certs.os = pair(main, "machine.ca");
    bundle.certs.etcd = pair(main, "cluster.etcd.ca");
    bundle.certs.k8s = pair(main, "cluster.ca").or_else(|| pem_pair("KubeAPIServerCAConfig"));
    bundle.certs.k8saggregator =
        pair(main, "cluster.aggregatorCA").or_else(|| pem_pair("KubeAggregatorCAConfig"));
    let sa = text(main, "cluster.serviceAccount.key");
    let sa = if sa.is_empty() {
        let pem = text(&typed("KubeServiceAccountConfig"), "issuer.privateKey");
        if pem.is_empty() {
            String::new()
        } else {
            pki::b64(&pem)
        }
    } else {
        sa
    };
    bundle.certs.k8sserviceaccount = Some(KeyOnly { key: sa }).filter(|k| !k.key.is_empty());
    Ok(bundle)
}

fn import_kubernetes_pki(bundle: &mut SecretsBundle, dir: &str) -> Result<(), String> {
    let read = |name: &str| -> Result<String, String> {
        let path = Path::new(dir).join(name);
        let bytes = read_file_go(&path.to_string_lossy())?;
        Ok(pki::b64(&String::from_utf8_lossy(&bytes)))
    };
    bundle.certs.k8s = Some(CertAndKey {
        crt: read("ca.crt")?,
        key: read("ca.key")?,
    });
    bundle.certs.etcd = Some(CertAndKey {
        crt: read("etcd/ca.crt")?,
        key: read("etcd/ca.key")?,
    });
    bundle.certs.k8saggregator = Some(CertAndKey {
        crt: read("front-proxy-ca.crt")?,
        key: read("front-proxy-ca.key")?,
    });
    bundle.certs.k8sserviceaccount = Some(KeyOnly {
        key: read("sa.key")?,
    });
    Ok(())
}

/// The parts of a Go `url.URL` that `validateClusterEndpoint` looks at.
#[derive(Debug, Default)]
struct GoUrl {
    scheme: String,
    host: String,
    path: String,
    opaque: String,
}

impl GoUrl {
    /// `url.Parse` for the shapes a cluster endpoint takes; Err on Go's parse failures.
    fn parse(text: &str) -> Result<GoUrl, String> {
        let mut url = GoUrl::default();
        let mut rest = text;
        let scheme_end = text.find(':').filter(|&i| {
            let candidate = &text[..i];
            candidate
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && candidate
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if let Some(i) = scheme_end {
            url.scheme = text[..i].to_ascii_lowercase();
            rest = &text[i + 1..];
        }
        if !url.scheme.is_empty() && !rest.starts_with('/') {
            url.opaque = rest.to_string();
            return Ok(url);
        }
        if let Some(authority_and_path) = rest.strip_prefix("//") {
            let (authority, path) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            url.host = authority.to_string();
            url.path = path.to_string();
            return Ok(url);
        }
        if url.scheme.is_empty() && rest.split('/').next().unwrap_or_default().contains(':') {
            return Err(format!(
                "parse \"{text}\": first path segment in URL cannot contain colon"
            ));
        }
        url.path = rest.to_string();
        Ok(url)
    }

    fn port(&self) -> &str {
        let host = &self.host;
        let after_bracket = host.rfind(']').map_or(0, |i| i + 1);
        match host[after_bracket..].rfind(':') {
            Some(i) => &host[after_bracket + i + 1..],
            None => "",
        }
    }

    /// `fixControlPlaneEndpoint` followed by `String()`.
    fn fixed(mut self) -> String {
        if self.scheme.is_empty() && self.host.is_empty() && !self.path.is_empty() {
            self.host = std::mem::take(&mut self.path);
        }
        self.scheme = "https".to_string();
        if self.port().is_empty() {
            self.host = format!("{}:6443", self.host);
        }
        if !self.opaque.is_empty() {
            return format!("{}:{}", self.scheme, self.opaque);
        }
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }
}

/// `validateClusterEndpoint` of talosctl: the endpoint must be an https URL.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = match GoUrl::parse(endpoint) {
        Ok(url) => url,
        Err(_) if !endpoint.contains('/') => GoUrl {
            host: endpoint.to_string(),
            ..GoUrl::default()
        },
        Err(e) => return Err(format!("failed to parse the cluster endpoint URL: {e}")),
    };
    if url.scheme.is_empty() {
        let message = if url.port().is_empty() {
            "no scheme and port specified for the cluster endpoint URL"
        } else {
            "no scheme specified for the cluster endpoint URL"
        };
        return Err(format!("{message}\ntry: \"{}\"", url.fixed()));
    }
    if url.scheme != "https" {
        return Err(format!(
            "the control plane endpoint URL should have scheme https://\ntry: \"{}\"",
            url.fixed()
        ));
    }
    if url.host.is_empty() {
        return Err(format!(
            "error validating the cluster endpoint URL: {endpoint:?}: missing host"
        ));
    }
    Ok(())
}

/// talosctl's default Kubernetes version per talosctl minor (talosctl-cli.md §3).
pub fn default_kubernetes_version() -> &'static str {
    match client_minor() {
        (1, m) if m <= 7 => "1.30.5",
        (1, 8) => "1.31.4",
        (1, 9) => "1.32.4",
        (1, 10) => "1.33.0",
        (1, 11) => "1.34.1",
        (1, 12) => "1.35.4",
        (1, 13) => "1.36.3",
        // upstream: pkg/machinery/constants/constants.go@v1.14.0-rc.1.
        _ => "1.37.0-rc.0",
    }
}

/// The default installer image: `ghcr.io/siderolabs/installer:<tag>` up to v1.13, the image
/// factory's vanilla metal installer from v1.14; tag from env `TAG` or the client version.
pub fn default_install_image() -> String {
    // `os.LookupEnv`: a set but empty TAG gives an empty tag (helpers/image.go@v1.14.0-rc.1).
    let tag = std::env::var("TAG").unwrap_or_else(|_| client_version());
    if client_minor() >= (1, 14) {
        format!(
            "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:{tag}"
        )
    } else {
        format!("ghcr.io/siderolabs/installer:{tag}")
    }
}

/// The contract a talosctl release actually generates for a requested one: its generator only
/// knows the features of contracts up to its own series, so asking an older talosctl for a newer
/// contract yields its own series' layout (the newest gate in contract.go is
/// `Greater(TalosVersion1_10)`@v1.11.6, `Greater(TalosVersion1_11)`@v1.12.11,
/// `Greater(TalosVersion1_12)`@v1.13.9, and each series' own-contract stability goldens are
/// byte-identical at those tags).
fn generator_contract(requested: Contract, client: Contract) -> Contract {
    match (requested, client) {
        (Contract::Version { major, minor }, Contract::Version { .. })
            if client.greater_than(major, minor) || client == requested =>
        {
            requested
        }
        (_, Contract::Version { .. }) => client,
        (requested, Contract::Current) => requested,
    }
}

const OUTPUT_TYPES: [&str; 3] = ["controlplane", "worker", "talosconfig"];

fn gen_config(args: Vec<String>) -> Result<(), CliError> {
    let specs = config_specs();
    let usage = command_usage(
        "gen config <cluster name> <cluster endpoint>",
        &specs,
        false,
    );
    let parsed = flags::parse(&args, &specs).map_err(|e| CliError::new(e, &usage))?;
    if parsed.help {
        print!("Generates a set of configuration files for Talos cluster\n\n{usage}");
        return Ok(());
    }
    exact_args(&parsed.positionals, 2, &usage)?;
    let fail = |e: String| CliError::new(e, &usage);
    let cluster_name = parsed.positionals[0].clone();
    let endpoint = parsed.positionals[1].clone();
    check_endpoint(&endpoint).map_err(fail)?;
    let config_version = parsed.string("version");
    if config_version != "v1alpha1" {
        return Err(fail(format!(
            "unknown config version: \"{config_version}\""
        )));
    }

    // validateFlags, in upstream order.
    let mut output = parsed.string("output");
    let output_dir = parsed.string("output-dir");
    let types = parsed.list("output-types");
    if types.is_empty() {
        return Err(fail(
            "at least one output type must be specified".to_string(),
        ));
    }
    if types.len() > 1 && output == "-" {
        return Err(fail(
            "can't use multiple output types with stdout".to_string(),
        ));
    }
    if !output_dir.is_empty() && !output.is_empty() {
        return Err(fail("can't use both output-dir and output".to_string()));
    }
    if !output_dir.is_empty() {
        output = output_dir.clone();
    }
    let invalid: Vec<String> = types
        .iter()
        .filter(|t| !OUTPUT_TYPES.contains(&t.as_str()))
        .map(|t| format!("invalid output type: \"{t}\""))
        .collect();
    if !invalid.is_empty() {
        return Err(fail(crate::machineconfig::format_errors(&invalid)));
    }
    let mut registry_mirrors = Vec::new();
    for spec in parsed.list("registry-mirror") {
        let (host, url) = spec
            .split_once('=')
            .ok_or_else(|| fail(format!("invalid registry mirror spec: \"{spec}\"")))?;
        registry_mirrors.push((host.to_string(), url.to_string()));
    }
    let contract = match parsed.string("talos-version").as_str() {
        "" => Contract::of_client(&client_version()),
        text => Contract::parse(text).map_err(|e| fail(e.to_string()))?,
    };
    let contract = generator_contract(contract, Contract::of_client(&client_version()));

    let supplied_bundle = match parsed.string("with-secrets").as_str() {
        "" => None,
        path => {
            let bytes = read_file_go(path)
                .map_err(|e| fail(format!("failed to load secrets bundle: {e}")))?;
            let bundle = pki::parse(&bytes)
                .map_err(|e| fail(format!("failed to load secrets bundle: {e}")))?;
            // v1.11+ validates the bundle; upstream Bundle.Validate collects with multierror.
            if client_minor() >= (1, 11) {
                let problems: Vec<String> =
                    bundle.validate().iter().map(ToString::to_string).collect();
                if !problems.is_empty() {
                    return Err(fail(format!(
                        "failed to validate secrets bundle: {}",
                        crate::machineconfig::format_errors(&problems)
                    )));
                }
            }
            Some(bundle)
        }
    };
    let load = |name: &str| {
        merge::load_patches(&parsed.list(name))
            .map_err(|e| fail(format!("error parsing config JSON patch: {e}")))
    };
    let common_patches = load("config-patch")?;
    let cp_patches = load("config-patch-control-plane")?;
    let worker_patches = load("config-patch-worker")?;

    eprintln!("generating PKI and tokens");
    let bundle = match supplied_bundle {
        Some(b) => b,
        None => pki::generate(contract).map_err(|e| fail(e.to_string()))?,
    };
    // `strings.TrimPrefix(kubernetesVersion, "v")`; an explicit empty version is used as given
    // up to v1.13 (images tagged `:v`) and refused by v1.14's `generate.NewInput`
    // (generate/generate.go@v1.14.0-rc.1, wrapped in bundle.NewBundle's error).
    let kubernetes_version = if parsed.changed("kubernetes-version") {
        let given = parsed.string("kubernetes-version");
        given.strip_prefix('v').unwrap_or(&given).to_string()
    } else {
        default_kubernetes_version().to_string()
    };
    if kubernetes_version.is_empty() && client_minor() >= (1, 14) {
        return Err(fail(
            "failed to generate config bundle: kubernetes version must be specified".to_string(),
        ));
    }
    // The flag's default is the computed image; an explicit value, even "", is used as given
    // (upstream: cmd/talosctl/cmd/mgmt/gen/config.go@v1.14.0-rc.1 and @v1.11.6 pass
    // `genConfigCmdFlags.installImage` straight to `generate.WithInstallImage`).
    let install_image = if parsed.changed("install-image") {
        parsed.string("install-image")
    } else {
        default_install_image()
    };
    let input = GenerateInput {
        cluster_name: cluster_name.clone(),
        endpoint,
        contract,
        kubernetes_version,
        install_image,
        install_disk: parsed.string("install-disk"),
        dns_domain: parsed.string("dns-domain"),
        additional_sans: parsed.list("additional-sans"),
        discovery: parsed.bool("with-cluster-discovery"),
        kubespan: parsed.bool("with-kubespan"),
        registry_mirrors,
        // `-p/--persist` (talosctl ≤ v1.12, `generate.WithPersist`); later releases always
        // generate `persist: true` (generate/init.go@v1.13.9).
        persist: !specs.iter().any(|f| f.long == "persist") || parsed.bool("persist"),
    };
    let with_docs = parsed.bool("with-docs") || parsed.bool("with-examples");
    let render = |t: MachineType, extra: &[Patch], scope: &str| -> Result<String, CliError> {
        let docs = generate(&bundle, &input, t);
        let patched = merge::apply_patches(docs.clone(), &common_patches).map_err(|e| {
            fail(format!(
                "failed to generate config bundle: error patching configs: {e}"
            ))
        })?;
        let patched = merge::apply_patches(patched.docs, extra).map_err(|e| {
            fail(format!(
                "failed to generate config bundle: error patching {scope} configs: {e}"
            ))
        })?;
        let body = if common_patches.is_empty() && extra.is_empty() {
            yaml::emit_documents(&docs)
        } else {
            Patched {
                docs: patched.docs,
                last_was_json: false,
            }
            .render_canonical()
        };
        Ok(if with_docs {
            format!(
                "# Talos machine configuration for a {} node (talosctl simulator: field documentation is not reproduced).\n{body}",
                t.as_str()
            )
        } else {
            body
        })
    };
    // Patch errors surface even for types not being written, as in the upstream bundle.
    let controlplane = render(MachineType::ControlPlane, &cp_patches, "control plane")?;
    let worker = render(MachineType::Worker, &worker_patches, "worker")?;

    // outputPaths + writeConfigBundle: fixed order, files named by filepath.Join.
    let single = types.len() == 1;
    let to_stdout = output == "-";
    let destination = |file: &str| -> Result<String, CliError> {
        if output.is_empty() {
            let cwd = std::env::current_dir().map_err(|e| fail(e.to_string()))?;
            Ok(go_join(&cwd.to_string_lossy(), file))
        } else if single && output_dir.is_empty() {
            Ok(output.clone())
        } else {
            Ok(go_join(&output, file))
        }
    };
    for (kind, file) in [
        ("controlplane", "controlplane.yaml"),
        ("worker", "worker.yaml"),
        ("talosconfig", "talosconfig"),
    ] {
        if !types.iter().any(|t| t == kind) {
            continue;
        }
        let content = match kind {
            "controlplane" => controlplane.clone(),
            "worker" => worker.clone(),
            _ => talosconfig_text(&bundle, &cluster_name).map_err(fail)?,
        };
        if to_stdout {
            std::io::stdout()
                .write_all(content.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
            continue;
        }
        let shown = destination(file)?;
        let path = Path::new(&shown);
        if !parsed.bool("force") && path.exists() {
            return Err(fail(already_exists(&shown)));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent)
                .map_err(|e| fail(format!("failed to create output dir: {e}")))?;
        }
        let written = write_private(path, content.as_bytes(), 0o644);
        eprintln!("Created {shown}");
        written.map_err(|e| fail(go_io_error("open", &shown, &e)))?;
    }
    Ok(())
}

/// Go's `filepath.Join`: joins and cleans (`./out` + `x` = `out/x`).
fn go_join(dir: &str, file: &str) -> String {
    let joined = format!("{dir}/{file}");
    let absolute = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            other => parts.push(other),
        }
    }
    let body = parts.join("/");
    if absolute {
        format!("/{body}")
    } else if body.is_empty() {
        ".".to_string()
    } else {
        body
    }
}

/// The talosconfig `gen config` writes: context named after the cluster, no endpoints, the OS CA
/// and a fresh `os:admin` client certificate.
fn talosconfig_text(bundle: &SecretsBundle, cluster_name: &str) -> Result<String, String> {
    let (ca_crt, ca_key) = bundle.ca_pem("os");
    let (crt, key) =
        pki::issue_client_cert(&ca_crt, &ca_key, "", "os:admin").map_err(|e| e.to_string())?;
    let mut config = Talosconfig {
        context: cluster_name.to_string(),
        ..Talosconfig::default()
    };
    config.contexts.insert(
        cluster_name.to_string(),
        TalosContext {
            ca: bundle
                .certs
                .os
                .as_ref()
                .map(|c| c.crt.clone())
                .unwrap_or_default(),
            crt: pki::b64(&crt),
            key: pki::b64(&key),
            ..TalosContext::default()
        },
    );
    Ok(config.to_yaml())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_errors_match_talosctl() {
        assert!(check_endpoint("https://10.5.0.2:6443").is_ok());
        assert!(check_endpoint("https://cp.example").is_ok());
        assert_eq!(
            check_endpoint("10.5.0.2").unwrap_err(),
            "no scheme and port specified for the cluster endpoint URL\ntry: \"https://10.5.0.2:6443\""
        );
        assert_eq!(
            check_endpoint("10.5.0.2:6443").unwrap_err(),
            "no scheme specified for the cluster endpoint URL\ntry: \"https://10.5.0.2:6443\""
        );
        assert_eq!(
            check_endpoint("cp.example:6443").unwrap_err(),
            "the control plane endpoint URL should have scheme https://\ntry: \"https:6443\""
        );
        assert_eq!(
            check_endpoint("cp.example").unwrap_err(),
            "no scheme and port specified for the cluster endpoint URL\ntry: \"https://cp.example:6443\""
        );
        assert_eq!(go_join("./out/", "talosconfig"), "out/talosconfig");
        assert_eq!(go_join("/tmp/x/../y", "a.yaml"), "/tmp/y/a.yaml");
        assert_eq!(
            check_endpoint("http://10.5.0.2:6443").unwrap_err(),
            "the control plane endpoint URL should have scheme https://\ntry: \"https://10.5.0.2:6443\""
        );
    }

    #[test]
    fn older_talosctl_generates_its_own_series_for_newer_contracts() {
        let v = |text: &str| Contract::parse(text).unwrap();
        assert_eq!(generator_contract(v("v1.14"), v("v1.11.6")), v("v1.11"));
        assert_eq!(generator_contract(v("v1.9"), v("v1.11.6")), v("v1.9"));
        assert_eq!(generator_contract(v("v1.13"), v("v1.13.9")), v("v1.13"));
        assert_eq!(generator_contract(v("v2.0"), v("v1.14.0-rc.1")), v("v1.14"));
        assert_eq!(
            generator_contract(Contract::Current, v("v1.12.11")),
            v("v1.12")
        );
        assert_eq!(
            generator_contract(v("v1.14"), Contract::Current),
            v("v1.14")
        );
    }

    #[test]
    fn rebuilds_bundle_from_controlplane_configs() {
        let sample = pki::parse(include_bytes!("../machineconfig/testdata/secrets.yaml")).unwrap();
        for text in [
            include_str!("../machineconfig/testdata/controlplane-contract-v1.11.yaml"),
            include_str!("../machineconfig/testdata/controlplane-contract-v1.14-multidoc.yaml"),
        ] {
            let bundle = bundle_from_controlplane_config(text.as_bytes()).unwrap();
            assert!(bundle == sample);
        }
    }
}
