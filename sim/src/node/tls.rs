//! TLS material for the simulated nodes and their clients: maintenance self-signed certificates,
//! leaf certificates issued from the cluster CAs found in a machine config, and rustls configs.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// Failures while building certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no PEM block labelled {0:?} found")]
    MissingPem(&'static str),
    #[error("invalid PEM data: {0}")]
    BadPem(String),
}

/// The crypto provider used everywhere in the simulator (explicit, so no process default is needed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Decodes every PEM block of `text` into `(label, der)`.
pub fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, TlsError> {
    let mut blocks = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = Some(rest.trim_end_matches('-').to_string());
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take() {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(body.as_bytes())
                    .map_err(|e| TlsError::BadPem(format!("{l}: {e}")))?;
                blocks.push((l, der));
            }
        } else if label.is_some() {
            body.push_str(line);
        }
    }
    Ok(blocks)
}

/// DER certificates found in `pem`.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = pem_blocks(pem)?
        .into_iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::MissingPem("CERTIFICATE"));
    }
    Ok(certs)
}

/// The private key of `pem`, whatever its label (PKCS#8, SEC1, PKCS#1 or Talos' `ED25519 PRIVATE KEY`).
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (label, der) = pem_blocks(pem)?
        .into_iter()
        .find(|(l, _)| l.ends_with("PRIVATE KEY"))
        .ok_or(TlsError::MissingPem("PRIVATE KEY"))?;
    Ok(match label.as_str() {
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(der.into()),
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(der.into()),
        _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
    })
}

/// A freshly issued leaf certificate and its key, both PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
pub enum LeafUsage<'a> {
    /// Server certificate valid for these IPs and DNS names.
    Server {
        ips: &'a [IpAddr],
        dns: &'a [String],
    },
    /// Client certificate with this common name and organizations (roles/groups).
    Client {
        common_name: &'a str,
        organizations: &'a [&'a str],
    },
}

fn leaf_params(usage: &LeafUsage<'_>) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let mut dn = DistinguishedName::new();
    match usage {
        LeafUsage::Server { ips, dns } => {
            dn.push(DnType::CommonName, "talos-sim");
            for ip in *ips {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
            for name in *dns {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(name.clone().try_into()?));
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        LeafUsage::Client {
            common_name,
            organizations,
        } => {
            for org in *organizations {
                dn.push(DnType::OrganizationName, *org);
            }
            dn.push(DnType::CommonName, *common_name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    Ok(params)
}

/// Issues a leaf certificate signed by the CA given as PEM certificate and PEM key.
pub fn issue_leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    usage: LeafUsage<'_>,
) -> Result<IssuedCert, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let cert = leaf_params(&usage)?.signed_by(&leaf_key, &issuer)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A self-signed server certificate (the maintenance-mode certificate).
pub fn self_signed(ips: &[IpAddr], dns: &[String]) -> Result<IssuedCert, TlsError> {
    let key = KeyPair::generate()?;
    let cert = leaf_params(&LeafUsage::Server { ips, dns })?.self_signed(&key)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A self-signed CA (used by the Proxmox simulator, whose CA file the client must trust).
pub fn self_signed_ca(
    common_name: &str,
) -> Result<(IssuedCert, Issuer<'static, KeyPair>), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    let pem = IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let issuer = Issuer::new(params, key);
    Ok((pem, issuer))
}

/// Issues a server certificate from an in-memory issuer.
pub fn issue_server_from(
    issuer: &Issuer<'_, KeyPair>,
    ips: &[IpAddr],
    dns: &[String],
) -> Result<IssuedCert, TlsError> {
    let leaf_key = KeyPair::generate()?;
    let cert = leaf_params(&LeafUsage::Server { ips, dns })?.signed_by(&leaf_key, issuer)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A server config presenting `cert`; with `client_ca_pem` the client must present a
/// certificate chaining to that CA.
pub fn server_config(
    cert: &IssuedCert,
    client_ca_pem: Option<&str>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs_from_pem(ca)? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::BadPem(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(
        certs_from_pem(&cert.cert_pem)?,
        key_from_pem(&cert.key_pem)?,
    )?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Subject of the client certificate a TLS peer presented (already verified against the CA by
/// the handshake): its organizations (Talos roles, Kubernetes groups) and common name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub organizations: Vec<String>,
    pub common_name: Option<String>,
}

/// The identity of the first (leaf) peer certificate, `None` without one.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    Some(PeerIdentity {
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok().map(str::to_string)),
    })
}

/// A client config trusting `ca_pem` and optionally presenting a client certificate.
pub fn client_config(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            builder.with_client_auth_cert(certs_from_pem(cert)?, key_from_pem(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client config that accepts any server certificate and presents none (`--insecure`).
pub fn insecure_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaf_from_generated_ca_and_parses_back() {
        let (ca, _issuer) = self_signed_ca("test CA").unwrap();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let leaf = issue_leaf(
            &ca.cert_pem,
            &ca.key_pem,
            LeafUsage::Server {
                ips: &[ip],
                dns: &[],
            },
        )
        .unwrap();
        assert_eq!(certs_from_pem(&leaf.cert_pem).unwrap().len(), 1);
        assert!(matches!(
            key_from_pem(&leaf.key_pem).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
        server_config(&leaf, Some(&ca.cert_pem), &[]).unwrap();
        client_config(&ca.cert_pem, None).unwrap();
    }

    #[test]
    fn missing_certificate_is_an_error() {
        assert!(certs_from_pem("nothing here").is_err());
    }
}
