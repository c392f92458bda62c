//! An OrderSystem with every field set, for the unit tests of the pure steps.

use crds::*;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

pub fn system() -> OrderSystem {
    let mut system = OrderSystem::new(
        "btc-desk",
        OrderSystemSpec {
            image: "ghcr.io/oms/oms-runtime:0.1.0".into(),
            instruments: vec![InstrumentSpec {
                symbol: "BTC-USDT".into(),
                base: "BTC".into(),
                quote: "USDT".into(),
                tick_size: "0.01".into(),
                lot_size: "0.00001".into(),
                min_quantity: "0.00001".into(),
                max_quantity: "100".into(),
                min_notional: "5".into(),
                price_band_percent: Some("10".into()),
                max_price: None,
                reference_price: None,
                maker_fee_bps: 10,
                taker_fee_bps: 20,
                status: InstrumentStatus::Trading,
            }],
            kafka: KafkaSpec {
                bootstrap_servers: "b-1.msk:9094,b-2.msk:9094".into(),
                secret_ref: Some(SecretRef {
                    name: "kafka-auth".into(),
                }),
                topic_prefix: None,
                partitions: 12,
                replication_factor: 3,
                min_in_sync_replicas: 2,
            },
            redis: RedisSpec {
                url: None,
                secret_ref: Some(SecretKeyRef {
                    name: "redis".into(),
                    key: "url".into(),
                }),
            },
            mongodb: MongoSpec {
                secret_ref: SecretKeyRef {
                    name: "docdb".into(),
                    key: "uri".into(),
                },
                database: None,
            },
            ingest: IngestSpec {
                replicas: 3,
                autoscaling: Some(Autoscaling {
                    min_replicas: 2,
                    max_replicas: 8,
                    target_cpu_utilization: 60,
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "cpu".to_string(),
                        Quantity("500m".into()),
                    )])),
                    ..ResourceRequirements::default()
                }),
                binance_api: false,
            },
            funds: FundsSpec {
                shards: 3,
                snapshot_every: Some(2000),
                resources: None,
            },
            processor: ProcessorSpec {
                shards: 4,
                snapshot_every: Some(5000),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        "memory".to_string(),
                        Quantity("2Gi".into()),
                    )])),
                    ..ResourceRequirements::default()
                }),
            },
            projector: ProjectorSpec {
                replicas: 2,
                resources: None,
            },
            risk: RiskSpec {
                max_order_notional: Some("1000000".into()),
                price_band_percent: Some("5".into()),
                max_open_orders: Some(200),
            },
            auth: AuthSpec {
                api_keys_secret_ref: SecretRef {
                    name: "desk-keys".into(),
                },
            },
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    system.metadata = ObjectMeta {
        name: Some("btc-desk".into()),
        namespace: Some("trading".into()),
        uid: Some("6f1d1f0e-0000-4000-8000-000000000001".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    system
}
