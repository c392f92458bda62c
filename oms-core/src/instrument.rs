//! Instruments: what can be traded, and the conversion between the decimals of the API and the
//! scaled integers of the core.
//!
//! # Scaling invariant
//! A price is held as a count of ticks and a quantity as a count of lots. Notional values are
//! `ticks × lots` in units of `tick size × lot size`, computed in `u128` so they cannot overflow.
//!
//! # Known limitation
//! The tick and lot size of an instrument are fixed for its lifetime: changing them would change
//! the meaning of every scaled number in the journal and in snapshots. A snapshot records them
//! and refuses to load under different ones ([`crate::book::RestoreError`]).

use crate::reject::{Field, Reject, RejectReason};
use crate::types::{Price, Quantity, Symbol};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// The largest quantity, in lots, an instrument may allow in one order. It keeps the sum of a
/// price level's quantities far from `u64::MAX` (2^24 maximal orders on one level still fit).
pub const MAX_LOTS_PER_ORDER: u64 = 1 << 40;

type Result<T, E = SpecError> = std::result::Result<T, E>;

/// Whether an instrument accepts new orders.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentStatus {
    /// Orders are accepted and matched.
    #[default]
    Trading,
    /// New orders and amendments are rejected; cancels still work.
    Halted,
}

/// An instrument as configured and as the API shows it, decimals as strings.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSpec {
    /// Unique symbol, such as `BTC-USDT`.
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub symbol: Symbol,
    /// The asset bought or sold.
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub base: SmolStr,
    /// The asset prices are quoted in.
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub quote: SmolStr,
    /// Every price is a multiple of this.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "0.01"))]
    pub tick_size: Decimal,
    /// Every quantity is a multiple of this.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "0.01"))]
    pub lot_size: Decimal,
    /// Smallest quantity of one order.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "0.01"))]
    pub min_quantity: Decimal,
    /// Largest quantity of one order.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "0.01"))]
    pub max_quantity: Decimal,
    /// Smallest price × quantity of one order.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "0.01"))]
    pub min_notional: Decimal,
    /// Band around the reference price that prices must fall in, in percent; overrides the
    /// system-wide band of [`crate::RiskLimits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub price_band_percent: Option<Decimal>,
    /// Highest price an order may have: a fat-finger guard that needs no market data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>, example = "1000000"))]
    pub max_price: Option<Decimal>,
    /// Reference price for the price band until the first trade sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub reference_price: Option<Decimal>,
    /// Fee of the resting side of a trade, in basis points of what it receives.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub maker_fee_bps: u32,
    /// Fee of the incoming side of a trade, in basis points of what it receives.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub taker_fee_bps: u32,
    /// Trading or halted.
    #[serde(default)]
    pub status: InstrumentStatus,
}

fn is_zero(bps: &u32) -> bool {
    *bps == 0
}

/// The most a fee rate may be: all of what a side receives.
pub const MAX_FEE_BPS: u32 = 10_000;

/// A configuration error in an instrument spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A size or limit that must be positive is not.
    #[error("instrument {symbol}: {field} must be greater than zero")]
    NotPositive {
        /// The instrument.
        symbol: Symbol,
        /// The spec field.
        field: &'static str,
    },
    /// A value is not a multiple of the size it must align to.
    #[error("instrument {symbol}: {field} is not a multiple of {unit}")]
    Misaligned {
        /// The instrument.
        symbol: Symbol,
        /// The spec field.
        field: &'static str,
        /// The size it must be a multiple of.
        unit: &'static str,
    },
    /// Limits that contradict each other or do not fit the scaled integers.
    #[error("instrument {symbol}: {message}")]
    Invalid {
        /// The instrument.
        symbol: Symbol,
        /// What is wrong.
        message: String,
    },
}

/// A validated instrument with its limits scaled to ticks and lots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    spec: InstrumentSpec,
    min_quantity: Quantity,
    max_quantity: Quantity,
    min_notional: u128,
    max_price: Option<Price>,
    reference_price: Option<Price>,
}

