//! Validate: everything the API server's schema cannot check, without a client.
//!
//! The result, a [`Plan`], holds the spec's decimals parsed and checked by the same code the
//! runtime uses (`oms_core::Instrument`, `Checks`), so a spec the operator accepts is one the
//! pods will start with.

use crds::{DeletionPolicy, InstrumentStatus, OrderSystem};
use kube::ResourceExt;
use oms_core::{Checks, Instrument, InstrumentSpec, RiskLimits};
use rust_decimal::Decimal;

/// A spec the operator cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid spec: {0}")]
pub struct InvalidSpec(pub String);

/// The checked contents of a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// OrderSystem name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Prefix of topics, consumer groups and Redis keys.
    pub topic_prefix: String,
    /// MongoDB database.
    pub database: String,
    /// The instruments, as the runtime reads them.
    pub instruments: Vec<InstrumentSpec>,
    /// The same as the JSON file the runtime reads (`instruments.json` in the ConfigMap).
    pub instruments_json: String,
    /// Risk limits, as the runtime reads them.
    pub limits: RiskLimits,
    /// Topic partitions.
    pub partitions: i32,
    /// Processor shards.
    pub shards: i32,
    /// Funds shards.
    pub funds_shards: i32,
    /// What deletion does to the topics.
    pub deletion_policy: DeletionPolicy,
}

/// The topics of a system, by suffix (the runtime's `KafkaConfig::topics`).
pub const TOPICS: [&str; 4] = ["accounts", "commands", "events", "ledger"];

impl Plan {
    /// The commands topic.
    pub fn commands_topic(&self) -> String {
        format!("{}.commands", self.topic_prefix)
    }

    /// Every topic of the system.
    pub fn topics(&self) -> Vec<String> {
        TOPICS
            .iter()
            .map(|suffix| format!("{}.{suffix}", self.topic_prefix))
            .collect()
    }
}

fn decimal(field: &str, value: &str) -> Result<Decimal, InvalidSpec> {
    Decimal::from_str_exact(value)
        .map_err(|_| InvalidSpec(format!("{field}: {value:?} is not a decimal")))
}

/// A fee rate of the spec: 0 to 1000 basis points (the schema says so too).
fn fee_bps(field: &str, bps: i32) -> Result<u32, InvalidSpec> {
    u32::try_from(bps)
        .ok()
        .filter(|bps| *bps <= 1000)
        .ok_or_else(|| InvalidSpec(format!("{field} {bps} must be between 0 and 1000")))
}

