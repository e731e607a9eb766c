//! TEMPORARY: sample-config based smoke test while `gen config` is not available.
mod sim_nodes_support;
use base64::Engine as _;
use sim_nodes_support::*;

const CP: &str = include_str!("../../shared/reference/talos/samples/controlplane-contract-v1.11.yaml");
const WK: &str = include_str!("../../shared/reference/talos/samples/worker-contract-v1.11.yaml");

fn mk(work: &Workdir, subnet: &str, machines: &[Machine], endpoint: &str) -> ClusterFiles {
    let mut configs = std::collections::BTreeMap::new();
    for m in machines {
        let base = if m.controlplane { CP } else { WK };
        let net = format!("network:\n        hostname: {}\n        interfaces:\n            - interface: eth0\n              addresses:\n                  - {subnet}.{}/24\n", m.name, m.static_ip);
        let text = base
            .replacen("network: {}\n", &net, 1)
            .replace("https://base:6443", endpoint)
            .replace("    install:\n        wipe: false", "    install:\n        image: ghcr.io/siderolabs/installer:v1.11.5\n        wipe: false");
        configs.insert(m.name.to_string(), work.write(&format!("{}.yaml", m.name), &text));
    }
    let facts = talix::sim::node::config::ConfigFacts::extract(CP.as_bytes()).unwrap();
    let leaf = talix::sim::node::tls::issue_leaf(&facts.os_ca_cert, facts.os_ca_key.as_deref().unwrap(),
        talix::sim::node::tls::LeafUsage::Client { common_name: "admin", organizations: &["os:admin"] }).unwrap();
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let eps: Vec<String> = machines.iter().filter(|m| m.controlplane).map(|m| format!("{subnet}.{}", m.static_ip)).collect();
    let tc = format!("context: demo\ncontexts:\n    demo:\n        endpoints: [{}]\n        ca: {}\n        crt: {}\n        key: {}\n", eps.join(", "), b(&facts.os_ca_cert), b(&leaf.cert_pem), b(&leaf.key_pem));
    let talosconfig = work.write("talosconfig", &tc);
    ClusterFiles { subnet: subnet.to_string(), talosconfig, configs }
}

#[test]
fn scratch_lifecycle() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let machines = [
        Machine { name: "cp1", controlplane: true, dhcp: 11, static_ip: 101 },
        Machine { name: "cp2", controlplane: true, dhcp: 12, static_ip: 102 },
        Machine { name: "w1", controlplane: false, dhcp: 21, static_ip: 121 },
    ];
    let files = mk(&work, &subnet, &machines, &format!("https://{subnet}.101:6443"));
    let svc = work.start_service("serve", &serve_spec(&subnet, &machines, 100, &[]));
    let tc = files.talosconfig.display().to_string();
    let run = |args: &[&str]| { let o = work.talosctl(args); eprintln!("$ talosctl {}\n[{}]\n{}{}", args.join(" "), o.status, stdout(&o), stderr(&o)); o };
    run(&["get", "machinestatus", "--insecure", "-n", &files.dhcp(&machines[0]), "-o", "yaml"]);
    run(&["get", "links", "--insecure", "-n", &files.dhcp(&machines[0])]);
    run(&["get", "links", "--insecure", "-n", &files.dhcp(&machines[0]), "-o", "json"]);
    run(&["version", "--insecure", "-n", &files.dhcp(&machines[0])]);
    run(&["--talosconfig", &tc, "version", "-n", &files.dhcp(&machines[0]), "-e", &files.dhcp(&machines[0])]);
    for m in &machines {
        run(&["apply-config", "--insecure", "-n", &files.dhcp(m), "-f", &files.config(m)]);
    }
    run(&["get", "machinestatus", "--insecure", "-n", &files.dhcp(&machines[0])]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    eprintln!("{:?}", svc.addresses());
    run(&["--talosconfig", &tc, "version", "-n", &files.static_addr(&machines[0])]);
    run(&["version", "--insecure", "-n", &files.static_addr(&machines[0])]);
    run(&["--talosconfig", &tc, "bootstrap", "-n", &files.static_addr(&machines[0])]);
    run(&["--talosconfig", &tc, "bootstrap", "-n", &files.static_addr(&machines[0])]);
    run(&["--talosconfig", &tc, "bootstrap", "-n", &files.static_addr(&machines[2])]);
    run(&["--talosconfig", &tc, "etcd", "members", "-n", &files.static_addr(&machines[0])]);
    run(&["--talosconfig", &tc, "get", "members", "-n", &files.static_addr(&machines[0])]);
    run(&["--talosconfig", &tc, "health", "-n", &files.static_addr(&machines[0]), "--wait-timeout", "5s"]);
    run(&["--talosconfig", &tc, "kubeconfig", "-n", &files.static_addr(&machines[0]), "kc"]);
    let o = std::process::Command::new("kubectl").args(["--kubeconfig", &work.file("kc").display().to_string(), "get", "nodes", "-o", "wide"]).output().unwrap();
    eprintln!("kubectl: {}\n{}{}", o.status, stdout(&o), stderr(&o));
    svc.stop();
    panic!("show");
}