impl Instrument {
    /// Validates a spec and derives its scaled limits.
    pub fn new(spec: InstrumentSpec) -> Result<Instrument> {
        let symbol = spec.symbol.clone();
        let not_positive = |field| SpecError::NotPositive {
            symbol: symbol.clone(),
            field,
        };
        let invalid = |message: String| SpecError::Invalid {
            symbol: symbol.clone(),
            message,
        };
        if symbol.is_empty() || symbol.len() > 32 {
            return Err(invalid("symbol must be 1 to 32 characters".into()));
        }
        if spec.tick_size <= Decimal::ZERO {
            return Err(not_positive("tick_size"));
        }
        if spec.lot_size <= Decimal::ZERO {
            return Err(not_positive("lot_size"));
        }
        if spec.min_notional < Decimal::ZERO {
            return Err(invalid("min_notional must not be negative".into()));
        }
        let lots = |field: &'static str, value: Decimal| -> Result<Quantity> {
            if value <= Decimal::ZERO {
                return Err(not_positive(field));
            }
            if value.checked_rem(spec.lot_size) != Some(Decimal::ZERO) {
                return Err(SpecError::Misaligned {
                    symbol: symbol.clone(),
                    field,
                    unit: "lot_size",
                });
            }
            value
                .checked_div(spec.lot_size)
                .and_then(|lots| lots.to_u64())
                .filter(|lots| *lots <= MAX_LOTS_PER_ORDER)
                .map(Quantity)
                .ok_or_else(|| {
                    invalid(format!(
                        "{field} exceeds {MAX_LOTS_PER_ORDER} lots of lot_size"
                    ))
                })
        };
        let min_quantity = lots("min_quantity", spec.min_quantity)?;
        let max_quantity = lots("max_quantity", spec.max_quantity)?;
        if min_quantity > max_quantity {
            return Err(invalid("min_quantity is above max_quantity".into()));
        }
        let unit = notional_unit(&spec)
            .ok_or_else(|| invalid("tick_size × lot_size underflows".into()))?;
        let min_notional = spec
            .min_notional
            .checked_div(unit)
            .and_then(|units| units.ceil().to_u128())
            .ok_or_else(|| invalid("min_notional is too large".into()))?;
        if spec.maker_fee_bps > MAX_FEE_BPS || spec.taker_fee_bps > MAX_FEE_BPS {
            return Err(invalid(format!(
                "fee rates must be at most {MAX_FEE_BPS} basis points"
            )));
        }
        if spec.base == spec.quote {
            return Err(invalid("base and quote must be different assets".into()));
        }
        if let Some(band) = spec.price_band_percent {
            band_ppm(band)
                .ok_or_else(|| invalid("price_band_percent must be in (0, 100]".into()))?;
        }
        let mut instrument = Instrument {
            spec,
            min_quantity,
            max_quantity,
            min_notional,
            max_price: None,
            reference_price: None,
        };
        if let Some(max) = instrument.spec.max_price {
            let price = instrument
                .price(max)
                .map_err(|reject| invalid(format!("max_price: {}", reject)))?;
            instrument.max_price = Some(price);
        }
        if let Some(reference) = instrument.spec.reference_price {
            let price = instrument
                .price(reference)
                .map_err(|reject| invalid(format!("reference_price: {}", reject)))?;
            if instrument.max_price.is_some_and(|max| price > max) {
                return Err(invalid("reference_price is above max_price".into()));
            }
            instrument.reference_price = Some(price);
        }
        Ok(instrument)
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &InstrumentSpec {
        &self.spec
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.spec.symbol
    }

    /// Whether new orders are accepted.
    pub fn is_trading(&self) -> bool {
        self.spec.status == InstrumentStatus::Trading
    }

    /// Smallest quantity of one order, in lots.
    pub fn min_quantity(&self) -> Quantity {
        self.min_quantity
    }

    /// Largest quantity of one order, in lots.
    pub fn max_quantity(&self) -> Quantity {
        self.max_quantity
    }

