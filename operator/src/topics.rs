//! The Kafka topics of an OrderSystem, through the admin API.
//!
//! Rules: create with the spec's partitions, replication factor and configuration; partitions
//! only grow; configuration drift is reverted; a topic with more partitions than the spec or
//! another replication factor is reported as `NotSupported` and never changed (shrinking a
//! topic or moving its replicas is not something an operator should do behind anyone's back).

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::time::Duration;

/// A Kafka problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin API failed.
    #[error("kafka: {0}")]
    Kafka(String),
}

fn kafka(error: impl std::fmt::Display) -> Error {
    Error::Kafka(error.to_string())
}

/// What a topic should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configuration the operator owns.
    pub config: BTreeMap<String, String>,
}

/// What was found and done for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicReport {
    /// Name.
    pub name: String,
    /// Partitions it has now.
    pub partitions: i32,
    /// What the operator did: `created`, `grown`, `config reverted`, or nothing.
    pub actions: Vec<String>,
    /// Why the topic does not match the spec and will not be changed.
    pub not_supported: Option<String>,
}

/// The topics of a system with the operator's configuration: each is kept for seven days
/// (snapshots make a restart replay far less), with the spec's min.insync.replicas.
pub fn wanted(
    prefix: &str,
    partitions: i32,
    replication_factor: i32,
    min_isr: i32,
) -> Vec<WantedTopic> {
    let config = BTreeMap::from([
        ("min.insync.replicas".to_string(), min_isr.to_string()),
        (
            "retention.ms".to_string(),
            (7 * 24 * 3600 * 1000_i64).to_string(),
        ),
        ("cleanup.policy".to_string(), "delete".to_string()),
    ]);
    crate::validate::TOPICS
        .iter()
        .map(|suffix| WantedTopic {
            name: format!("{prefix}.{suffix}"),
            partitions,
            replication_factor,
            config: config.clone(),
        })
        .collect()
}

/// A connection to one cluster.
pub struct Topics {
    admin: AdminClient<DefaultClientContext>,
    metadata: std::sync::Arc<BaseConsumer>,
    timeout: Duration,
}

impl Topics {
    /// An admin client for `bootstrap` with extra librdkafka `properties`.
    pub fn connect(
        bootstrap: &str,
        properties: &[(String, String)],
        timeout: Duration,
    ) -> Result<Topics, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("socket.timeout.ms", timeout.as_millis().to_string())
            .set("log_level", "3");
        for (key, value) in properties {
            config.set(key, value);
        }
        Ok(Topics {
            admin: config.create().map_err(kafka)?,
            metadata: std::sync::Arc::new(config.create().map_err(kafka)?),
            timeout,
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(Timeout::After(self.timeout)))
            .request_timeout(Some(Timeout::After(self.timeout)))
    }

    /// `(partitions, replication factor)` of a topic, `None` if it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<(i32, i32)>, Error> {
        let name = name.to_string();
        let timeout = self.timeout;
        let metadata =
            tokio::task::block_in_place(|| self.metadata.fetch_metadata(Some(&name), timeout))
                .map_err(kafka)?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            return Ok(None);
        };
        match topic.error() {
            Some(code)
                if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition =>
            {
                Ok(None)
            }
            Some(code) => Err(kafka(format!(
                "topic {name}: {:?}",
                RDKafkaErrorCode::from(code)
            ))),
            None if topic.partitions().is_empty() => Ok(None),
            None => {
                let replication = topic.partitions()[0].replicas().len() as i32;
                Ok(Some((topic.partitions().len() as i32, replication)))
            }
        }
    }

    /// Makes the topics match, as far as the rules allow.
    pub async fn ensure(&self, wanted: &[WantedTopic]) -> Result<Vec<TopicReport>, Error> {
        let mut reports = Vec::new();
        for topic in wanted {
            let mut report = TopicReport {
                name: topic.name.clone(),
                partitions: topic.partitions,
                actions: Vec::new(),
                not_supported: None,
            };
            match self.describe(&topic.name).await? {
                None => {
                    let mut new = NewTopic::new(
                        &topic.name,
                        topic.partitions,
                        TopicReplication::Fixed(topic.replication_factor),
                    );
                    for (key, value) in &topic.config {
                        new = new.set(key, value);
                    }
                    for result in self
                        .admin
                        .create_topics([&new], &self.options())
                        .await
                        .map_err(kafka)?
                    {
                        match result {
                            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((name, code)) => {
                                return Err(kafka(format!("cannot create {name}: {code}")));
                            }
                        }
                    }
                    report.actions.push("created".into());
                }
                Some((partitions, replication)) => {
                    report.partitions = partitions;
                    if partitions < topic.partitions {
                        let grow = NewPartitions::new(&topic.name, topic.partitions as usize);
                        for result in self
                            .admin
                            .create_partitions([&grow], &self.options())
                            .await
                            .map_err(kafka)?
                        {
                            result.map_err(|(name, code)| {
                                kafka(format!("cannot grow {name}: {code}"))
                            })?;
                        }
                        report.partitions = topic.partitions;
                        report.actions.push(format!(
                            "grown from {partitions} to {} partitions",
                            topic.partitions
                        ));
                    } else if partitions > topic.partitions {
                        report.not_supported = Some(format!(
                            "topic {} has {partitions} partitions; the spec asks for {}, and partitions never shrink",
                            topic.name, topic.partitions
                        ));
                    }
                    if replication != topic.replication_factor {
                        report.not_supported = Some(format!(
                            "topic {} has replication factor {replication}; the spec asks for {}, which the operator does not change",
                            topic.name, topic.replication_factor
                        ));
                    }
                    if self.revert_drift(topic).await? {
                        report.actions.push("config reverted".into());
                    }
                }
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// Sets the operator's configuration keys back where they differ; true if any did.
    async fn revert_drift(&self, topic: &WantedTopic) -> Result<bool, Error> {
        let described = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(&topic.name)], &self.options())
            .await
            .map_err(kafka)?;
        let Some(Ok(resource)) = described.into_iter().next() else {
            return Err(kafka(format!(
                "cannot describe the configuration of {}",
                topic.name
            )));
        };
        let current: BTreeMap<&str, Option<&str>> = resource
            .entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.value.as_deref()))
            .collect();
        let drifted = topic.config.iter().any(|(key, value)| {
            current.get(key.as_str()).copied().flatten() != Some(value.as_str())
        });
        if !drifted {
            return Ok(false);
        }
        // AlterConfigs replaces a topic's whole dynamic configuration: send every key we own.
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&topic.name));
        for (key, value) in &topic.config {
            alter = alter.set(key, value);
        }
        for result in self
            .admin
            .alter_configs([&alter], &self.options())
            .await
            .map_err(kafka)?
        {
            result.map_err(|(_, code)| {
                kafka(format!(
                    "cannot revert the configuration of {}: {code}",
                    topic.name
                ))
            })?;
        }
        Ok(true)
    }

    /// Deletes the topics; ones already gone are fine.
    pub async fn delete(&self, names: &[String]) -> Result<(), Error> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for result in self
            .admin
            .delete_topics(&names, &self.options())
            .await
            .map_err(kafka)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => return Err(kafka(format!("cannot delete {name}: {code}"))),
            }
        }
        Ok(())
    }
}
