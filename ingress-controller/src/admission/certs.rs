//! The webhook's certificates: a CA and a serving certificate, kept in a Secret so every
//! replica serves the same one, and the CA put into the `caBundle` of the webhook's own
//! ValidatingWebhookConfiguration so the API server trusts it. What kube-webhook-certgen
//! does for ingress-nginx as jobs, done in process.
//!
//! Every replica checks both every [`RECHECK`]: it serves what the Secret holds when that
//! is usable (parses, names the Service, more than [`RENEW_BEFORE`] from expiry);
//! otherwise it makes a new pair and writes it, created if absent and replaced under the
//! resourceVersion it read, so racing replicas converge on one winner. A new CA goes into
//! the bundle ahead of the previous one, which stays, so the API server still trusts
//! replicas serving the previous certificate until they pick up the new one. Any replica
//! may write: the webhook must answer before a leader is elected.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::Api;
use kube::Client;
use tls::{CertResolver, CertSource, HostPattern, ParsedCert, ServingPair};
use tokio::sync::watch;

use crate::sources::kube::post_params;
use crate::store::ObjectKey;

/// How long a generated pair is valid.
pub const VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);
/// A pair this close to expiry is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often each replica checks the Secret and the `caBundle`: how soon a deleted
/// Secret, a reinstalled configuration or another replica's rotation is followed.
pub const RECHECK: Duration = Duration::from_secs(10);
/// After a failed check (API server away, a write conflict).
const RETRY: Duration = Duration::from_secs(2);

/// Keys of the Secret.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// Where the certificates live and whom they are for.
#[derive(Clone, Debug)]
pub struct CertOptions {
    /// The Secret holding them (`--webhook-secret`, in the Service's namespace).
    pub secret: ObjectKey,
    /// The Service the API server calls (`--webhook-service`): the names certified.
    pub service: ObjectKey,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept (`--webhook-configuration`).
    pub configuration: String,
    pub recheck: Duration,
}

