//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and only
//! one reconciles.
//!
//! The leader renews the Lease every [`RENEW`]; a standby takes it over once it has not been
//! renewed for [`DURATION`]. Updates carry the Lease's resource version, so two replicas can
//! never both believe they won. A leader that cannot renew in time stops reconciling.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::Duration;

/// How long a lease lasts without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW: Duration = Duration::from_secs(3);
/// How long after its last renewal a leader gives up: shorter than [`DURATION`], so it has
/// stopped before anyone else may lead.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// One replica's claim on the Lease.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElection {
    /// Elections on Lease `name` in `namespace`, as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// Tries once; true if this replica holds the Lease now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let current = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = spec
                .lease_duration_seconds
                .unwrap_or(DURATION.as_secs() as i32);
            let age = Timestamp::now().duration_since(renewed.0);
            age.as_secs() >= i64::from(duration)
        });
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(DURATION.as_secs() as i32);
        // The resource version in the body makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election failed; retrying"),
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// Renews while leading; returns when leadership is lost, at the latest [`RENEW_DEADLINE`]
    /// after the last renewal: before a standby may take the Lease over, even when a renewal
    /// hangs (an API server that accepts the connection and never answers).
    pub async fn hold(&self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            let left = RENEW_DEADLINE.saturating_sub(last.elapsed());
            match tokio::time::timeout(left, self.try_acquire()).await {
                Ok(Ok(true)) => last = tokio::time::Instant::now(),
                Ok(Ok(false)) => return,
                Ok(Err(error)) => tracing::warn!(%error, "lease renewal failed"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            }
            if last.elapsed() >= RENEW_DEADLINE {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server that accepts connections and never answers: the leader must give up
    /// before its Lease could pass to another replica.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_renewal_gives_up_leadership_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = kube::Config::new(url.parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let election = LeaderElection::new(client, "default", "oms-operator", "me");
        let started = tokio::time::Instant::now();
        tokio::time::timeout(DURATION, election.hold())
            .await
            .expect("leadership given up before the lease expired");
        assert!(started.elapsed() <= RENEW_DEADLINE + RENEW);
        accepting.abort();
    }
}
