//! Real key material for the simulator: the Talos secrets bundle (`gen secrets`), its
//! validation, and certificates issued from its CAs (talosconfig client certs, node server
//! certs, kubeconfig admin certs). Everything is generated with rcgen, nothing is faked.

use std::fmt;
use std::io::Read as _;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::machineconfig::contract::Contract;
use crate::machineconfig::yaml::{self, Yaml};

/// Failures of key/certificate handling. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to read random bytes: {0}")]
    Random(#[from] std::io::Error),
    #[error("failed to parse PEM: {0}")]
    Pem(String),
    #[error("unsupported private key type {0:?}")]
    KeyType(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("failed to parse certificate: {0}")]
    Certificate(String),
    #[error("private key does not match the certificate")]
    KeyMismatch,
}

/// A certificate and its key, each the standard base64 of PEM text (the bundle encoding).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CertAndKey {
    pub crt: String,
    pub key: String,
}

/// A key alone (the service-account key), base64 of PEM.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct KeyOnly {
    pub key: String,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClusterIdentity {
    pub id: String,
    pub secret: String,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BootstrapSecrets {
    pub bootstraptoken: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secretboxencryptionsecret: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aescbcencryptionsecret: String,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TrustdInfo {
    pub token: String,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BundleCerts {
    pub etcd: Option<CertAndKey>,
    pub k8s: Option<CertAndKey>,
    pub k8saggregator: Option<CertAndKey>,
    pub k8sserviceaccount: Option<KeyOnly>,
    pub os: Option<CertAndKey>,
}

/// The Talos secrets bundle (formats.md §1). `Debug` shows no secret value.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SecretsBundle {
    pub cluster: ClusterIdentity,
    pub secrets: BootstrapSecrets,
    pub trustdinfo: TrustdInfo,
    pub certs: BundleCerts,
}

impl fmt::Debug for SecretsBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsBundle")
            .field("cluster.id", &"<redacted>")
            .field("has_etcd", &self.certs.etcd.is_some())
            .field("has_k8s", &self.certs.k8s.is_some())
            .field("has_os", &self.certs.os.is_some())
            .finish_non_exhaustive()
    }
}

/// Bundle problems found by [`SecretsBundle::validate`] (upstream `Bundle.Validate` texts).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("{0} is required")]
    Required(&'static str),
    #[error(
        "one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is required"
    )]
    NoEncryptionSecret,
    #[error(
        "only one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is allowed"
    )]
    TwoEncryptionSecrets,
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Errors loading a bundle from bytes.
#[derive(Debug, thiserror::Error)]
pub enum BundleLoadError {
    #[error("{0}")]
    Yaml(String),
}

/// Reads a secrets bundle (non-strict: unknown keys are ignored, as upstream).
pub fn parse(bytes: &[u8]) -> Result<SecretsBundle, BundleLoadError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| BundleLoadError::Yaml("secrets bundle is not valid UTF-8".to_string()))?;
    if text.trim().is_empty() {
        return Ok(SecretsBundle::default());
    }
    serde_saphyr::from_str::<SecretsBundle>(text).map_err(|e| {
        BundleLoadError::Yaml(e.to_string().lines().next().unwrap_or_default().to_string())
    })
}

