//! What readiness is made of, and the supervisor that keeps the roles running.
//!
//! A process is ready when every part it runs says so: each dependency (a probe, pinged on every
//! `/readyz`) and each role (a state the role sets as it starts, works, fails and recovers).
//! Parts are registered as the process starts, so `/readyz` can answer 503 naming what is still
//! missing from the first second on, while `/healthz` already says the process is alive.
//!
//! # Stalls
//! A working role reports progress (the processor on every poll pass, the projector on every
//! batch and every 5 s while idle); one silent for [`STALLED_AFTER`] reads `stalled: …`, so a
//! hung role makes the process unready, not only a crashed one.
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

/// A working role that has not reported progress for this long is stalled (hung).
pub const STALLED_AFTER: Duration = Duration::from_secs(30);
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
    /// A role (or a dependency waited for): its state since `since`; a role that beats must
    /// call [`Health::running`] again within [`STALLED_AFTER`] or it counts as stalled.
    Role {
        state: State,
        since: tokio::time::Instant,
        beats: bool,
    },
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

    fn set(&self, role: &'static str, state: State, beats: bool) {
        let up = i64::from(state == State::Running);
        self.metrics
            .roles
            .up
            .get_or_create(&RoleLabels { role })
            .set(up);
        let since = tokio::time::Instant::now();
        self.parts().insert(
            role,
            Part::Role {
                state,
                since,
                beats,
            },
        );
    }

    /// The role is waiting for something.
    pub fn starting(&self, role: &'static str, what: impl Into<String>) {
        self.set(role, State::Starting(what.into()), false);
    }

    /// The role works, as of now: a heartbeat, to be repeated within [`STALLED_AFTER`].
    pub fn running(&self, role: &'static str) {
        self.set(role, State::Running, true);
    }

    /// A dependency being waited for answered.
    pub fn connected(&self, dependency: &'static str) {
        self.set(dependency, State::Running, false);
    }

    /// The role failed.
    pub fn failing(&self, role: &'static str, why: impl std::fmt::Display) {
        self.set(role, State::Failing(why.to_string()), false);
    }

    /// A dependency that answered once; from now on `/readyz` pings it.
    pub fn probe(&self, dependency: &'static str, probe: Probe) {
        self.parts().insert(dependency, Part::Probe(probe));
    }

    /// Each part with `ok` or what is wrong with it.
    pub async fn report(&self) -> Vec<(&'static str, Result<(), String>)> {
        let mut report = Vec::new();
        let mut probes = Vec::new();
        for (name, part) in self.parts().iter() {
            match part {
                Part::Role {
                    state,
                    since,
                    beats,
                } => {
                    report.push((*name, judge(state, since.elapsed(), *beats)));
                }
                Part::Probe(probe) => probes.push((*name, probe.clone())),
            }
        }
        let pinged = probes.into_iter().map(|(name, probe)| async move {
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

/// `ok`, or what is wrong with a role in `state` for `age`.
fn judge(state: &State, age: Duration, beats: bool) -> Result<(), String> {
    match state {
        State::Running if beats && age > STALLED_AFTER => {
            Err(format!("stalled: no progress for {} s", age.as_secs()))
        }
        State::Running => Ok(()),
        State::Starting(what) => Err(format!("starting: {what}")),
        State::Failing(why) => Err(format!("failing: {why}")),
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
                health.connected(dependency);
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

    #[tokio::test(start_paused = true)]
    async fn a_role_without_progress_is_stalled_a_dependency_is_not() {
        let health = Health::new(Arc::new(Metrics::new()));
        health.running("processor");
        health.connected("kafka");
        tokio::time::advance(STALLED_AFTER + Duration::from_secs(1)).await;
        let report = health.report().await;
        assert_eq!(report[0], ("kafka", Ok(())));
        assert_eq!(
            report[1],
            (
                "processor",
                Err("stalled: no progress for 31 s".to_string())
            )
        );
        health.running("processor");
        assert_eq!(health.report().await[1], ("processor", Ok(())));
    }
}
