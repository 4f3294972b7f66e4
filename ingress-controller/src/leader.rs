//! Leader election over a `coordination.k8s.io/v1` Lease, so that only one replica
//! writes Ingress status.
//!
//! The same protocol as client-go's leaderelection: the holder renews `spec.renewTime`;
//! another candidate takes the Lease over only after it has watched the record stay
//! unchanged for a whole `leaseDurationSeconds` by its own clock (so clock skew between
//! nodes does not matter). Every write is a replace carrying the resourceVersion that was
//! read, so two candidates can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::sources::kube::post_params;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// Namespace of the Lease: the pod's own.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a follower checks whether the Lease can be taken.
    pub retry_period: Duration,
    /// A leader that has not renewed successfully for this long steps down.
    pub renew_deadline: Duration,
}

impl LeaderOptions {
    /// Lease `portico-leader` in [`controller_namespace`]; identity `$POD_NAME`, else the
    /// hostname (in a pod, the pod name).
    pub fn from_env() -> Self {
        let namespace = controller_namespace();
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("portico-{}", std::process::id()));
        Self {
            namespace,
            identity,
            ..Self::default()
        }
    }
}

/// The controller's own namespace, home of its Lease and affinity key Secret:
/// `$POD_NAMESPACE`, else the service account's namespace, else `portico`.
pub fn controller_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "portico".to_owned())
}

impl Default for LeaderOptions {
    fn default() -> Self {
        Self {
            namespace: "portico".to_owned(),
            name: "portico-leader".to_owned(),
            identity: "portico".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The outcome of one attempt.
enum Attempt {
    Leader,
    Follower { holder: String },
}

/// A candidate: what it last saw of the Lease, and when.
struct Elector {
    api: Api<Lease>,
    opts: LeaderOptions,
    /// The last `spec` seen and when it was first seen unchanged, by our clock.
    observed: Option<(LeaseSpec, Instant)>,
}

/// Campaign for the Lease; `leader` says whether we hold it. When `stop` turns true
/// (shutdown), a held Lease is released so another replica takes over at once instead of
/// after the lease duration, and the campaign ends.
pub async fn run(
    client: Client,
    opts: LeaderOptions,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api = Api::namespaced(client, &opts.namespace);
    let mut elector = Elector {
        api,
        opts,
        observed: None,
    };
    let mut last_renewal: Option<Instant> = None;
    loop {
        let result = elector.try_acquire_or_renew().await;
        let is_leader = match result {
            Ok(Attempt::Leader) => {
                last_renewal = Some(Instant::now());
                true
            }
            Ok(Attempt::Follower { holder }) => {
                if *leader.borrow() {
                    tracing::warn!(%holder, "lost the leader Lease");
                }
                tracing::debug!(%holder, "following");
                last_renewal = None;
                false
            }
            Err(error) => {
                // A leader keeps its role through short API outages: nobody else can take
                // the Lease before it expires.
                let within_deadline =
                    last_renewal.is_some_and(|t| t.elapsed() < elector.opts.renew_deadline);
                tracing::warn!(%error, still_leader = within_deadline, "leader election");
                within_deadline
            }
        };
        if is_leader != *leader.borrow() {
            tracing::info!(
                identity = %elector.opts.identity,
                lease = %format!("{}/{}", elector.opts.namespace, elector.opts.name),
                leader = is_leader,
                "leadership changed"
            );
            leader.send_replace(is_leader);
        }
        let wait = if is_leader {
            elector.opts.renew_period
        } else {
            elector.opts.retry_period
        };
        let stopping = async {
            if stop.wait_for(|s| *s).await.is_err() {
                // Nobody can ask us to stop any more.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopping => {
                leader.send_replace(false);
                if is_leader {
                    match elector.release().await {
                        Ok(()) => tracing::info!("released the leader Lease"),
                        Err(error) => tracing::warn!(%error, "releasing the leader Lease"),
                    }
                }
                return;
            }
        }
    }
}

impl Elector {
    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.opts.namespace.clone(),
            name: self.opts.name.clone(),
            source,
        }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.opts.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaseError> {
        let current = self
            .api
            .get_opt(&self.opts.name)
            .await
            .map_err(|e| self.api_error(e))?;
        let Some(mut lease) = current else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let now = Instant::now();
        // Restart the expiry clock whenever the record changes.
        match &self.observed {
            Some((seen, _)) if *seen == spec => {}
            _ => self.observed = Some((spec.clone(), now)),
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, t)| *t);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.opts.lease_duration, Duration::from_secs);
        let ours = holder == self.opts.identity;
        let expired = holder.is_empty() || now.duration_since(observed_at) >= duration;
        if !ours && !expired {
            return Ok(Attempt::Follower { holder });
        }
        let mut next = spec.clone();
        if !ours {
            next.holder_identity = Some(self.opts.identity.clone());
            next.acquire_time = Some(Self::now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        next.renew_time = Some(Self::now());
        next.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(next.clone());
        // `lease` carries the resourceVersion we read: a concurrent writer makes this fail
        // with 409 Conflict instead of both of us winning.
        match self
            .api
            .replace(&self.opts.name, &post_params(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((next, Instant::now()));
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tracing::debug!("Lease changed under us");
                Ok(Attempt::Follower { holder })
            }
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Give the Lease up if we still hold it: empty holder, so any candidate may take it.
    async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.opts.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(Self::now());
        self.api
            .replace(&self.opts.name, &post_params(), &lease)
            .await
            .map(drop)
            .map_err(|e| self.api_error(e))
    }

    async fn create(&mut self) -> Result<Attempt, LeaseError> {
        let spec = LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            acquire_time: Some(Self::now()),
            renew_time: Some(Self::now()),
            lease_duration_seconds: Some(self.lease_seconds()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.opts.name.clone()),
                namespace: Some(self.opts.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        };
        match self.api.create(&post_params(), &lease).await {
            Ok(_) => {
                self.observed = Some((spec, Instant::now()));
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Attempt::Follower {
                holder: String::new(),
            }),
            Err(e) => Err(self.api_error(e)),
        }
    }
}
