//! The Proxmox client against the simulated PVE API over real HTTPS: MACs per VM (LXC mixed in,
//! upper-case MACs normalised, gaps in netN), the 401 message, certificate trust (cluster CA file,
//! system roots, skip-verify), and the token secret from an environment variable or a command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use talix::profile::model::{Proxmox, ProxmoxTls, TokenSecretSource};
use talix::proxmox::{ProxmoxClient, ProxmoxClientError, token_secret};
use talos_sim::proxmox::{ProxmoxSim, ProxmoxSpec};

const TOKEN_ID: &str = "root@pam!talos";
const SECRET: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

fn random_address(salt: &str) -> String {
    let seed = format!(
        "{salt}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes());
    let b = h.as_bytes();
    format!("127.{}.{}.{}", 10 + b[0] % 240, b[1], 1 + b[2] % 250)
}

struct Pve {
    sim: ProxmoxSim,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(salt: &str) -> Pve {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("pve-root-ca.pem");
    let yaml = format!(
        r#"address: {}
port: 8006
token: "{TOKEN_ID}={SECRET}"
auth_failure_delay_ms: 50
guests:
  - vmid: 101
    node: pve1
    name: talos-cp-1
    nets:
      0: "virtio=BC:24:11:5E:2A:01,bridge=vmbr0,firewall=1"
      2: "e1000=bc:24:11:7f:00:3c,bridge=vmbr1,tag=20"
  - vmid: 200
    node: pve1
    type: lxc
    name: dns
    nets:
      0: "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:02:00"
  - vmid: 102
    node: pve2
    name: talos-w-1
    nets:
      0: "vmxnet3=BC:24:11:00:01:02,bridge=vmbr0"
  - vmid: 105
    node: pve2
    status: unknown
"#,
        random_address(salt)
    );
    let spec: ProxmoxSpec = serde_saphyr::from_str(&yaml).unwrap();
    let sim = ProxmoxSim::start(spec, &ca_file).await.unwrap();
    Pve {
        sim,
        ca_file,
        _dir: dir,
    }
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_string())
}

fn ca(path: &Path) -> ProxmoxTls {
    ProxmoxTls::CaFile(path.to_path_buf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macs_of_vms_in_netn_order_lower_case_with_lxc_skipped() {
    let pve = start("macs").await;
    let client =
        ProxmoxClient::new(&pve.sim.url(), TOKEN_ID, secret(SECRET), &ca(&pve.ca_file)).unwrap();
    let macs = client.vm_macs(&[102, 101, 105]).await.unwrap();
    assert_eq!(
        macs,
        BTreeMap::from([
            (
                101,
                vec![
                    "bc:24:11:5e:2a:01".to_string(),
                    "bc:24:11:7f:00:3c".to_string()
                ]
            ),
            (102, vec!["bc:24:11:00:01:02".to_string()]),
            (105, vec![]),
        ])
    );
    assert!(client.vm_macs(&[]).await.unwrap().is_empty());

    // The URL may carry /api2/json and a trailing slash.
    let client = ProxmoxClient::new(
        &format!("{}/api2/json/", pve.sim.url()),
        TOKEN_ID,
        secret(SECRET),
        &ca(&pve.ca_file),
    )
    .unwrap();
    assert_eq!(
        client.vm_macs(&[102]).await.unwrap()[&102],
        vec!["bc:24:11:00:01:02"]
    );

    let err = client.vm_macs(&[101, 999]).await.unwrap_err();
    assert!(
        matches!(err, ProxmoxClientError::UnknownVm { vmid: 999 }),
        "{err}"
    );
    assert!(err.to_string().contains("999"), "{err}");
    let err = client.vm_macs(&[200]).await.unwrap_err();
    assert!(
        matches!(err, ProxmoxClientError::NotQemu { vmid: 200 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("200") && err.to_string().contains("LXC"),
        "{err}"
    );
    pve.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_gives_401_naming_token_id_and_secret_source() {
    let pve = start("unauthorized").await;
    let wrong = "00000000-dead-beef-0000-000000000000";
    let client = ProxmoxClient::new(&pve.sim.url(), TOKEN_ID, secret(wrong), &ca(&pve.ca_file))
        .unwrap()
        .with_secret_source("env PVE_SECRET (proxmox.token_secret_env)");
    let err = client.vm_macs(&[101]).await.unwrap_err();
    assert!(
        matches!(err, ProxmoxClientError::Unauthorized { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("401 Authentication failed!")
            && text.contains("proxmox.token_id")
            && text.contains(TOKEN_ID)
            && text.contains("env PVE_SECRET"),
        "{text}"
    );
    for shown in [text.clone(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains(wrong), "secret leaked: {shown}");
    }

    // A wrong token id with the right secret is rejected the same way.
    let client = ProxmoxClient::new(
        &pve.sim.url(),
        "root@pam!other",
        secret(SECRET),
        &ca(&pve.ca_file),
    )
    .unwrap();
    let text = client.vm_macs(&[101]).await.unwrap_err().to_string();
    assert!(
        text.contains("root@pam!other") && !text.contains(SECRET),
        "{text}"
    );
    pve.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_trust_follows_the_tls_setting() {
    let pve = start("trust").await;
    // System roots do not know the PVE cluster CA: a hint names the fix.
    let client = ProxmoxClient::new(
        &pve.sim.url(),
        TOKEN_ID,
        secret(SECRET),
        &ProxmoxTls::SystemRoots,
    )
    .unwrap();
    let text = client.vm_macs(&[101]).await.unwrap_err().to_string();
    assert!(
        text.contains("proxmox.ca_file") && text.contains("insecure_skip_verify"),
        "{text}"
    );

    // Another CA as the only root: still refused.
    let other = pve._dir.path().join("other-ca.pem");
    let other_ca = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    };
    std::fs::write(&other, other_ca).unwrap();
    let client = ProxmoxClient::new(&pve.sim.url(), TOKEN_ID, secret(SECRET), &ca(&other)).unwrap();
    assert!(matches!(
        client.vm_macs(&[101]).await,
        Err(ProxmoxClientError::Transport { .. })
    ));

    // Skip-verify works against the untrusted certificate.
    let client = ProxmoxClient::new(
        &pve.sim.url(),
        TOKEN_ID,
        secret(SECRET),
        &ProxmoxTls::InsecureSkipVerify,
    )
    .unwrap();
    assert_eq!(
        client.vm_macs(&[102]).await.unwrap()[&102],
        vec!["bc:24:11:00:01:02"]
    );

    // A CA file that is missing or not PEM is reported with its path.
    let missing = pve._dir.path().join("nope.pem");
    let err =
        ProxmoxClient::new(&pve.sim.url(), TOKEN_ID, secret(SECRET), &ca(&missing)).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let garbage = pve._dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err =
        ProxmoxClient::new(&pve.sim.url(), TOKEN_ID, secret(SECRET), &ca(&garbage)).unwrap_err();
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    pve.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secret_from_environment_and_from_a_command() {
    let pve = start("secret").await;
    let var = format!("TALIX_TEST_PVE_SECRET_{}", std::process::id());
    // SAFETY: the variable name is unique to this test; nothing else reads or writes it.
    unsafe { std::env::set_var(&var, SECRET) };
    let from_env = Proxmox {
        url: pve.sim.url(),
        token_id: TOKEN_ID.to_string(),
        token_secret: TokenSecretSource::Env(var.clone()),
        tls: ca(&pve.ca_file),
    };
    let client = ProxmoxClient::from_profile(&from_env).unwrap();
    assert_eq!(
        client.vm_macs(&[102]).await.unwrap()[&102],
        vec!["bc:24:11:00:01:02"]
    );

    // A wrong secret in the variable: the 401 message names the variable, not its value.
    unsafe { std::env::set_var(&var, "wrong-secret-value") };
    let client = ProxmoxClient::from_profile(&from_env).unwrap();
    let text = client.vm_macs(&[102]).await.unwrap_err().to_string();
    assert!(
        text.contains(&var) && !text.contains("wrong-secret-value"),
        "{text}"
    );
    unsafe { std::env::remove_var(&var) };
    let err = ProxmoxClient::from_profile(&from_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&var) && err.contains("not set"), "{err}");

    // From a command: only the first stdout line is the secret.
    let from_command = Proxmox {
        token_secret: TokenSecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            format!("printf '%s\\n' '{SECRET}'; echo second-line-is-not-the-secret"),
        ]),
        ..from_env.clone()
    };
    let client = ProxmoxClient::from_profile(&from_command).unwrap();
    assert_eq!(client.vm_macs(&[101]).await.unwrap()[&101].len(), 2);

    // A failing command: its stderr is in the error, its stdout never.
    let failing = TokenSecretSource::Command(vec![
        "sh".into(),
        "-c".into(),
        "printf 'stdout-%s-secret\\n' might-be-a; echo 'pass: entry not found' >&2; exit 3".into(),
    ]);
    let text = token_secret(&failing).unwrap_err().to_string();
    assert!(
        text.contains("pass: entry not found")
            && !text.contains("stdout-might-be-a-secret")
            && text.contains("exit status: 3"),
        "{text}"
    );
    let empty = TokenSecretSource::Command(vec!["true".into()]);
    assert!(
        token_secret(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
    let absent = TokenSecretSource::Command(vec!["/nonexistent/talix-secret-helper".into()]);
    assert!(
        token_secret(&absent)
            .unwrap_err()
            .to_string()
            .contains("cannot start")
    );
    pve.sim.shutdown().await;
}
