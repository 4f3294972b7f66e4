//! Self-signed certificates and TLS Secrets shaped exactly as
//! `kubectl create secret tls NAME --cert=tls.crt --key=tls.key` writes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate for {hosts:?}: {source}")]
    Generate {
        hosts: Vec<String>,
        source: rcgen::Error,
    },
    #[error("reading PEM: {0}")]
    Pem(String),
    #[error("building TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A self-signed certificate and its key, as PEM and DER.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    pub hosts: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl SelfSigned {
    /// A certificate whose subject alternative names are `hosts`.
    pub fn generate(hosts: &[&str]) -> Result<Self, CertError> {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(hosts.clone()).map_err(|source| {
            CertError::Generate {
                hosts: hosts.clone(),
                source,
            }
        })?;
        Ok(Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            cert_der: certified.cert.der().to_vec(),
            hosts,
        })
    }

    /// The `kubernetes.io/tls` Secret `kubectl create secret tls` would create.
    pub fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        tls_secret(namespace, name, &self.cert_pem, &self.key_pem)
    }

    /// Roots that trust exactly this certificate.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        // A self-signed certificate is its own anchor; adding it cannot fail for a cert we made.
        let _ = roots.add(CertificateDer::from(self.cert_der.clone()));
        Arc::new(roots)
    }

    /// A rustls server config serving this certificate (for TLS echo backends).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CertError> {
        server_config(&self.cert_pem, &self.key_pem)
    }
}

/// A `kubernetes.io/tls` Secret with `tls.crt` and `tls.key`, as kubectl writes it.
pub fn tls_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        "tls.crt".to_owned(),
        ByteString(cert_pem.as_bytes().to_vec()),
    );
    data.insert(
        "tls.key".to_owned(),
        ByteString(key_pem.as_bytes().to_vec()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// A rustls server config from PEM certificate chain and key.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    server_config_for_clients(cert_pem, key_pem, None)
}

/// A certificate authority that issues serving certificates, as the upstream suite's
/// `MustCreateCACertConfigMap` and `MustCreateCASignedCertSecret` make them.
pub struct TestCa {
    /// The CA certificate, PEM (a ConfigMap's `ca.crt`).
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn generate(name: &str) -> Result<Self, CertError> {
        let fail = |source| CertError::Generate {
            hosts: vec![name.to_owned()],
            source,
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A serving certificate for `names`: DNS names, and URIs for those with a scheme
    /// (`spiffe://...`). PEM certificate and key.
    pub fn issue(&self, names: &[&str]) -> Result<(String, String), CertError> {
        let fail = |source| CertError::Generate {
            hosts: names.iter().map(|n| (*n).to_owned()).collect(),
            source,
        };
        let (uris, dns): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.contains("://"));
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .map_err(fail)?;
        for uri in uris {
            let uri = uri.try_into().map_err(fail)?;
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate (`clientAuth` purpose, no names, subject `CN=default,
    /// O=Acme Co`), as the upstream suite's `MustCreateCASignedClientCertSecret` makes
    /// them. PEM certificate and key.
    pub fn issue_client(&self) -> Result<(String, String), CertError> {
        let fail = |source| CertError::Generate {
            hosts: vec!["client".to_owned()],
            source,
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "default");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme Co");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// [`server_config`] that, with `client_ca`, asks for a client certificate and checks
/// one that comes against that CA (PEM), letting clients without one through: as
/// echo-basic serves with `TLS_CLIENT_CACERTS` (Go's `VerifyClientCertIfGiven`).
pub fn server_config_for_clients(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| CertError::Pem(e.to_string()))?
        .ok_or_else(|| CertError::Pem("no private key found".to_owned()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for der in rustls_pemfile::certs(&mut ca.as_bytes()) {
                let der = der.map_err(|e| CertError::Pem(e.to_string()))?;
                roots.add(der).map_err(|e| CertError::Pem(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| CertError::Pem(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate as PEM, in Go's `pem.Encode` layout (64 characters a line).
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