impl SecretsBundle {
    /// Encodes the bundle exactly as `talosctl gen secrets` writes it (4-space YAML, reference
    /// key order).
    pub fn to_yaml(&self) -> String {
        let pair = |c: &CertAndKey| {
            Yaml::from_pairs([("crt", Yaml::str(&c.crt)), ("key", Yaml::str(&c.key))])
        };
        let mut secrets = vec![("bootstraptoken", Yaml::str(&self.secrets.bootstraptoken))];
        if !self.secrets.secretboxencryptionsecret.is_empty() {
            secrets.push((
                "secretboxencryptionsecret",
                Yaml::str(&self.secrets.secretboxencryptionsecret),
            ));
        }
        if !self.secrets.aescbcencryptionsecret.is_empty() {
            secrets.push((
                "aescbcencryptionsecret",
                Yaml::str(&self.secrets.aescbcencryptionsecret),
            ));
        }
        let mut certs = Vec::new();
        if let Some(c) = &self.certs.etcd {
            certs.push(("etcd", pair(c)));
        }
        if let Some(c) = &self.certs.k8s {
            certs.push(("k8s", pair(c)));
        }
        if let Some(c) = &self.certs.k8saggregator {
            certs.push(("k8saggregator", pair(c)));
        }
        if let Some(k) = &self.certs.k8sserviceaccount {
            certs.push((
                "k8sserviceaccount",
                Yaml::from_pairs([("key", Yaml::str(&k.key))]),
            ));
        }
        if let Some(c) = &self.certs.os {
            certs.push(("os", pair(c)));
        }
        let doc = Yaml::from_pairs([
            (
                "cluster",
                Yaml::from_pairs([
                    ("id", Yaml::str(&self.cluster.id)),
                    ("secret", Yaml::str(&self.cluster.secret)),
                ]),
            ),
            ("secrets", Yaml::from_pairs(secrets)),
            (
                "trustdinfo",
                Yaml::from_pairs([("token", Yaml::str(&self.trustdinfo.token))]),
            ),
            ("certs", Yaml::from_pairs(certs)),
        ]);
        yaml::emit(&doc)
    }

    /// Checks the bundle as `gen config --with-secrets` does (v1.11+). Returns every problem.
    pub fn validate(&self) -> Vec<BundleError> {
        let mut errors = Vec::new();
        let required = [
            ("cluster.id", &self.cluster.id),
            ("cluster.secret", &self.cluster.secret),
            ("secrets.bootstraptoken", &self.secrets.bootstraptoken),
        ];
        for (name, value) in required {
            if value.is_empty() {
                errors.push(BundleError::Required(name));
            }
        }
        match (
            self.secrets.secretboxencryptionsecret.is_empty(),
            self.secrets.aescbcencryptionsecret.is_empty(),
        ) {
            (true, true) => errors.push(BundleError::NoEncryptionSecret),
            (false, false) => errors.push(BundleError::TwoEncryptionSecrets),
            _ => {}
        }
        if self.trustdinfo.token.is_empty() {
            errors.push(BundleError::Required("trustdinfo.token"));
        }
        let cas = [
            ("certs.etcd", &self.certs.etcd),
            ("certs.k8s", &self.certs.k8s),
            ("certs.k8saggregator", &self.certs.k8saggregator),
            ("certs.os", &self.certs.os),
        ];
        for (field, ca) in cas {
            match ca {
                None => errors.push(BundleError::Required(field)),
                Some(ca) => {
                    if let Err(reason) = check_ca_pair(ca) {
                        errors.push(BundleError::Invalid { field, reason });
                    }
                }
            }
        }
        match &self.certs.k8sserviceaccount {
            None => errors.push(BundleError::Required("certs.k8sserviceaccount")),
            Some(sa) => {
                if let Err(e) = decode_b64_text(&sa.key).and_then(|pem| load_key_pair(&pem)) {
                    errors.push(BundleError::Invalid {
                        field: "certs.k8sserviceaccount.key",
                        reason: e.to_string(),
                    });
                }
            }
        }
        errors
    }

    /// PEM of a CA certificate and key from the bundle (`"os"`, `"k8s"`, `"etcd"`,
    /// `"k8saggregator"`); empty strings when absent or undecodable.
    pub fn ca_pem(&self, which: &str) -> (String, String) {
        let ca = match which {
            "os" => &self.certs.os,
            "k8s" => &self.certs.k8s,
            "etcd" => &self.certs.etcd,
            "k8saggregator" => &self.certs.k8saggregator,
            _ => &None,
        };
        ca.as_ref()
            .map(|c| {
                (
                    decode_b64_text(&c.crt).unwrap_or_default(),
                    decode_b64_text(&c.key).unwrap_or_default(),
                )
            })
            .unwrap_or_default()
    }
}