    /// Smallest notional of one order, in `tick × lot` units.
    pub fn min_notional_units(&self) -> u128 {
        self.min_notional
    }

    /// Highest price an order may have, in ticks.
    pub fn max_price(&self) -> Option<Price> {
        self.max_price
    }

    /// Configured reference price for the band before the first trade.
    pub fn reference_price(&self) -> Option<Price> {
        self.reference_price
    }

    /// Converts an API price to ticks: positive, on the tick, representable.
    pub fn price(&self, value: Decimal) -> Result<Price, Reject> {
        to_units(
            value,
            self.spec.tick_size,
            RejectReason::OffTick,
            Field::Price,
        )
        .map(Price)
    }

    /// Converts an API quantity to lots: positive, on the lot, representable.
    pub fn quantity(&self, value: Decimal) -> Result<Quantity, Reject> {
        let lots = to_units(
            value,
            self.spec.lot_size,
            RejectReason::OffLot,
            Field::Quantity,
        )?;
        // Larger than any instrument allows, so it can only fail the max-quantity check.
        if lots > MAX_LOTS_PER_ORDER {
            return Err(Reject::field(
                RejectReason::QuantityAboveMax,
                Field::Quantity,
            ));
        }
        Ok(Quantity(lots))
    }

    /// Converts an API quote budget to notional units (`tick × lot`): positive, a whole number
    /// of units (`too_precise` otherwise), representable.
    pub fn quote_budget(&self, value: Decimal) -> Result<u128, Reject> {
        let unit = notional_unit(&self.spec)
            .ok_or(Reject::field(RejectReason::TooLarge, Field::QuoteQuantity))?;
        to_units(value, unit, RejectReason::TooPrecise, Field::QuoteQuantity).map(u128::from)
    }

    /// A price in ticks as an API decimal, at the tick size's scale.
    pub fn price_decimal(&self, price: Price) -> Decimal {
        scale_up(price.0, self.spec.tick_size)
    }

    /// A quantity in lots as an API decimal, at the lot size's scale.
    pub fn quantity_decimal(&self, quantity: Quantity) -> Decimal {
        scale_up(quantity.0, self.spec.lot_size)
    }

    /// A notional in `tick × lot` units as an API decimal, if it is representable.
    pub fn notional_decimal(&self, units: u128) -> Option<Decimal> {
        let units = Decimal::try_from_i128_with_scale(i128::try_from(units).ok()?, 0).ok()?;
        units.checked_mul(notional_unit(&self.spec)?)
    }

    /// A limit expressed in the quote asset as `tick × lot` units, rounded down.
    pub fn notional_units(&self, value: Decimal) -> Option<u128> {
        let unit = notional_unit(&self.spec)?;
        value.checked_div(unit)?.floor().to_u128()
    }
}

/// The value of one tick × one lot, the unit of notionals.
fn notional_unit(spec: &InstrumentSpec) -> Option<Decimal> {
    spec.tick_size
        .checked_mul(spec.lot_size)
        .filter(|unit| !unit.is_zero())
}

/// A band in percent as parts per million, if it is in (0, 100].
pub(crate) fn band_ppm(percent: Decimal) -> Option<u64> {
    if percent <= Decimal::ZERO || percent > Decimal::ONE_HUNDRED {
        return None;
    }
    percent
        .checked_mul(Decimal::from(10_000))?
        .floor()
        .to_u64()
        .filter(|ppm| *ppm > 0)
}

fn to_units(value: Decimal, unit: Decimal, off: RejectReason, field: Field) -> Result<u64, Reject> {
    if value <= Decimal::ZERO {
        return Err(Reject::field(RejectReason::NotPositive, field));
    }
    // Checked: a huge value divided by a tiny unit overflows the decimal's mantissa.
    let Some(remainder) = value.checked_rem(unit) else {
        return Err(Reject::field(RejectReason::TooLarge, field));
    };
    if !remainder.is_zero() {
        return Err(Reject::field(off, field));
    }
    value
        .checked_div(unit)
        .and_then(|units| units.to_u64())
        .ok_or(Reject::field(RejectReason::TooLarge, field))
}

