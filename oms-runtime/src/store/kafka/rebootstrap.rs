//! Long-lived Kafka clients that never end up without a broker to ask.
//!
//! librdkafka (2.12.1 here) decommissions every broker that a Metadata answer leaves out, the
//! bootstrap servers included. A broker that is still starting answers with its topics and no
//! brokers (it has not registered itself yet), so a client that asks it then keeps no broker at
//! all, and never asks again: its own re-bootstrap timer starts only when a Metadata request is
//! sent, which needs a broker. Seen here after Kafka restarts: the ingest's producer timed out
//! every append from then on while `/readyz` said ready, and a funds stage's transactional
//! producer hung in `send_offsets_to_transaction` (a coordinator request waits for a broker to
//! change state). Adding the bootstrap servers back (`rd_kafka_brokers_add`) is what its
//! re-bootstrap would do, and cured such a client in place.
//!
//! So every long-lived client is made by [`create`]: it reports statistics every second, and
//! its context passes them to [`Rebootstrap::check`], which adds the bootstrap servers back to a
//! client that names no broker of its own. The call is made from inside the statistics callback,
//! that is, while librdkafka runs the client: the handle it uses is alive.

use rdkafka::client::NativeClient;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{
    DeliveryResult, FutureProducer, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafka;
use rdkafka::{ClientConfig, ClientContext};
use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};

/// How often a long-lived client reports statistics: how soon one without brokers gets them back.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// Gives a client that lost every broker its bootstrap servers again.
pub struct Rebootstrap {
    servers: CString,
    /// The client's handle, once it exists (see [`create`]).
    client: AtomicPtr<RDKafka>,
}

impl Rebootstrap {
    fn new(servers: &str) -> Rebootstrap {
        Rebootstrap {
            // A NUL cannot be in a host list; without one the client is simply never helped.
            servers: CString::new(servers).unwrap_or_default(),
            client: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// From the client's statistics callback only (see the module doc): adds the bootstrap
    /// servers back when the statistics name no broker of the cluster.
    #[allow(unsafe_code)]
    pub fn check(&self, statistics: &Statistics) {
        let sources = statistics.brokers.values().map(|b| b.source.as_str());
        if !lost_every_broker(sources) {
            return;
        }
        let client = self.client.load(Ordering::Acquire);
        if client.is_null() || self.servers.as_bytes().is_empty() {
            return;
        }
        tracing::warn!(
            client = %statistics.name,
            servers = ?self.servers,
            "kafka client lost every broker; adding the bootstrap servers back"
        );
        // SAFETY: `client` is the live handle of the client whose callback runs this (it is set
        // once, right after the client is made, and the client outlives its own callbacks);
        // `servers` is a NUL-terminated string that outlives the call.
        unsafe {
            rdkafka::bindings::rd_kafka_brokers_add(client, self.servers.as_ptr());
        }
    }
}

/// Whether a client whose brokers have these sources (librdkafka's statistics: `learned`,
/// `configured`, `internal`, `logical`) has none of the cluster left to ask.
fn lost_every_broker<'a>(sources: impl IntoIterator<Item = &'a str>) -> bool {
    !sources
        .into_iter()
        .any(|source| matches!(source, "learned" | "configured"))
}

/// The context of a long-lived client with nothing else to observe.
pub struct Kept(Arc<Rebootstrap>);

impl ClientContext for Kept {
    fn stats(&self, statistics: Statistics) {
        self.0.check(&statistics);
    }
}

impl ConsumerContext for Kept {}

impl ProducerContext for Kept {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl From<Arc<Rebootstrap>> for Kept {
    fn from(rebootstrap: Arc<Rebootstrap>) -> Kept {
        Kept(rebootstrap)
    }
}

/// A client type whose librdkafka handle can be reached.
pub trait Native {
    /// The handle.
    fn native(&self) -> &NativeClient;
}

impl<C: ConsumerContext> Native for BaseConsumer<C> {
    fn native(&self) -> &NativeClient {
        self.client().native_client()
    }
}

impl<C: ConsumerContext + 'static> Native for StreamConsumer<C> {
    fn native(&self) -> &NativeClient {
        self.client().native_client()
    }
}

impl<C: ProducerContext + 'static> Native for ThreadedProducer<C> {
    fn native(&self) -> &NativeClient {
        Producer::client(self).native_client()
    }
}

impl<C: ClientContext + 'static> Native for FutureProducer<C> {
    fn native(&self) -> &NativeClient {
        Producer::client(self).native_client()
    }
}

/// Makes a long-lived client of `config` whose context (built by `context` around the
/// [`Rebootstrap`] it must call from its statistics) keeps it supplied with brokers.
pub fn create<T, C>(
    bootstrap: &str,
    config: &ClientConfig,
    context: impl FnOnce(Arc<Rebootstrap>) -> C,
) -> KafkaResult<T>
where
    T: FromClientConfigAndContext<C> + Native,
    C: ClientContext,
{
    let rebootstrap = Arc::new(Rebootstrap::new(bootstrap));
    let mut config = config.clone();
    config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    let client = T::from_config_and_context(&config, context(rebootstrap.clone()))?;
    rebootstrap
        .client
        .store(client.native().ptr(), Ordering::Release);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::lost_every_broker;

    #[test]
    fn a_client_with_only_its_own_placeholders_has_lost_every_broker() {
        // what the stranded ingest producer reported: its internal broker and nothing else
        assert!(lost_every_broker(["internal"]));
        assert!(lost_every_broker(["internal", "logical"]));
        assert!(lost_every_broker([]));
        // a learned broker, even down, is asked again when it comes back
        assert!(!lost_every_broker(["internal", "learned"]));
        // still bootstrapping
        assert!(!lost_every_broker(["configured", "internal"]));
    }
}