impl CertOptions {
    /// The names the API server may verify: it calls `NAME.NAMESPACE.svc`.
    pub fn dns_names(&self) -> Vec<String> {
        let (name, ns) = (&self.service.name, &self.service.namespace);
        vec![
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}"),
            name.clone(),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Secret {secret}: {source}")]
    Secret {
        secret: ObjectKey,
        #[source]
        source: kube::Error,
    },
    #[error("ValidatingWebhookConfiguration {name}: {source}")]
    Configuration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {0} was written by another replica meanwhile; reading it again")]
    Raced(ObjectKey),
    #[error(transparent)]
    Generate(#[from] tls::TlsError),
}

/// The pair in use, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The CA bundle: the current CA first, maybe the previous one after it.
    pub bundle: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Keeps the Secret, the resolver and the `caBundle` in step until the process ends.
/// `loaded` turns true once the resolver holds the Secret's certificate.
pub async fn run(
    client: Client,
    opts: CertOptions,
    resolver: Arc<CertResolver>,
    loaded: watch::Sender<bool>,
) {
    let mut current: Option<Stored> = None;
    let mut bundle_ok = false;
    loop {
        let next = match sync_secret(&client, &opts, current.as_ref()).await {
            Ok(stored) => {
                if current.as_ref() != Some(&stored) {
                    let source = CertSource::from_pem(
                        opts.secret.to_string(),
                        Vec::new(),
                        stored.cert_pem.as_bytes(),
                        stored.key_pem.as_bytes(),
                    );
                    resolver.rebuild(&[], Some(&source));
                    tracing::info!(secret = %opts.secret, "webhook certificate loaded");
                    current = Some(stored.clone());
                    loaded.send_replace(true);
                }
                match sync_bundle(&client, &opts.configuration, &stored.bundle).await {
                    Ok(ok) => {
                        bundle_ok = ok;
                        opts.recheck
                    }
                    Err(error) => {
                        tracing::warn!(%error, "webhook caBundle not updated; retrying");
                        RETRY
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "webhook certificate check failed; retrying");
                RETRY
            }
        };
        tracing::debug!(bundle_ok, "webhook certificates checked");
        tokio::time::sleep(next).await;
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the Secret; when it is missing or not usable, writes a new pair into it.
async fn sync_secret(
    client: &Client,
    opts: &CertOptions,
    serving: Option<&Stored>,
) -> Result<Stored, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &opts.secret.namespace);
    let secret_error = |source| CertError::Secret {
        secret: opts.secret.clone(),
        source,
    };
    let names = opts.dns_names();
    let now = now_unix();
    let existing = api.get_opt(&opts.secret.name).await.map_err(secret_error)?;
    if let Some(stored) = existing.as_ref().and_then(|s| usable(s, &names, now)) {
        return Ok(stored);
    }
    // The CA the clients may still need: the one that signed what was stored (or, when
    // the Secret is gone, what this replica serves).
    let previous_ca = existing
        .as_ref()
        .and_then(|s| field(s, CA_KEY))
        .or_else(|| serving.map(|s| s.bundle.clone()))
        .and_then(|bundle| first_pem(&bundle).map(str::to_owned));
    let pair = tls::generate_serving_pair(
        &format!("Portico admission CA ({})", opts.service),
        &names,
        now,
        VALID_FOR,
    )?;
    let stored = stored_from(&pair, previous_ca.as_deref());
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(opts.secret.name.clone()),
            namespace: Some(opts.secret.namespace.clone()),
            labels: Some([("app.kubernetes.io/name".to_owned(), "portico".to_owned())].into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            [
                (CA_KEY, &stored.bundle),
                (CERT_KEY, &stored.cert_pem),
                (KEY_KEY, &stored.key_pem),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
            .collect(),
        ),
        ..Secret::default()
    };
    let params = post_params();
    let written = match existing {
        None => api.create(&params, &secret).await,
        Some(old) => {
            // Replaced only if nobody wrote it since it was read.
            secret.metadata.resource_version = old.metadata.resource_version;
            api.replace(&opts.secret.name, &params, &secret).await
        }
    };
    match written {
        Ok(_) => {
            tracing::info!(secret = %opts.secret, "new webhook CA and certificate stored");
            Ok(stored)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Err(CertError::Raced(opts.secret.clone()))
        }
        Err(e) => Err(secret_error(e)),
    }
}

fn stored_from(pair: &ServingPair, previous_ca: Option<&str>) -> Stored {
    let mut bundle = pair.ca_pem.clone();
    if let Some(prev) = previous_ca.filter(|p| *p != pair.ca_pem.trim_end()) {
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(prev);
        bundle.push('\n');
    }
    Stored {
        bundle,
        cert_pem: pair.cert_pem.clone(),
        key_pem: pair.key_pem.clone(),
    }
}

fn field(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The first PEM block of a bundle.
fn first_pem(bundle: &str) -> Option<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = bundle.find(END)? + END.len();
    Some(bundle[..end].trim_start())
}

/// What the Secret holds, if it can be served for `names` for a while yet.
fn usable(secret: &Secret, names: &[String], now: u64) -> Option<Stored> {
    let stored = Stored {
        bundle: field(secret, CA_KEY)?,
        cert_pem: field(secret, CERT_KEY)?,
        key_pem: field(secret, KEY_KEY)?,
    };
    first_pem(&stored.bundle)?;
    let parsed =
        ParsedCert::from_pem(stored.cert_pem.as_bytes(), stored.key_pem.as_bytes()).ok()?;
    let now = i64::try_from(now).ok()?;
    let renew_at = parsed.not_after() - RENEW_BEFORE.as_secs() as i64;
    if parsed.not_before() > now || renew_at <= now {
        return None;
    }
    let certified: Vec<String> = parsed.names().iter().map(HostPattern::to_string).collect();
    names
        .iter()
        .all(|n| certified.iter().any(|c| c.eq_ignore_ascii_case(n)))
        .then_some(stored)
}

/// Sets `bundle` as the `caBundle` of every webhook of the configuration `name`, when it
/// is not already. `Ok(false)`: the configuration does not exist (not installed).
async fn sync_bundle(client: &Client, name: &str, bundle: &str) -> Result<bool, CertError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let config_error = |source| CertError::Configuration {
        name: name.to_owned(),
        source,
    };
    let Some(mut config) = api.get_opt(name).await.map_err(config_error)? else {
        tracing::warn!(
            configuration = name,
            "ValidatingWebhookConfiguration not found; the API server does not call the webhook"
        );
        return Ok(false);
    };
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        let current = hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice());
        if current != Some(bundle.as_bytes()) {
            hook.client_config.ca_bundle = Some(ByteString(bundle.as_bytes().to_vec()));
            changed = true;
        }
    }
    if changed {
        let params = post_params();
        // Under the resourceVersion read: a concurrent edit makes this fail and retry.
        api.replace(name, &params, &config)
            .await
            .map_err(config_error)?;
        tracing::info!(configuration = name, "webhook caBundle updated");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(stored: &Stored) -> Secret {
        Secret {
            data: Some(
                [
                    (CA_KEY, &stored.bundle),
                    (CERT_KEY, &stored.cert_pem),
                    (KEY_KEY, &stored.key_pem),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
                .collect(),
            ),
            ..Secret::default()
        }
    }

    fn opts() -> CertOptions {
        CertOptions {
            secret: ObjectKey::new("portico", "portico-admission-certs"),
            service: ObjectKey::new("portico", "portico-admission"),
            configuration: "portico-admission".into(),
            recheck: RECHECK,
        }
    }

    #[test]
    fn a_stored_pair_is_reused_until_near_expiry_or_for_other_names() {
        let names = opts().dns_names();
        let now = now_unix();
        let pair = tls::generate_serving_pair("ca", &names, now, VALID_FOR).unwrap();
        let stored = stored_from(&pair, None);
        assert_eq!(
            usable(&secret_of(&stored), &names, now),
            Some(stored.clone())
        );
        let near = now + VALID_FOR.as_secs() - RENEW_BEFORE.as_secs() + 1;
        assert_eq!(usable(&secret_of(&stored), &names, near), None);
        let other = vec!["other.portico.svc".to_owned()];
        assert_eq!(usable(&secret_of(&stored), &other, now), None);
        assert_eq!(usable(&Secret::default(), &names, now), None);
    }

    #[test]
    fn a_new_ca_goes_first_and_keeps_the_previous_one() {
        let names = opts().dns_names();
        let old = tls::generate_serving_pair("old", &names, now_unix(), VALID_FOR).unwrap();
        let new = tls::generate_serving_pair("new", &names, now_unix(), VALID_FOR).unwrap();
        let stored = stored_from(&new, first_pem(&old.ca_pem));
        assert_eq!(first_pem(&stored.bundle), first_pem(&new.ca_pem));
        assert!(stored.bundle.contains(first_pem(&old.ca_pem).unwrap()));
        assert_eq!(stored.bundle.matches("BEGIN CERTIFICATE").count(), 2);
        // Rotating again keeps only the one before.
        let newer = tls::generate_serving_pair("newer", &names, now_unix(), VALID_FOR).unwrap();
        let again = stored_from(&newer, first_pem(&stored.bundle));
        assert_eq!(again.bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!again.bundle.contains(first_pem(&old.ca_pem).unwrap()));
    }
}
