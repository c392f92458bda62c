//! The status an OrderSystem reports, computed from what one reconcile observed (pure).
//!
//! | condition | True when |
//! |---|---|
//! | `TopicsReady` | every topic exists and matches the spec |
//! | `IngestAvailable` | at least one ingest pod is ready (or none is wanted) |
//! | `FundsReady` | every funds shard's pod is ready |
//! | `ProcessorsReady` | every processor shard's pod is ready |
//! | `ProjectorReady` | a projector pod is ready (its readiness says it writes the projection) |
//! | `Ready` | all five, and not degraded |
//! | `Progressing` | children or pods are still catching up with the spec |
//! | `Degraded` | the spec is invalid, the Kafka Secret is missing or malformed, a topic cannot be made to match, or Kafka or the API failed |
//! | `ReconciliationPaused` | the `oms.dev/paused: "true"` annotation is set; nothing is changed |
//!
//! Every condition carries the generation it describes; `lastTransitionTime` moves only when a
//! condition's status changes.

use crds::{OrderSystemStatus, ReadyCount, TopicStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What one reconcile saw and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `metadata.generation`.
    pub generation: i64,
    /// Why the spec cannot be run.
    pub invalid: Option<String>,
    /// The Kafka Secret is missing, lacks its key or does not parse.
    pub secret_error: Option<String>,
    /// Why the topics are not ready (Kafka failed).
    pub topics_error: Option<String>,
    /// A topic that does not match and will not be changed.
    pub not_supported: Option<String>,
    /// The topics found.
    pub topics: Vec<TopicStatus>,
    /// Applying children failed.
    pub apply_error: Option<String>,
    /// `(ready, wanted)` ingest pods.
    pub ingest: Option<(i32, i32)>,
    /// `(ready, wanted)` processor pods.
    pub shards: Option<(i32, i32)>,
    /// `(ready, wanted)` funds pods.
    pub funds: Option<(i32, i32)>,
    /// `(ready, wanted)` projector pods.
    pub projector: Option<(i32, i32)>,
    /// The API endpoint.
    pub endpoint: Option<String>,
}

