//! The simulated Proxmox VE API answers reqwest with PVE's shapes, token rules and errors.

mod sim_nodes_support;

use serde_json::Value;
use sim_nodes_support::{Workdir, random_subnet};

const TOKEN: &str = "root@pam!talos=1b4e28ba-2fa1-11d2-883f-0016d3cca427";

fn spec(address: &str) -> String {
    format!(
        r#"address: {address}
port: 8006
token: "{TOKEN}"
auth_failure_delay_ms: 50
guests:
  - vmid: 101
    node: pve1
    name: talos-cp-1
    tags: "k8s;talos-lab"
    nets:
      0: "virtio=BC:24:11:5E:2A:01,bridge=vmbr0,firewall=1"
      2: "e1000=bc:24:11:7f:00:3c,bridge=vmbr1,tag=20"
  - vmid: 200
    node: pve1
    type: lxc
    name: dns
  - vmid: 105
    node: pve2
    status: unknown
"#
    )
}

async fn client(ca_file: &str) -> reqwest::Client {
    let pem = std::fs::read(ca_file).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_api_shapes_auth_and_errors() {
    let work = Workdir::new();
    let address = format!("{}.7", random_subnet());
    let service = work.start_service("proxmox", &spec(&address));
    let ready = service.ready_json();
    let url = ready["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("https://{address}:8006"));
    let http = client(ready["ca_file"].as_str().unwrap()).await;
    let auth = format!("PVEAPIToken={TOKEN}");

    let resp = http
        .get(format!("{url}/api2/json/cluster/resources?type=vm"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{body}");
    let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["qemu", "lxc", "qemu"]);
    assert_eq!(data[0]["id"], "qemu/101");
    assert_eq!(data[0]["vmid"], 101);
    assert_eq!(data[0]["template"], 0);
    assert_eq!(data[0]["tags"], "k8s;talos-lab");
    assert!(data[2].get("name").is_none(), "no stats → no name");
    assert_eq!(data[2]["status"], "unknown");

    let resp = http
        .get(format!("{url}/api2/json/nodes/pve1/qemu/101/config"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cfg: Value = resp.json().await.unwrap();
    assert_eq!(
        cfg["data"]["net0"],
        "virtio=BC:24:11:5E:2A:01,bridge=vmbr0,firewall=1"
    );
    assert_eq!(
        cfg["data"]["net2"],
        "e1000=bc:24:11:7f:00:3c,bridge=vmbr1,tag=20"
    );
    assert!(cfg["data"].get("net1").is_none());
    assert_eq!(cfg["data"]["cores"], 4);
    assert_eq!(cfg["data"]["memory"], "8192");
    assert_eq!(cfg["data"]["digest"].as_str().unwrap().len(), 40);

    // Wrong node for the VM → 500 with the message in the reason phrase and body.
    let resp = http
        .get(format!("{url}/api2/json/nodes/pve2/qemu/101/config"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let err = resp.error_for_status_ref().unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");

    // Bad token and no token → 401 with PVE's reason phrases, empty body.
    let resp = http
        .get(format!("{url}/api2/json/cluster/resources?type=vm"))
        .header("Authorization", "PVEAPIToken=root@pam!talos=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let err = resp.error_for_status_ref().unwrap_err().to_string();
    assert!(err.contains("401 Authentication failed!"), "{err}");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = http
        .get(format!("{url}/api2/json/version"))
        .send()
        .await
        .unwrap();
    let err = resp.error_for_status_ref().unwrap_err().to_string();
    assert!(err.contains("401 No ticket"), "{err}");

    // Unknown path → 501.
    let resp = http
        .get(format!("{url}/api2/json/foo"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);

    // A client that does not trust the cluster CA is refused.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(
        untrusting
            .get(format!("{url}/api2/json/version"))
            .send()
            .await
            .is_err()
    );

    assert!(service.stop().success());
}
