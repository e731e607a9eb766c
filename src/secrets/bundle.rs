//! The Talos secrets bundle (`talosctl gen secrets` output): parsing and the same validation
//! `Bundle.Validate` does upstream, with its messages, so a broken bundle is caught before any
//! config is generated from it; and the bundle hash every derived step depends on.

use base64::Engine;
use serde::Deserialize;

use crate::digest::{Digest, domain};

use super::error::SecretsError;
use super::secret_bytes::SecretBytes;

/// The domain-separated blake3 of the plaintext bundle bytes: the cluster identity every
/// secret-derived step (configs, talosconfig, bootstrap) records.
pub fn bundle_hash(bundle: &SecretBytes) -> Digest {
    Digest::of_domain(domain::SECRETS_BUNDLE, bundle.expose_secret())
}

// Field names are the lower-cased Go field names upstream; unknown keys are ignored (upstream
// loads with a non-strict decoder). No Debug derives: these hold secrets.
#[derive(Deserialize, Default)]
struct RawBundle {
    cluster: Option<RawCluster>,
    secrets: Option<RawSecrets>,
    trustdinfo: Option<RawTrustd>,
    certs: Option<RawCerts>,
}

#[derive(Deserialize, Default)]
struct RawCluster {
    id: Option<String>,
    secret: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawSecrets {
    bootstraptoken: Option<String>,
    secretboxencryptionsecret: Option<String>,
    aescbcencryptionsecret: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawTrustd {
    token: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawCerts {
    etcd: Option<RawCertAndKey>,
    k8s: Option<RawCertAndKey>,
    k8saggregator: Option<RawCertAndKey>,
    k8sserviceaccount: Option<RawKeyOnly>,
    os: Option<RawCertAndKey>,
}

#[derive(Deserialize, Default)]
struct RawCertAndKey {
    crt: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawKeyOnly {
    key: Option<String>,
}

/// A CA of the bundle, decoded: certificate and key PEM (the key wiped on drop) and the
/// bundle's `cluster.id`, for the client certificates talix derives (see `crate::clientcert`).
pub struct BundleCa {
    pub crt_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    pub cluster_id: String,
}

/// `certs.<which>` (`os`, `k8s`) of a bundle. Errors name the field, never a value.
pub fn bundle_ca(bundle: &SecretBytes, which: &str) -> Result<BundleCa, String> {
    let raw: RawBundle = serde_saphyr::from_slice(bundle.expose_secret())
        .map_err(|_| "the secrets bundle does not parse".to_string())?;
    let certs = raw.certs.as_ref().ok_or("certs is required")?;
    let pair = match which {
        "os" => certs.os.as_ref(),
        "k8s" => certs.k8s.as_ref(),
        _ => None,
    }
    .ok_or_else(|| format!("certs.{which} is required"))?;
    let decode = |field: &str, v: Option<&String>| -> Result<zeroize::Zeroizing<String>, String> {
        let b64: String = v
            .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect())
            .unwrap_or_default();
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| format!("certs.{which}.{field} is not valid base64"))?,
        );
        String::from_utf8(bytes.to_vec())
            .map(zeroize::Zeroizing::new)
            .map_err(|_| format!("certs.{which}.{field} is not PEM text"))
    };
    let crt = decode("crt", pair.crt.as_ref())?;
    let key = decode("key", pair.key.as_ref())?;
    let cluster_id = raw
        .cluster
        .as_ref()
        .and_then(|c| c.id.clone())
        .filter(|id| !id.is_empty())
        .ok_or("cluster.id is required")?;
    Ok(BundleCa {
        crt_pem: crt.to_string(),
        key_pem: key,
        cluster_id,
    })
}

/// Parse and validate a bundle. `origin` names it in errors (a path, or "edited bundle").
///
/// Problems are reported with the upstream wording (`cluster.id is required`, `one of
/// [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is required`,
/// `certs.os is invalid: …`), all of them at once, in upstream order. Never quotes values.
pub fn validate_bundle(bundle: &SecretBytes, origin: &str) -> Result<(), SecretsError> {
    let raw: RawBundle =
        serde_saphyr::from_slice(bundle.expose_secret()).map_err(|e| SecretsError::BundleYaml {
            origin: origin.to_string(),
            location: e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "no position known".into()),
        })?;
    let problems = problems_of(&raw);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SecretsError::BundleInvalid {
            origin: origin.to_string(),
            problems,
        })
    }
}