fn scale_up(units: u64, unit: Decimal) -> Decimal {
    // Cannot overflow: the mantissa of `units × unit` is at most 2^64 × the unit's mantissa,
    // and every unit accepted here came from a configuration decimal with a small mantissa.
    let mut value = Decimal::from(units)
        .checked_mul(unit)
        .unwrap_or(Decimal::MAX);
    // Zero times anything loses the scale; every amount shows the unit's decimals.
    value.rescale(unit.scale());
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn btc() -> InstrumentSpec {
        InstrumentSpec {
            min_notional: d("5"),
            ..crate::test_support::btc()
        }
    }

    #[test]
    fn converts_decimals_to_ticks_and_lots_and_back() {
        let i = Instrument::new(btc()).unwrap();
        assert_eq!(i.price(d("50000.25")), Ok(Price(5_000_025)));
        assert_eq!(i.quantity(d("0.5")), Ok(Quantity(50_000)));
        assert_eq!(i.price_decimal(Price(5_000_025)).to_string(), "50000.25");
        assert_eq!(i.quantity_decimal(Quantity(50_000)).to_string(), "0.50000");
        assert_eq!(i.min_quantity(), Quantity(1));
        assert_eq!(i.max_quantity(), Quantity(10_000_000));
        // 5 USDT / (0.01 × 0.00001) = 50_000_000 units
        assert_eq!(i.min_notional_units(), 50_000_000);
    }

    #[test]
    fn off_tick_and_off_lot_name_their_field() {
        let i = Instrument::new(btc()).unwrap();
        assert_eq!(
            i.price(d("50000.001")),
            Err(Reject::field(RejectReason::OffTick, Field::Price))
        );
        assert_eq!(
            i.quantity(d("0.000015")),
            Err(Reject::field(RejectReason::OffLot, Field::Quantity))
        );
        assert_eq!(
            i.price(d("0")),
            Err(Reject::field(RejectReason::NotPositive, Field::Price))
        );
        assert_eq!(
            i.quantity(d("-1")),
            Err(Reject::field(RejectReason::NotPositive, Field::Quantity))
        );
        assert_eq!(
            i.price(d("79228162514264337593543950335")),
            Err(Reject::field(RejectReason::TooLarge, Field::Price))
        );
        assert_eq!(
            i.quantity(d("79228162514264337593543950")),
            Err(Reject::field(RejectReason::TooLarge, Field::Quantity))
        );
        // fits the integers, but is more than any instrument allows
        assert_eq!(
            i.quantity(d("10000000000")),
            Err(Reject::field(
                RejectReason::QuantityAboveMax,
                Field::Quantity
            ))
        );
        let message = i.price(d("1.001")).unwrap_err().to_string();
        assert_eq!(message, "price: price is not a multiple of the tick size");
    }

    #[test]
    fn rejects_inconsistent_specs() {
        let mut spec = btc();
        spec.tick_size = Decimal::ZERO;
        assert!(matches!(
            Instrument::new(spec),
            Err(SpecError::NotPositive {
                field: "tick_size",
                ..
            })
        ));
        let mut spec = btc();
        spec.min_quantity = d("0.000015");
        assert!(matches!(
            Instrument::new(spec),
            Err(SpecError::Misaligned {
                field: "min_quantity",
                ..
            })
        ));
        let mut spec = btc();
        spec.min_quantity = d("200");
        assert!(matches!(
            Instrument::new(spec),
            Err(SpecError::Invalid { .. })
        ));
        let mut spec = btc();
        spec.price_band_percent = Some(d("150"));
        assert!(matches!(
            Instrument::new(spec),
            Err(SpecError::Invalid { .. })
        ));
        let mut spec = btc();
        spec.reference_price = Some(d("1.001"));
        let err = Instrument::new(spec).unwrap_err().to_string();
        assert!(err.contains("reference_price"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_json_with_decimal_strings() {
        let spec = btc();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""tick_size":"0.01""#), "{json}");
        let back: InstrumentSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