fn count((ready, replicas): (i32, i32)) -> ReadyCount {
    ReadyCount {
        ready,
        replicas,
        summary: format!("{ready}/{replicas}"),
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: String, generation: i64) -> Condition {
    Condition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Keeps each condition's previous transition time if its status did not change.
fn carry_transitions(conditions: &mut [Condition], previous: &[Condition], now: &Time) {
    for condition in conditions {
        condition.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == condition.type_ && p.status == condition.status)
            .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    }
}

/// The status after a reconcile.
pub fn compute(
    observed: &Observed,
    previous: Option<&OrderSystemStatus>,
    now: Time,
) -> OrderSystemStatus {
    let g = observed.generation;
    let (ingest_ready, ingest_wanted) = observed.ingest.unwrap_or((0, 0));
    let (shards_ready, shards_wanted) = observed.shards.unwrap_or((0, 0));
    let topics_ok = observed.topics_error.is_none()
        && observed.secret_error.is_none()
        && observed.not_supported.is_none()
        && observed.invalid.is_none();
    let ingest_ok = observed.ingest.is_some() && (ingest_ready >= 1 || ingest_wanted == 0);
    let shards_ok = observed.shards.is_some() && shards_wanted > 0 && shards_ready >= shards_wanted;
    let (funds_ready, funds_wanted) = observed.funds.unwrap_or((0, 0));
    let funds_ok = observed.funds.is_some() && funds_wanted > 0 && funds_ready >= funds_wanted;
    let (projector_ready, projector_wanted) = observed.projector.unwrap_or((0, 0));
    let projector_ok = observed.projector.is_some() && projector_wanted > 0 && projector_ready >= 1;
    let problem = observed
        .invalid
        .clone()
        .or_else(|| observed.secret_error.clone())
        .or_else(|| observed.not_supported.clone())
        .or_else(|| observed.topics_error.clone())
        .or_else(|| observed.apply_error.clone());
    let degraded_reason = if observed.invalid.is_some() {
        "InvalidSpec"
    } else if observed.secret_error.is_some() {
        "KafkaSecretInvalid"
    } else if observed.not_supported.is_some() {
        "NotSupported"
    } else if observed.topics_error.is_some() {
        "KafkaUnavailable"
    } else if observed.apply_error.is_some() {
        "ApplyFailed"
    } else {
        "AsExpected"
    };
    let converged = problem.is_none()
        && ingest_ready >= ingest_wanted
        && shards_ok
        && funds_ok
        && projector_ready >= projector_wanted;
    let mut conditions = vec![
        condition(
            "TopicsReady",
            topics_ok,
            match (
                &observed.secret_error,
                &observed.not_supported,
                &observed.topics_error,
                &observed.invalid,
            ) {
                (Some(_), _, _, _) => "KafkaSecretInvalid",
                (_, Some(_), _, _) => "NotSupported",
                (_, _, Some(_), _) => "KafkaUnavailable",
                (_, _, _, Some(_)) => "InvalidSpec",
                _ => "TopicsMatch",
            },
            observed
                .secret_error
                .clone()
                .or_else(|| observed.not_supported.clone())
                .or_else(|| observed.topics_error.clone())
                .unwrap_or_else(|| format!("{} topics match the spec", observed.topics.len())),
            g,
        ),
        condition(
            "IngestAvailable",
            ingest_ok,
            if ingest_ok {
                "PodsReady"
            } else {
                "NoReadyPods"
            },
            format!("{ingest_ready}/{ingest_wanted} ingest pods ready"),
            g,
        ),
        condition(
            "FundsReady",
            funds_ok,
            if funds_ok {
                "AllShardsReady"
            } else {
                "ShardsNotReady"
            },
            format!("{funds_ready}/{funds_wanted} funds shards ready"),
            g,
        ),
        condition(
            "ProcessorsReady",
            shards_ok,
            if shards_ok {
                "AllShardsReady"
            } else {
                "ShardsNotReady"
            },
            format!("{shards_ready}/{shards_wanted} processor shards ready"),
            g,
        ),
        condition(
            "ProjectorReady",
            projector_ok,
            if projector_ok {
                "ProjectorWriting"
            } else {
                "NoReadyProjector"
            },
            format!("{projector_ready}/{projector_wanted} projector pods ready"),
            g,
        ),
        condition(
            "Progressing",
            !converged && problem.is_none(),
            if converged {
                "Reconciled"
            } else if problem.is_some() {
                "Blocked"
            } else {
                "WaitingForPods"
            },
            if converged {
                "every child matches the spec and every pod is ready".into()
            } else {
                "children are applied; waiting for pods".into()
            },
            g,
        ),
        condition(
            "Degraded",
            problem.is_some(),
            degraded_reason,
            problem.clone().unwrap_or_else(|| "no problem found".into()),
            g,
        ),
        condition(
            "ReconciliationPaused",
            false,
            "NotPaused",
            "reconciling".into(),
            g,
        ),
    ];
    let ready =
        topics_ok && ingest_ok && funds_ok && shards_ok && projector_ok && problem.is_none();
    conditions.insert(
        0,
        condition(
            "Ready",
            ready,
            if ready { "AllReady" } else { "NotReady" },
            if ready {
                "topics match, ingest available, every shard ready, projector writing".into()
            } else {
                problem.unwrap_or_else(|| "waiting for pods".into())
            },
            g,
        ),
    );
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    carry_transitions(&mut conditions, previous_conditions, &now);
    OrderSystemStatus {
        observed_generation: Some(g),
        conditions,
        shards: observed.shards.map(count),
        funds: observed.funds.map(count),
        ingest: observed.ingest.map(count),
        projector: observed.projector.map(count),
        topics: observed.topics.clone(),
        endpoint: observed.endpoint.clone(),
    }
}

/// The status while paused: what it was, with `ReconciliationPaused` set.
pub fn paused(
    previous: Option<&OrderSystemStatus>,
    generation: i64,
    now: Time,
) -> OrderSystemStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status
        .conditions
        .retain(|c| c.type_ != "ReconciliationPaused");
    let mut flag = vec![condition(
        "ReconciliationPaused",
        true,
        "Paused",
        "the oms.dev/paused annotation is set: nothing is changed".into(),
        generation,
    )];
    carry_transitions(
        &mut flag,
        previous
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default(),
        &now,
    );
    status.conditions.extend(flag);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(status: &'a OrderSystemStatus, kind: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    fn now(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn ready_when_topics_match_and_every_pod_is_ready() {
        let observed = Observed {
            generation: 3,
            ingest: Some((2, 2)),
            shards: Some((2, 2)),
            funds: Some((2, 2)),
            projector: Some((1, 1)),
            ..Observed::default()
        };
        let status = compute(&observed, None, now(10));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(get(&status, "Ready").status, "True");
        assert_eq!(get(&status, "ProjectorReady").status, "True");
        assert_eq!(status.projector.as_ref().unwrap().summary, "1/1");
        // a projector that stops writing (its pod unready) makes the system unready
        let stalled = Observed {
            projector: Some((0, 1)),
            ..observed.clone()
        };
        let status = compute(&stalled, None, now(10));
        assert_eq!(get(&status, "Ready").status, "False");
        assert_eq!(get(&status, "ProjectorReady").reason, "NoReadyProjector");
        assert_eq!(get(&status, "Progressing").status, "True");
        let status = compute(&observed, None, now(10));
        assert_eq!(get(&status, "Progressing").status, "False");
        assert_eq!(get(&status, "Degraded").status, "False");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(get(&status, "FundsReady").status, "True");
        assert_eq!(status.shards.unwrap().summary, "2/2");
        assert_eq!(status.funds.unwrap().summary, "2/2");
        // a funds shard down makes the system unready
        let funds_down = Observed {
            funds: Some((1, 2)),
            ..observed.clone()
        };
        let status = compute(&funds_down, None, now(10));
        assert_eq!(get(&status, "Ready").status, "False");
        assert_eq!(get(&status, "FundsReady").reason, "ShardsNotReady");
    }

    #[test]
    fn waiting_for_pods_is_progressing_not_degraded() {
        let observed = Observed {
            generation: 1,
            ingest: Some((0, 2)),
            shards: Some((0, 2)),
            funds: Some((0, 2)),
            ..Observed::default()
        };
        let status = compute(&observed, None, now(10));
        assert_eq!(get(&status, "Ready").status, "False");
        assert_eq!(get(&status, "TopicsReady").status, "True");
        assert_eq!(get(&status, "Progressing").status, "True");
        assert_eq!(get(&status, "Progressing").reason, "WaitingForPods");
        assert_eq!(get(&status, "Degraded").status, "False");
    }

    #[test]
    fn problems_are_degraded_with_a_reason() {
        let cases = [
            (
                Observed {
                    invalid: Some("bad".into()),
                    ..Observed::default()
                },
                "InvalidSpec",
            ),
            (
                Observed {
                    secret_error: Some("Secret kafka-auth does not exist".into()),
                    ..Observed::default()
                },
                "KafkaSecretInvalid",
            ),
            (
                Observed {
                    not_supported: Some("shrink".into()),
                    ..Observed::default()
                },
                "NotSupported",
            ),
            (
                Observed {
                    topics_error: Some("down".into()),
                    ..Observed::default()
                },
                "KafkaUnavailable",
            ),
            (
                Observed {
                    apply_error: Some("409".into()),
                    ..Observed::default()
                },
                "ApplyFailed",
            ),
        ];
        for (observed, reason) in cases {
            let status = compute(&observed, None, now(1));
            assert_eq!(get(&status, "Degraded").status, "True");
            assert_eq!(get(&status, "Degraded").reason, reason);
            assert_eq!(get(&status, "Ready").status, "False");
        }
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let waiting = Observed {
            generation: 1,
            ingest: Some((0, 1)),
            shards: Some((0, 1)),
            funds: Some((0, 1)),
            projector: Some((0, 1)),
            ..Observed::default()
        };
        let first = compute(&waiting, None, now(10));
        let again = compute(&waiting, Some(&first), now(20));
        assert_eq!(get(&again, "Ready").last_transition_time, now(10));
        let ready = Observed {
            ingest: Some((1, 1)),
            shards: Some((1, 1)),
            funds: Some((1, 1)),
            projector: Some((1, 1)),
            ..waiting
        };
        let later = compute(&ready, Some(&again), now(30));
        assert_eq!(get(&later, "Ready").last_transition_time, now(30));
        assert_eq!(get(&later, "TopicsReady").last_transition_time, now(10));
    }

    #[test]
    fn pausing_keeps_the_status_and_sets_the_flag() {
        let observed = Observed {
            generation: 1,
            ingest: Some((1, 1)),
            shards: Some((1, 1)),
            funds: Some((1, 1)),
            projector: Some((1, 1)),
            ..Observed::default()
        };
        let before = compute(&observed, None, now(10));
        let status = paused(Some(&before), 2, now(20));
        assert_eq!(get(&status, "ReconciliationPaused").status, "True");
        assert_eq!(get(&status, "Ready").status, "True");
        assert_eq!(status.observed_generation, Some(1));
    }
}
