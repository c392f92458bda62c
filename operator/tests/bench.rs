//! Benchmark: apply 500 OrderSystems and time until every one has converged (children applied
//! and topics ready for its generation), with the operator's peak memory.
//!
//! `cargo test --release -p operator --test bench -- --ignored --nocapture`
//! (needs `eval "$(scripts/services up)"`; see docs/benchmarks.md)

mod common;

use common::*;
use futures::StreamExt;
use std::time::{Duration, Instant};

const SYSTEMS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on purpose, it prints numbers and asserts nothing about time"]
async fn converge_500_order_systems() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "bench").await;
    let operator = Operator::start(&env, &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    futures::stream::iter(0..SYSTEMS)
        .for_each_concurrent(32, |i| {
            let (client, ns, env) = (client.clone(), ns.clone(), env.clone());
            async move {
                create(&client, &ns, &manifest(&env, &format!("s{i:03}"), 1, 1)).await;
            }
        })
        .await;
    let created = started.elapsed();
    let mut last_report = Instant::now();
    let converged = loop {
        let list = systems(&client, &ns)
            .list(&Default::default())
            .await
            .unwrap();
        let done = list
            .items
            .iter()
            .filter(|s| {
                let status = s.status.as_ref();
                status.and_then(|st| st.observed_generation) == s.metadata.generation
                    && status.is_some_and(|st| {
                        st.conditions
                            .iter()
                            .any(|c| c.type_ == "TopicsReady" && c.status == "True")
                    })
            })
            .count();
        if done == SYSTEMS {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {done}/{SYSTEMS} converged after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "not converged after 15 minutes: {done}/{SYSTEMS}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let reconciles = operator.metric("oms_operator_reconciles_total").await;
    println!(
        "operator benchmark: {SYSTEMS} OrderSystems (2 topics and 11 children each) created in {:.1} s, \
         all converged after {:.1} s ({reconciles} reconciles); operator peak memory {:.0} MiB",
        created.as_secs_f64(),
        converged.as_secs_f64(),
        operator.peak_rss_mib().unwrap_or(f64::NAN)
    );
}