/// Checks a spec and turns it into a plan.
pub fn validate(system: &OrderSystem) -> Result<Plan, InvalidSpec> {
    let spec = &system.spec;
    let name = system.name_any();
    let namespace = system.namespace().unwrap_or_else(|| "default".into());
    for (field, shards) in [
        ("processor.shards", spec.processor.shards),
        ("funds.shards", spec.funds.shards),
    ] {
        if shards < 1 || shards > spec.kafka.partitions {
            return Err(InvalidSpec(format!(
                "{field} {shards} must be between 1 and kafka.partitions {}",
                spec.kafka.partitions
            )));
        }
    }
    let optional = |field: &str, value: &Option<String>| {
        value.as_deref().map(|v| decimal(field, v)).transpose()
    };
    let limits = RiskLimits {
        max_order_notional: optional("risk.maxOrderNotional", &spec.risk.max_order_notional)?,
        price_band_percent: optional("risk.priceBandPercent", &spec.risk.price_band_percent)?,
        max_open_orders: spec.risk.max_open_orders.map(|n| n.max(0) as u32),
    };
    // Checked on its own: instruments with their own band would never look at it.
    if let Some(band) = limits.price_band_percent
        && (band <= Decimal::ZERO || band > Decimal::ONE_HUNDRED)
    {
        return Err(InvalidSpec(format!(
            "risk.priceBandPercent {band} must be in (0, 100]"
        )));
    }
    let mut instruments = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, item) in spec.instruments.iter().enumerate() {
        let at = |field: &str| format!("instruments[{i}].{field}");
        if !seen.insert(item.symbol.clone()) {
            return Err(InvalidSpec(format!(
                "{}: symbol {} appears twice",
                at("symbol"),
                item.symbol
            )));
        }
        let runtime = InstrumentSpec {
            symbol: item.symbol.as_str().into(),
            base: item.base.as_str().into(),
            quote: item.quote.as_str().into(),
            tick_size: decimal(&at("tickSize"), &item.tick_size)?,
            lot_size: decimal(&at("lotSize"), &item.lot_size)?,
            min_quantity: decimal(&at("minQuantity"), &item.min_quantity)?,
            max_quantity: decimal(&at("maxQuantity"), &item.max_quantity)?,
            min_notional: decimal(&at("minNotional"), &item.min_notional)?,
            price_band_percent: optional(&at("priceBandPercent"), &item.price_band_percent)?,
            max_price: optional(&at("maxPrice"), &item.max_price)?,
            reference_price: optional(&at("referencePrice"), &item.reference_price)?,
            maker_fee_bps: fee_bps(&at("makerFeeBps"), item.maker_fee_bps)?,
            taker_fee_bps: fee_bps(&at("takerFeeBps"), item.taker_fee_bps)?,
            status: match item.status {
                InstrumentStatus::Trading => oms_core::InstrumentStatus::Trading,
                InstrumentStatus::Halted => oms_core::InstrumentStatus::Halted,
            },
        };
        let instrument =
            Instrument::new(runtime.clone()).map_err(|e| InvalidSpec(e.to_string()))?;
        Checks::new(&instrument, &limits).map_err(|e| InvalidSpec(format!("risk: {e}")))?;
        instruments.push(runtime);
    }
    let instruments_json = serde_json::to_string_pretty(&instruments)
        .map_err(|error| InvalidSpec(format!("instruments cannot be encoded: {error}")))?;
    Ok(Plan {
        instruments_json,
        topic_prefix: spec
            .kafka
            .topic_prefix
            .clone()
            .unwrap_or_else(|| format!("{namespace}.{name}")),
        database: spec
            .mongodb
            .database
            .clone()
            .unwrap_or_else(|| name.replace('-', "_")),
        name,
        namespace,
        instruments,
        limits,
        partitions: spec.kafka.partitions,
        shards: spec.processor.shards,
        funds_shards: spec.funds.shards,
        deletion_policy: spec.deletion_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::system;

    #[test]
    fn a_good_spec_becomes_a_plan() {
        let plan = validate(&system()).unwrap();
        assert_eq!(plan.topic_prefix, "trading.btc-desk");
        assert_eq!(plan.database, "btc_desk");
        assert_eq!(plan.commands_topic(), "trading.btc-desk.commands");
        assert_eq!(plan.instruments[0].tick_size, Decimal::new(1, 2));
        assert_eq!(plan.limits.max_open_orders, Some(200));
    }

    #[test]
    fn bad_decimals_and_limits_name_the_field() {
        let mut bad = system();
        bad.spec.instruments[0].tick_size = "0.0x".into();
        assert!(
            validate(&bad)
                .unwrap_err()
                .0
                .contains("instruments[0].tickSize")
        );
        let mut bad = system();
        bad.spec.instruments[0].min_quantity = "1000".into();
        assert!(
            validate(&bad)
                .unwrap_err()
                .0
                .contains("min_quantity is above max_quantity")
        );
        let mut bad = system();
        bad.spec.processor.shards = 13;
        assert!(validate(&bad).unwrap_err().0.contains("processor.shards"));
        let mut bad = system();
        bad.spec.funds.shards = 13;
        assert!(validate(&bad).unwrap_err().0.contains("funds.shards"));
        let mut bad = system();
        bad.spec.instruments[0].taker_fee_bps = 1001;
        assert!(validate(&bad).unwrap_err().0.contains("takerFeeBps"));
        let mut bad = system();
        bad.spec.instruments.push(bad.spec.instruments[0].clone());
        assert!(validate(&bad).unwrap_err().0.contains("appears twice"));
        let mut bad = system();
        bad.spec.risk.price_band_percent = Some("150".into());
        assert!(validate(&bad).unwrap_err().0.contains("risk"));
    }
}
