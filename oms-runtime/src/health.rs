//! What readiness is made of, and the supervisor that keeps the roles running.
//!
//! A process is ready when every part it runs says so: each dependency (a probe, pinged on every
//! `/readyz`) and each role (a state the role sets as it starts, works, fails and recovers).
//! Parts are registered as the process starts, so `/readyz` can answer 503 naming what is still
//! missing from the first second on, while `/healthz` already says the process is alive.
//!
//! # Supervision
//! A role that fails is restarted with exponential backoff by [`supervise`]; while it is down its
//! part reads `failing: <why>`, `/readyz` answers 503 and `oms_role_up{role}` is 0, and
//! `oms_role_restarts_total{role}` counts the restarts.

use crate::metrics::{Metrics, RoleLabels};
use crate::store::StoreError;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one probe may take on `/readyz`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest pause between restarts of a failed role.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// A run that lasted this long was healthy: the next failure starts the backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A readiness probe of one dependency.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// A probe from anything that can be cloned into a ping.
pub fn probe<T, F>(target: T, ping: F) -> Probe
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync + 'static,
{
    Arc::new(move || ping(target.clone()))
}

/// Where a role is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not working yet; says what it waits for.
    Starting(String),
    /// Working.
    Running,
    /// Failed; retrying or about to be restarted.
    Failing(String),
}

enum Part {
    Role(State),
    Probe(Probe),
}

/// The parts of this process and how each is doing. Cheap to share.
#[derive(Clone)]
pub struct Health {
    parts: Arc<Mutex<BTreeMap<&'static str, Part>>>,
    metrics: Arc<Metrics>,
}

impl Health {
    /// No parts yet.
    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health {
            parts: Arc::default(),
            metrics,
        }
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Part>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a role's state.
    pub fn set(&self, role: &'static str, state: State) {
        let up = i64::from(state == State::Running);
        self.metrics
            .roles
            .up
            .get_or_create(&RoleLabels { role })
            .set(up);
        self.parts().insert(role, Part::Role(state));
    }

    /// The role is waiting for something.
    pub fn starting(&self, role: &'static str, what: impl Into<String>) {
        self.set(role, State::Starting(what.into()));
    }

    /// The role works.
    pub fn running(&self, role: &'static str) {
        self.set(role, State::Running);
    }

    /// The role failed.
    pub fn failing(&self, role: &'static str, why: impl std::fmt::Display) {
        self.set(role, State::Failing(why.to_string()));
    }

    /// A dependency that answered once; from now on `/readyz` pings it.
    pub fn probe(&self, dependency: &'static str, probe: Probe) {
        self.parts().insert(dependency, Part::Probe(probe));
    }

    /// Each part with `ok` or what is wrong with it.
    pub async fn report(&self) -> Vec<(&'static str, Result<(), String>)> {
        let (states, probes): (Vec<_>, Vec<_>) = {
            let parts = self.parts();
            parts
                .iter()
                .map(|(name, part)| match part {
                    Part::Role(state) => (*name, Ok(state.clone())),
                    Part::Probe(probe) => (*name, Err(probe.clone())),
                })
                .partition(|(_, part)| part.is_ok())
        };
        let mut report: Vec<(&'static str, Result<(), String>)> = states
            .into_iter()
            .map(|(name, state)| {
                let result = match state {
                    Ok(State::Running) => Ok(()),
                    Ok(State::Starting(what)) => Err(format!("starting: {what}")),
                    Ok(State::Failing(why)) => Err(format!("failing: {why}")),
                    Err(_) => unreachable!("partitioned above"),
                };
                (name, result)
            })
            .collect();
        let pinged = probes.into_iter().map(|(name, probe)| async move {
            let Err(probe) = probe else {
                unreachable!("partitioned above")
            };
            let result = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            (name, result)
        });
        report.extend(futures::future::join_all(pinged).await);
        report.sort_by_key(|(name, _)| *name);
        report
    }
}

/// Retries `connect` until it succeeds; meanwhile `dependency` reads `starting: waiting for …`.
pub async fn patiently<T, F, Fut>(health: &Health, dependency: &'static str, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    health.starting(dependency, format!("waiting for {dependency}"));
    let mut pause = BACKOFF.0;
    loop {
        match connect().await {
            Ok(value) => {
                health.running(dependency);
                return value;
            }
            Err(error) => {
                tracing::warn!(%error, "waiting for {dependency}");
                health.starting(dependency, format!("waiting for {dependency}: {error}"));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs `role` until `stopped` is set, restarting it with backoff whenever it fails or ends on
/// its own. The role sets its own state while it runs; a failure sets `failing`.
pub async fn supervise<F, Fut>(
    health: Health,
    role: &'static str,
    stopped: tokio::sync::watch::Receiver<bool>,
    mut run: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut pause = BACKOFF.0;
    while !*stopped.borrow() {
        health.starting(role, "starting");
        let started = Instant::now();
        let outcome = run().await;
        if *stopped.borrow() {
            break;
        }
        let why = match outcome {
            Ok(()) => "ended unexpectedly".to_string(),
            Err(error) => format!("{error:#}"),
        };
        tracing::error!(role, error = %why, ?pause, "role failed; restarting");
        health.failing(role, &why);
        health
            .metrics
            .roles
            .restarts
            .get_or_create(&RoleLabels { role })
            .inc();
        if started.elapsed() >= HEALTHY_RUN {
            pause = BACKOFF.0;
        }
        let mut stopped = stopped.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stopped| *stopped) => break,
        }
        pause = (pause * 2).min(BACKOFF.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_role_is_restarted_and_shows_in_the_report() {
        let health = Health::new(Arc::new(Metrics::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let task = tokio::spawn(supervise(health.clone(), "projector", stopped, {
            let (runs, health) = (runs.clone(), health.clone());
            move || {
                let (runs, health) = (runs.clone(), health.clone());
                async move {
                    // fails twice, then runs until stopped
                    if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                        anyhow::bail!("mongodb down");
                    }
                    health.running("projector");
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = health.report().await;
        assert_eq!(
            report,
            vec![("projector", Err("failing: mongodb down".to_string()))]
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(health.report().await, vec![("projector", Ok(()))]);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        let text = health.metrics.encode();
        assert!(
            text.contains("oms_role_restarts_total{role=\"projector\"} 2"),
            "{text}"
        );
        assert!(text.contains("oms_role_up{role=\"projector\"} 1"), "{text}");
        stop.send(true).unwrap();
        task.abort();
    }
}