fn check_ca_pair(ca: &CertAndKey) -> Result<(), String> {
    if ca.crt.is_empty() {
        return Err("certificate is empty".to_string());
    }
    if ca.key.is_empty() {
        return Err("key is empty".to_string());
    }
    let crt = decode_b64_text(&ca.crt).map_err(|e| e.to_string())?;
    let key = decode_b64_text(&ca.key).map_err(|e| e.to_string())?;
    let spki = certificate_spki(&crt).map_err(|e| e.to_string())?;
    let key_pair = load_key_pair(&key).map_err(|e| e.to_string())?;
    if key_pair.subject_public_key_info() != spki {
        return Err(PkiError::KeyMismatch.to_string());
    }
    Ok(())
}

/// Standard base64 of a text (the bundle and v1alpha1 byte-field encoding).
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Decodes a base64 field to text.
pub fn decode_b64_text(value: &str) -> Result<String, PkiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| PkiError::Pem(format!("invalid base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| PkiError::Pem("PEM is not UTF-8".to_string()))
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, PkiError> {
    let mut buf = vec![0u8; n];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A kubeadm-format token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn kubeadm_token() -> Result<String, PkiError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(23);
    while out.len() < 23 {
        for byte in random_bytes(64)? {
            // Rejection sampling keeps the distribution uniform (252 = 7 * 36).
            if byte < 252 && out.len() < 23 {
                if out.len() == 6 {
                    out.push('.');
                }
                out.push(ALPHABET[usize::from(byte % 36)] as char);
            }
        }
    }
    Ok(out)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = random_bytes(16)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Kinds of CA keys the bundle uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ed25519,
    EcdsaP256,
    Rsa4096,
}

/// A generated key pair plus its PEM in Talos' encoding (`ED25519 PRIVATE KEY`,
/// `EC PRIVATE KEY` SEC1, `RSA PRIVATE KEY` PKCS#1).
struct GeneratedKey {
    pair: KeyPair,
    pem: String,
}

fn generate_key(kind: KeyKind) -> Result<GeneratedKey, PkiError> {
    match kind {
        KeyKind::Ed25519 => {
            let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            let seed = der::ed25519_seed(pair.serialized_der())
                .ok_or_else(|| PkiError::KeyType("ed25519 PKCS#8 without seed".to_string()))?;
            let v1 = der::ed25519_pkcs8_v1(&seed);
            Ok(GeneratedKey {
                pem: pem_encode("ED25519 PRIVATE KEY", &v1),
                pair,
            })
        }
        KeyKind::EcdsaP256 => {
            let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let sec1 = der::pkcs8_inner_key(pair.serialized_der())
                .and_then(|inner| der::sec1_with_p256_params(&inner))
                .ok_or_else(|| PkiError::KeyType("malformed EC PKCS#8".to_string()))?;
            Ok(GeneratedKey {
                pem: pem_encode("EC PRIVATE KEY", &sec1),
                pair,
            })
        }
        KeyKind::Rsa4096 => {
            let pair =
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?;
            let pkcs1 = der::pkcs8_inner_key(pair.serialized_der())
                .ok_or_else(|| PkiError::KeyType("malformed RSA PKCS#8".to_string()))?;
            Ok(GeneratedKey {
                pem: pem_encode("RSA PRIVATE KEY", &pkcs1),
                pair,
            })
        }
    }
}

/// A distinguished-name value encoded as Go's encoding/asn1 does: PrintableString when every
/// character allows it, UTF8String otherwise.
fn dn_value(text: &str) -> rcgen::DnValue {
    match rcgen::string::PrintableString::try_from(text) {
        Ok(printable) => rcgen::DnValue::PrintableString(printable),
        Err(_) => rcgen::DnValue::Utf8String(text.to_string()),
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(text: &str) -> Result<(String, Vec<u8>), PkiError> {
    let parsed = pem_block(text)?;
    Ok(parsed)
}

fn pem_block(text: &str) -> Result<(String, Vec<u8>), PkiError> {
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| PkiError::Pem("no PEM block found".to_string()))?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| PkiError::Pem("malformed PEM header".to_string()))?;
    let label = rest[..label_end].to_string();
    let after_header = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = after_header
        .find(&end_marker)
        .ok_or_else(|| PkiError::Pem(format!("missing END line for {label}")))?;
    let body: String = after_header[..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| PkiError::Pem(format!("invalid PEM body: {e}")))?;
    Ok((label, der))
}

/// Loads a private key PEM in any form Talos writes (`ED25519 PRIVATE KEY`, `EC PRIVATE KEY`,
/// `RSA PRIVATE KEY`, `PRIVATE KEY`).
pub fn load_key_pair(pem: &str) -> Result<KeyPair, PkiError> {
    let (label, der) = pem_decode(pem)?;
    let (key, alg): (PrivateKeyDer<'static>, &'static SignatureAlgorithm) = match label.as_str() {
        "ED25519 PRIVATE KEY" => (
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            &rcgen::PKCS_ED25519,
        ),
        "EC PRIVATE KEY" => (
            PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        "RSA PRIVATE KEY" => (
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            &rcgen::PKCS_RSA_SHA256,
        ),
        "PRIVATE KEY" => {
            return KeyPair::try_from(der.as_slice()).map_err(PkiError::from);
        }
        other => return Err(PkiError::KeyType(other.to_string())),
    };
    Ok(KeyPair::from_der_and_sign_algo(&key, alg)?)
}

/// Re-encodes any supported private key PEM as PKCS#8 `PRIVATE KEY` (what rustls loads).
pub fn key_pem_as_pkcs8(pem: &str) -> Result<String, PkiError> {
    let pair = load_key_pair(pem)?;
    Ok(pair.serialize_pem())
}

fn certificate_spki(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (label, der) = pem_decode(pem)?;
    if label != "CERTIFICATE" {
        return Err(PkiError::Certificate(format!(
            "unexpected PEM type {label:?}"
        )));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

fn ca_params(
    organization: Option<&str>,
    common_name: Option<&str>,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, dn_value(org));
    }
    if let Some(cn) = common_name {
        dn.push(DnType::CommonName, dn_value(cn));
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + Duration::hours(87_600);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn generate_ca(
    kind: KeyKind,
    organization: Option<&str>,
    common_name: Option<&str>,
) -> Result<CertAndKey, PkiError> {
    let key = generate_key(kind)?;
    let params = ca_params(organization, common_name)?;
    let cert = params.self_signed(&key.pair)?;
    Ok(CertAndKey {
        crt: b64(&cert.pem()),
        key: b64(&key.pem),
    })
}

fn b64_random(n: usize, url_safe: bool) -> Result<String, PkiError> {
    let bytes = random_bytes(n)?;
    Ok(if url_safe {
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    })
}

/// Generates a fresh secrets bundle for a contract (formats.md §1): secretbox secret for
/// contracts newer than v1.2 (else AES-CBC), RSA-4096 service-account key for contracts newer
/// than v1.6 (else ECDSA).
pub fn generate(contract: Contract) -> Result<SecretsBundle, PkiError> {
    let encryption = b64_random(32, false)?;
    let (secretbox, aescbc) = if contract.greater_than(1, 2) {
        (encryption, String::new())
    } else {
        (String::new(), encryption)
    };
    let sa_kind = if contract.greater_than(1, 6) {
        KeyKind::Rsa4096
    } else {
        KeyKind::EcdsaP256
    };
    Ok(SecretsBundle {
        cluster: ClusterIdentity {
            id: b64_random(32, true)?,
            secret: b64_random(32, false)?,
        },
        secrets: BootstrapSecrets {
            bootstraptoken: kubeadm_token()?,
            secretboxencryptionsecret: secretbox,
            aescbcencryptionsecret: aescbc,
        },
        trustdinfo: TrustdInfo {
            token: kubeadm_token()?,
        },
        certs: BundleCerts {
            etcd: Some(generate_ca(KeyKind::EcdsaP256, Some("etcd"), None)?),
            k8s: Some(generate_ca(KeyKind::EcdsaP256, Some("kubernetes"), None)?),
            k8saggregator: Some(generate_ca(KeyKind::EcdsaP256, None, Some("front-proxy"))?),
            k8sserviceaccount: Some(KeyOnly {
                key: b64(&generate_key(sa_kind)?.pem),
            }),
            os: Some(generate_ca(KeyKind::Ed25519, Some("talos"), None)?),
        },
    })
}

fn leaf_key_for(ca_key: &KeyPair) -> Result<GeneratedKey, PkiError> {
    // Leaf keys follow the CA family: Ed25519 under the Talos CA, P-256 elsewhere.
    if ca_key.algorithm() == &rcgen::PKCS_ED25519 {
        generate_key(KeyKind::Ed25519)
    } else {
        generate_key(KeyKind::EcdsaP256)
    }
}

fn sign_leaf(
    ca_crt_pem: &str,
    ca_key_pem: &str,
    mut params: CertificateParams,
    validity: Duration,
) -> Result<(String, String), PkiError> {
    let ca_key = load_key_pair(ca_key_pem)?;
    let leaf = leaf_key_for(&ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt_pem, ca_key)?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&leaf.pair, &issuer)?;
    Ok((cert.pem(), leaf.pem))
}

/// Issues a TLS server certificate for `sans` (IP addresses become IP SANs, anything else DNS
/// names) signed by the given CA. Returns `(cert_pem, key_pem)`; the key is in the CA's family
/// (`ED25519 PRIVATE KEY` under the Talos CA, `EC PRIVATE KEY` otherwise — see
/// [`key_pem_as_pkcs8`] for rustls).
pub fn issue_server_cert(
    ca_crt_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = sans.first() {
        dn.push(DnType::CommonName, dn_value(first.as_str()));
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(PkiError::from),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign_leaf(ca_crt_pem, ca_key_pem, params, Duration::days(365))
}

/// Issues a TLS client certificate (`CN=common_name`, `O=organization`, e.g. `O=os:admin` for
/// talosconfig, `O=system:masters` for a kubeconfig admin) valid for one year.
pub fn issue_client_cert(
    ca_crt_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    organization: &str,
) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if !organization.is_empty() {
        dn.push(DnType::OrganizationName, dn_value(organization));
    }
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, dn_value(common_name));
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(ca_crt_pem, ca_key_pem, params, Duration::days(365))
}

/// Facts about a certificate that callers check (role, expiry) without an x509 dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    pub organizations: Vec<String>,
    pub common_name: Option<String>,
    pub not_after_unix: i64,
    pub serial_hex: String,
}

/// Reads subject and validity of a PEM certificate.
pub fn certificate_facts(pem: &str) -> Result<CertificateFacts, PkiError> {
    let (_, der) = pem_decode(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let subject = cert.subject();
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok().map(str::to_string));
    Ok(CertificateFacts {
        organizations,
        common_name,
        not_after_unix: cert.validity().not_after.timestamp(),
        serial_hex: cert.tbs_certificate.raw_serial_as_string(),
    })
}

/// Minimal DER surgery to produce the key encodings Go's crypto/x509 writes.
mod der {
    /// Splits one TLV at the start of `data`: (tag, content, rest).
    pub fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *data.first()?;
        let first_len = *data.get(1)?;
        let (len, header) = if first_len < 0x80 {
            (usize::from(first_len), 2)
        } else {
            let n = usize::from(first_len & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*data.get(2 + i)?);
            }
            (len, 2 + n)
        };
        let content = data.get(header..header + len)?;
        Some((tag, content, &data[header + len..]))
    }

    pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// The privateKey OCTET STRING content of a PKCS#8 PrivateKeyInfo.
    pub fn pkcs8_inner_key(pkcs8: &[u8]) -> Option<Vec<u8>> {
        let (0x30, body, _) = tlv(pkcs8)? else {
            return None;
        };
        let (0x02, _, rest) = tlv(body)? else {
            return None;
        };
        let (0x30, _, rest) = tlv(rest)? else {
            return None;
        };
        let (0x04, key, _) = tlv(rest)? else {
            return None;
        };
        Some(key.to_vec())
    }

    /// The 32-byte seed of an Ed25519 PKCS#8 (v1 or v2).
    pub fn ed25519_seed(pkcs8: &[u8]) -> Option<[u8; 32]> {
        let inner = pkcs8_inner_key(pkcs8)?;
        let (0x04, seed, _) = tlv(&inner)? else {
            return None;
        };
        seed.try_into().ok()
    }

    /// PKCS#8 v1 of an Ed25519 seed, as Go's `MarshalPKCS8PrivateKey` writes it.
    pub fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
        body.extend(encode(0x04, &encode(0x04, seed)));
        encode(0x30, &body)
    }

    const P256_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    /// An ECPrivateKey (SEC1) with the `[0]` curve parameters present, as Go writes it.
    pub fn sec1_with_p256_params(sec1: &[u8]) -> Option<Vec<u8>> {
        let (0x30, body, _) = tlv(sec1)? else {
            return None;
        };
        let mut fields = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest)?;
            fields.push((tag, content.to_vec()));
            rest = next;
        }
        if !fields.iter().any(|(t, _)| *t == 0xa0) {
            let params = (0xa0, encode(0x06, P256_OID));
            let at = fields
                .iter()
                .position(|(t, _)| *t == 0xa1)
                .unwrap_or(fields.len());
            fields.insert(at, params);
        }
        let mut out = Vec::new();
        for (tag, content) in fields {
            out.extend(encode(tag, &content));
        }
        Some(encode(0x30, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("machineconfig/testdata/secrets.yaml");

    #[test]
    fn sample_bundle_parses_validates_and_reencodes() {
        let bundle = parse(SAMPLE.as_bytes()).unwrap();
        // The sample's service account key is ECDSA (old contract); both are accepted.
        assert_eq!(bundle.validate(), Vec::<BundleError>::new());
        let without_comment: String = SAMPLE.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert_eq!(bundle.to_yaml(), without_comment);
    }

    #[test]
    fn validation_reports_missing_and_invalid_fields() {
        let mut bundle = parse(SAMPLE.as_bytes()).unwrap();
        bundle.cluster.id.clear();
        bundle.secrets.aescbcencryptionsecret = "x".to_string();
        bundle.certs.os = None;
        if let Some(k8s) = bundle.certs.k8s.as_mut() {
            k8s.key = bundle.certs.etcd.as_ref().unwrap().key.clone();
        }
        let messages: Vec<String> = bundle.validate().iter().map(|e| e.to_string()).collect();
        assert!(messages.contains(&"cluster.id is required".to_string()));
        assert!(messages.contains(
            &"only one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is allowed"
                .to_string()
        ));
        assert!(messages.contains(&"certs.os is required".to_string()));
        assert!(
            messages.contains(
                &"certs.k8s is invalid: private key does not match the certificate".to_string()
            ),
            "{messages:?}"
        );
        let empty = SecretsBundle::default();
        assert!(empty.validate().contains(&BundleError::NoEncryptionSecret));
    }

    #[test]
    fn generated_bundle_has_reference_key_types_and_round_trips() {
        let bundle = generate(Contract::Current).unwrap();
        assert_eq!(bundle.validate(), Vec::<BundleError>::new());
        let (os_crt, os_key) = bundle.ca_pem("os");
        assert!(os_key.starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
        assert!(os_crt.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            bundle
                .ca_pem("k8s")
                .1
                .starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        let sa = decode_b64_text(&bundle.certs.k8sserviceaccount.as_ref().unwrap().key).unwrap();
        assert!(sa.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let token = &bundle.secrets.bootstraptoken;
        assert_eq!(token.len(), 23);
        assert_eq!(&token[6..7], ".");
        assert_eq!(bundle.cluster.id.len(), 44);
        let reparsed = parse(bundle.to_yaml().as_bytes()).unwrap();
        assert!(reparsed == bundle);
        assert!(!format!("{bundle:?}").contains(&bundle.cluster.secret));
    }

    fn assert_chains(leaf_pem: &str, ca_pem: &str) {
        let (_, leaf_der) = pem_decode(leaf_pem).unwrap();
        let (_, ca_der) = pem_decode(ca_pem).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(
            leaf.issuer().as_raw(),
            ca.subject().as_raw(),
            "issuer DN bytes"
        );
        leaf.verify_signature(Some(ca.public_key()))
            .expect("leaf signed by CA");
    }

    #[test]
    fn issued_certs_chain_to_go_and_rcgen_made_cas() {
        let sample = parse(SAMPLE.as_bytes()).unwrap();
        let fresh = generate(Contract::Current).unwrap();
        for bundle in [&sample, &fresh] {
            for which in ["os", "k8s", "etcd"] {
                let (ca_crt, ca_key) = bundle.ca_pem(which);
                let (server, _) =
                    issue_server_cert(&ca_crt, &ca_key, &["127.0.0.1".to_string()]).unwrap();
                assert_chains(&server, &ca_crt);
                let (client, _) =
                    issue_client_cert(&ca_crt, &ca_key, "admin", "system:masters").unwrap();
                assert_chains(&client, &ca_crt);
            }
        }
    }

    #[test]
    fn old_contracts_get_aescbc_and_ecdsa_service_account_keys() {
        let v12 = generate(Contract::parse("v1.2").unwrap()).unwrap();
        assert!(v12.secrets.secretboxencryptionsecret.is_empty());
        assert_eq!(v12.secrets.aescbcencryptionsecret.len(), 44);
        let sa = decode_b64_text(&v12.certs.k8sserviceaccount.as_ref().unwrap().key).unwrap();
        assert!(sa.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(v12.validate(), Vec::<BundleError>::new());
        assert!(v12.to_yaml().contains("    aescbcencryptionsecret: "));
    }

    #[test]
    fn issues_client_and_server_certs_from_bundle_cas() {
        let bundle = parse(SAMPLE.as_bytes()).unwrap();
        let (os_crt, os_key) = bundle.ca_pem("os");
        let (crt, key) = issue_client_cert(&os_crt, &os_key, "", "os:admin").unwrap();
        let facts = certificate_facts(&crt).unwrap();
        assert_eq!(facts.organizations, ["os:admin"]);
        assert!(key.contains("ED25519 PRIVATE KEY"));
        assert!(
            key_pem_as_pkcs8(&key)
                .unwrap()
                .contains("BEGIN PRIVATE KEY")
        );
        let (k8s_crt, k8s_key) = bundle.ca_pem("k8s");
        let (srv, srv_key) = issue_server_cert(
            &k8s_crt,
            &k8s_key,
            &["127.0.0.1".to_string(), "base".to_string()],
        )
        .unwrap();
        assert!(srv.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(srv_key.contains("EC PRIVATE KEY"));
        let (_, again) = issue_client_cert(&os_crt, &os_key, "", "os:admin").unwrap();
        assert_ne!(again, key);
    }
}