fn present(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

fn problems_of(raw: &RawBundle) -> Vec<String> {
    let mut problems = Vec::new();
    match &raw.cluster {
        None => problems.push("cluster is required".to_string()),
        Some(cluster) => {
            if !present(&cluster.id) {
                problems.push("cluster.id is required".into());
            }
            if !present(&cluster.secret) {
                problems.push("cluster.secret is required".into());
            }
        }
    }
    const ONE_OF: &str = "[secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret]";
    match &raw.secrets {
        None => problems.push("secrets is required".into()),
        Some(secrets) => {
            if !present(&secrets.bootstraptoken) {
                problems.push("secrets.bootstraptoken is required".into());
            }
            let secretbox = present(&secrets.secretboxencryptionsecret);
            let aescbc = present(&secrets.aescbcencryptionsecret);
            if !secretbox && !aescbc {
                problems.push(format!("one of {ONE_OF} is required"));
            }
            if secretbox && aescbc {
                problems.push(format!("only one of {ONE_OF} is allowed"));
            }
        }
    }
    match &raw.trustdinfo {
        None => problems.push("trustdinfo is required".into()),
        Some(trustd) if !present(&trustd.token) => {
            problems.push("trustdinfo.token is required".into())
        }
        Some(_) => {}
    }
    match &raw.certs {
        None => problems.push("certs is required".into()),
        Some(certs) => {
            let pairs = [
                ("etcd", &certs.etcd),
                ("k8s", &certs.k8s),
                ("k8saggregator", &certs.k8saggregator),
            ];
            for (name, pair) in pairs {
                check_pair(name, pair.as_ref(), &mut problems);
            }
            match &certs.k8sserviceaccount {
                None => problems.push("certs.k8sserviceaccount is required".into()),
                Some(sa) => {
                    if let Err(e) = check_key(sa.key.as_deref()) {
                        problems.push(format!("certs.k8sserviceaccount.key is invalid: {e}"));
                    }
                }
            }
            check_pair("os", certs.os.as_ref(), &mut problems);
        }
    }
    problems
}

fn check_pair(name: &str, pair: Option<&RawCertAndKey>, problems: &mut Vec<String>) {
    let Some(pair) = pair else {
        problems.push(format!("certs.{name} is required"));
        return;
    };
    let result = check_cert(pair.crt.as_deref()).and_then(|()| check_key(pair.key.as_deref()));
    if let Err(e) = result {
        problems.push(format!("certs.{name} is invalid: {e}"));
    }
}

fn check_cert(b64: Option<&str>) -> Result<(), String> {
    let label = pem_label(b64)?;
    if label != "CERTIFICATE" {
        return Err(format!("unsupported certificate type: {label:?}"));
    }
    Ok(())
}

fn check_key(b64: Option<&str>) -> Result<(), String> {
    let label = pem_label(b64)?;
    match label.as_str() {
        "EC PRIVATE KEY" | "ED25519 PRIVATE KEY" | "RSA PRIVATE KEY" | "PRIVATE KEY" => Ok(()),
        other => Err(format!("unsupported key type: {other:?}")),
    }
}

/// Decode the base64 field, then the first PEM block; return its label.
fn pem_label(b64: Option<&str>) -> Result<String, String> {
    let b64: String = b64
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "not valid base64".to_string())?;
    let pem = String::from_utf8(pem).map_err(|_| "failed to parse PEM block".to_string())?;
    parse_pem_block(&pem).ok_or_else(|| "failed to parse PEM block".to_string())
}

fn parse_pem_block(pem: &str) -> Option<String> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end = body_and_end.find(&end_marker)?;
    let body: String = body_and_end[..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    Some(label.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("testdata/secrets.yaml");

    fn check(text: &str) -> Result<(), String> {
        validate_bundle(&SecretBytes::new(text.as_bytes().to_vec()), "b.yaml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_sample_validates() {
        check(SAMPLE).unwrap();
    }

    #[test]
    fn missing_cluster_id() {
        let text = SAMPLE.replace("    id: 0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w=\n", "");
        assert_eq!(
            check(&text).unwrap_err(),
            "b.yaml: invalid Talos secrets bundle: cluster.id is required"
        );
    }

    #[test]
    fn missing_encryption_secret_and_trustd() {
        let text = SAMPLE
            .replace(
                "    secretboxencryptionsecret: 45yd2Ke+sytiICojDf8aibTfgt99nzJmO53cjDqrCto=\n",
                "",
            )
            .replace("trustdinfo:\n    token: d8cwfa.eyvpi0xwxyarbfid\n", "");
        assert_eq!(
            check(&text).unwrap_err(),
            "b.yaml: invalid Talos secrets bundle: one of [secrets.secretboxencryptionsecret, \
             secrets.aescbcencryptionsecret] is required; trustdinfo is required"
        );
    }

    #[test]
    fn both_encryption_secrets() {
        let text = SAMPLE.replace(
            "    secretboxencryptionsecret:",
            "    aescbcencryptionsecret: QUJD\n    secretboxencryptionsecret:",
        );
        assert_eq!(
            check(&text).unwrap_err(),
            "b.yaml: invalid Talos secrets bundle: only one of [secrets.secretboxencryptionsecret, \
             secrets.aescbcencryptionsecret] is allowed"
        );
    }

    #[test]
    fn cert_problems_use_upstream_wording() {
        // os.key swapped for the os certificate: a PEM block of the wrong type.
        let os_crt = SAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("    os:"))
            .nth(1)
            .unwrap()
            .trim()
            .trim_start_matches("crt: ")
            .to_string();
        let mut lines: Vec<String> = SAMPLE.lines().map(String::from).collect();
        let os_key_line = lines.len() - 1;
        lines[os_key_line] = format!("        key: {os_crt}");
        // etcd.crt: valid base64 of text that is no PEM.
        let etcd = lines.iter().position(|l| l == "    etcd:").unwrap();
        lines[etcd + 1] = "        crt: bm90LXBlbQ==".to_string();
        let text = lines
            .join("\n")
            .replace("    k8saggregator:", "    k8saggregatorx:");
        assert_eq!(
            check(&text).unwrap_err(),
            "b.yaml: invalid Talos secrets bundle: certs.etcd is invalid: failed to parse PEM block; \
             certs.k8saggregator is required; certs.os is invalid: unsupported key type: \"CERTIFICATE\""
        );
    }

    #[test]
    fn yaml_errors_do_not_quote_the_text() {
        let err = check("cluster: [unclosed-secret-value\n").unwrap_err();
        assert!(err.starts_with("b.yaml: not valid YAML ("), "{err}");
        assert!(!err.contains("unclosed-secret"), "{err}");
    }

    #[test]
    fn hash_is_domain_separated() {
        let b = SecretBytes::new(SAMPLE.as_bytes().to_vec());
        assert_eq!(
            bundle_hash(&b),
            Digest::of_domain(domain::SECRETS_BUNDLE, SAMPLE.as_bytes())
        );
        assert_ne!(
            bundle_hash(&b),
            Digest::of_domain(domain::OBJECT, SAMPLE.as_bytes())
        );
    }
}
