//! The shared affinity cookie key: the leader makes sure the [`AFFINITY_KEY_SECRET`]
//! Secret exists in the controller's namespace, so every replica (and every restart) keys
//! affinity cookies alike. The source watches the Secret; `compile` reads the key from it.
//!
//! An existing Secret is never overwritten, whatever it holds: an operator may have set or
//! rotated the key on purpose (a malformed one is reported by `compile`). Deleting the
//! Secret rotates the key: the leader makes a new one at its next check.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::Api;
use kube::Client;
use tokio::sync::watch;

use crate::compile::{encode_key, AFFINITY_KEY_FIELD, AFFINITY_KEY_LEN, AFFINITY_KEY_SECRET};
use crate::sources::kube::post_params;

/// How often the leader checks that the Secret is still there.
pub const RECHECK: Duration = Duration::from_secs(60);
/// How soon a failed check is retried.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("affinity key Secret {namespace}/{AFFINITY_KEY_SECRET}: {source}")]
pub struct AffinityKeyError {
    namespace: String,
    #[source]
    source: kube::Error,
}

/// What [`ensure`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// The Secret was there (or another replica created it first).
    Existed,
    /// This call created it with a new random key.
    Created,
}

/// Create the Secret in `namespace` with a random key unless it exists.
pub async fn ensure(client: Client, namespace: &str) -> Result<Ensured, AffinityKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let error = |source| AffinityKeyError {
        namespace: namespace.to_owned(),
        source,
    };
    if api
        .get_opt(AFFINITY_KEY_SECRET)
        .await
        .map_err(error)?
        .is_some()
    {
        return Ok(Ensured::Existed);
    }
    let key: [u8; AFFINITY_KEY_LEN] = rand::random();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(AFFINITY_KEY_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "portico".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            AFFINITY_KEY_FIELD.to_owned(),
            ByteString(encode_key(&key).into_bytes()),
        )])),
        ..Secret::default()
    };
    match api.create(&post_params(), &secret).await {
        Ok(_) => Ok(Ensured::Created),
        // Another replica (a previous leader) got there first; its key stands.
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Ensured::Existed),
        Err(e) => Err(error(e)),
    }
}

/// While `leader` is true, [`ensure`] the Secret at once and then every `recheck`. Ends
/// when the leader channel closes.
pub async fn run(
    client: Client,
    namespace: String,
    recheck: Duration,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        let wait = match ensure(client.clone(), &namespace).await {
            Ok(Ensured::Created) => {
                tracing::info!(%namespace, secret = AFFINITY_KEY_SECRET, "created the affinity cookie key");
                recheck
            }
            Ok(Ensured::Existed) => recheck,
            Err(error) => {
                tracing::warn!(%error, "ensuring the affinity cookie key");
                RETRY.min(recheck)
            }
        };
        // A leadership change wakes us early: on losing it, to wait for the next term.
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = leader.changed() => if changed.is_err() { return },
        }
    }
}
