//! Pre-trade risk: every check an order passes before it may trade, as pure functions.
//!
//! [`Checks`] holds an instrument's limits and the system-wide [`RiskLimits`], scaled to ticks
//! and lots once. The static checks ([`Checks::new_order`]) need nothing but the order, so the
//! HTTP edge runs them to answer a 4xx before anything is journaled; the book runs them again
//! together with the checks that need its state (price band around the last trade, open orders
//! per account), so a journal written under other limits is still judged under the current ones.
//!
//! # Known limitation
//! A market order has no price, so its notional is estimated at the reference price (the last
//! trade, or the instrument's configured reference). Before any reference exists, the notional
//! limits do not apply to market orders.

use crate::command::NewOrder;
use crate::instrument::{Instrument, band_ppm};
use crate::reject::{Field, Reject, RejectReason};
use crate::types::{OrderType, Price, Quantity, Side, TimeInForce};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

type Result<T, E = Reject> = std::result::Result<T, E>;

const PPM: u128 = 1_000_000;

/// System-wide pre-trade limits, as configured (decimals in the quote asset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest price × quantity of one order, in the quote asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_order_notional: Option<Decimal>,
    /// Prices must lie within this percentage of the reference price (the last trade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_band_percent: Option<Decimal>,
    /// Most open orders one account may have on one instrument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_orders: Option<u32>,
}

/// A risk configuration that cannot be applied to an instrument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskError {
    /// The band is not a percentage in (0, 100].
    #[error("price_band_percent must be in (0, 100], got {0}")]
    Band(Decimal),
    /// The notional limit is not positive or does not fit.
    #[error("max_order_notional must be positive and representable, got {0}")]
    Notional(Decimal),
}

/// An instrument's limits and the risk limits, scaled to ticks, lots and `tick × lot` units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checks {
    trading: bool,
    min_quantity: Quantity,
    max_quantity: Quantity,
    max_price: Option<Price>,
    min_notional: u128,
    max_notional: Option<u128>,
    band_ppm: Option<u64>,
    max_open_orders: Option<u32>,
}

impl Checks {
    /// Scales the limits for one instrument; the instrument's own band wins over the global one.
    pub fn new(instrument: &Instrument, limits: &RiskLimits) -> Result<Checks, RiskError> {
        let band = instrument
            .spec()
            .price_band_percent
            .or(limits.price_band_percent);
        let band_ppm = match band {
            Some(percent) => Some(band_ppm(percent).ok_or(RiskError::Band(percent))?),
            None => None,
        };
        let max_notional = match limits.max_order_notional {
            Some(value) => Some(
                instrument
                    .notional_units(value)
                    .filter(|units| *units > 0)
                    .ok_or(RiskError::Notional(value))?,
            ),
            None => None,
        };
        Ok(Checks {
            trading: instrument.is_trading(),
            min_quantity: instrument.min_quantity(),
            max_quantity: instrument.max_quantity(),
            max_price: instrument.max_price(),
            min_notional: instrument.min_notional_units(),
            max_notional,
            band_ppm,
            max_open_orders: limits.max_open_orders,
        })
    }

    /// Everything that can be judged from the order alone: instrument status, the shape of the
    /// order (type, time in force, post-only, price presence), price, quantity and notional
    /// limits.
    /// `reference` is the book's reference price when known; it prices market orders.
    pub fn new_order(&self, order: &NewOrder, reference: Option<Price>) -> Result<()> {
        self.trading()?;
        shape(order)?;
        if let Some(budget) = order.quote_quantity {
            // The book sizes the quantity from the budget and checks it then.
            return self.budget(budget);
        }
        self.quantity(order.quantity)?;
        match order.price {
            Some(price) => {
                self.price(price)?;
                self.notional(price, order.quantity)
            }
            None => match reference {
                Some(reference) => self.notional(reference, order.quantity),
                None => Ok(()),
            },
        }
    }

    /// Fails while the instrument is halted.
    pub fn trading(&self) -> Result<()> {
        if self.trading {
            Ok(())
        } else {
            Err(Reject::field(RejectReason::InstrumentHalted, Field::Symbol))
        }
    }

    /// The instrument's maximum price.
    pub fn price(&self, price: Price) -> Result<()> {
        match self.max_price {
            Some(max) if price > max => {
                Err(Reject::field(RejectReason::PriceAboveMax, Field::Price))
            }
            _ => Ok(()),
        }
    }

    /// The instrument's minimum and maximum quantity.
    pub fn quantity(&self, quantity: Quantity) -> Result<()> {
        if quantity.is_zero() {
            Err(Reject::field(RejectReason::NotPositive, Field::Quantity))
        } else if quantity < self.min_quantity {
            Err(Reject::field(
                RejectReason::QuantityBelowMin,
                Field::Quantity,
            ))
        } else if quantity > self.max_quantity {
            Err(Reject::field(
                RejectReason::QuantityAboveMax,
                Field::Quantity,
            ))
        } else {
            Ok(())
        }
    }

    /// Minimum notional of the instrument and maximum order notional.
    pub fn notional(&self, price: Price, quantity: Quantity) -> Result<()> {
        let notional = u128::from(price.0) * u128::from(quantity.0);
        if notional < self.min_notional {
            return Err(Reject::new(RejectReason::NotionalBelowMin));
        }
        match self.max_notional {
            Some(max) if notional > max => Err(Reject::new(RejectReason::NotionalAboveMax)),
            _ => Ok(()),
        }
    }

    /// A quote budget (notional units) against the minimum notional and the maximum order
    /// notional.
    pub fn budget(&self, budget: u128) -> Result<()> {
        let blame = |reason| Reject::field(reason, Field::QuoteQuantity);
        if budget == 0 {
            return Err(blame(RejectReason::NotPositive));
        }
        if budget < self.min_notional {
            return Err(blame(RejectReason::NotionalBelowMin));
        }
        match self.max_notional {
            Some(max) if budget > max => Err(blame(RejectReason::NotionalAboveMax)),
            _ => Ok(()),
        }
    }

    /// The quantity the book sized for a budget: at least the instrument's minimum.
    pub fn sized(&self, quantity: Quantity) -> Result<()> {
        if quantity < self.min_quantity || quantity.is_zero() {
            return Err(Reject::field(
                RejectReason::QuantityBelowMin,
                Field::QuoteQuantity,
            ));
        }
        Ok(())
    }

    /// The instrument's maximum order quantity.
    pub fn max_quantity(&self) -> Quantity {
        self.max_quantity
    }

    /// The price band around `reference`; passes when there is no band or no reference yet.
    pub fn band(&self, price: Price, reference: Option<Price>) -> Result<()> {
        let (Some(ppm), Some(reference)) = (self.band_ppm, reference) else {
            return Ok(());
        };
        let distance = u128::from(price.0.abs_diff(reference.0)) * PPM;
        if distance <= u128::from(reference.0) * u128::from(ppm) {
            Ok(())
        } else {
            Err(Reject::field(RejectReason::PriceOutsideBand, Field::Price))
        }
    }

    /// The worst price a market order on `side` may trade at: the edge of the band, or no limit
    /// before there is a band and a reference.
    pub fn market_limit(&self, side: Side, reference: Option<Price>) -> Option<Price> {
        let (ppm, reference) = (self.band_ppm?, reference?);
        let reach = u128::from(reference.0) * u128::from(ppm) / PPM;
        let reach = u64::try_from(reach).unwrap_or(u64::MAX);
        Some(match side {
            Side::Buy => Price(reference.0.saturating_add(reach)),
            Side::Sell => Price(reference.0.saturating_sub(reach).max(1)),
        })
    }

    /// The open-order limit for an account that has `open` orders resting on this instrument.
    pub fn open_orders(&self, open: u32) -> Result<()> {
        match self.max_open_orders {
            Some(max) if open >= max => Err(Reject::new(RejectReason::TooManyOpenOrders)),
            _ => Ok(()),
        }
    }
}

/// The combinations of type, time in force, post-only and price that make an order.
fn shape(order: &NewOrder) -> Result<()> {
    if order.is_quote()
        && (order.order_type != OrderType::Market
            || order.side != Side::Buy
            || order.time_in_force != TimeInForce::Ioc
            || !order.quantity.is_zero())
    {
        return Err(Reject::field(
            RejectReason::QuoteQuantityNotAllowed,
            Field::QuoteQuantity,
        ));
    }
    match (order.order_type, order.price) {
        (OrderType::Limit, None) => {
            return Err(Reject::field(RejectReason::PriceRequired, Field::Price));
        }
        (OrderType::Market, Some(_)) => {
            return Err(Reject::field(RejectReason::PriceNotAllowed, Field::Price));
        }
        _ => {}
    }
    let rests = order.order_type == OrderType::Limit && order.time_in_force == TimeInForce::Gtc;
    let market_gtc =
        order.order_type == OrderType::Market && order.time_in_force == TimeInForce::Gtc;
    if market_gtc || (order.post_only && !rests) {
        return Err(Reject::field(
            RejectReason::InvalidTimeInForce,
            Field::TimeInForce,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstrumentSpec;
    use crate::test_support::{btc, limit, market};
    use std::str::FromStr;

    fn checks(limits: RiskLimits) -> Checks {
        let spec = InstrumentSpec {
            min_notional: Decimal::from(5),
            ..btc()
        };
        Checks::new(&Instrument::new(spec).unwrap(), &limits).unwrap()
    }

    fn reason(result: Result<()>) -> Option<RejectReason> {
        result.err().map(|reject| reject.reason)
    }

    #[test]
    fn shape_rules() {
        let c = checks(RiskLimits::default());
        let mut o = limit(1, "a", Side::Buy, 5_000_000, 10);
        o.price = None;
        assert_eq!(
            reason(c.new_order(&o, None)),
            Some(RejectReason::PriceRequired)
        );
        let mut o = market(1, "a", Side::Buy, 1);
        o.price = Some(Price(1));
        assert_eq!(
            reason(c.new_order(&o, None)),
            Some(RejectReason::PriceNotAllowed)
        );
        let mut o = market(1, "a", Side::Buy, 1);
        o.time_in_force = TimeInForce::Gtc;
        assert_eq!(
            reason(c.new_order(&o, None)),
            Some(RejectReason::InvalidTimeInForce)
        );
        let mut o = limit(1, "a", Side::Buy, 5_000_000, 10);
        o.post_only = true;
        o.time_in_force = TimeInForce::Ioc;
        assert_eq!(
            reason(c.new_order(&o, None)),
            Some(RejectReason::InvalidTimeInForce)
        );
        o.time_in_force = TimeInForce::Gtc;
        assert_eq!(c.new_order(&o, None), Ok(()));
    }

    #[test]
    fn quantity_and_notional_limits() {
        let c = checks(RiskLimits {
            max_order_notional: Some(Decimal::from(1_000_000)),
            ..RiskLimits::default()
        });
        // min notional 5 USDT = 50_000_000 units: price 50_000.00 (5_000_000 ticks) × 10 lots
        assert_eq!(c.notional(Price(5_000_000), Quantity(10)), Ok(()));
        assert_eq!(
            reason(c.notional(Price(5_000_000), Quantity(9))),
            Some(RejectReason::NotionalBelowMin)
        );
        // max 1_000_000 USDT: 50_000 × 20 BTC (2_000_000 lots) is exactly on it
        assert_eq!(c.notional(Price(5_000_000), Quantity(2_000_000)), Ok(()));
        assert_eq!(
            reason(c.notional(Price(5_000_000), Quantity(2_000_001))),
            Some(RejectReason::NotionalAboveMax)
        );
        assert_eq!(
            reason(c.quantity(Quantity(0))),
            Some(RejectReason::NotPositive)
        );
        assert_eq!(
            reason(c.quantity(Quantity(10_000_001))),
            Some(RejectReason::QuantityAboveMax)
        );
        // a market order is priced at the reference, and unpriced before there is one
        let o = market(1, "a", Side::Buy, 1);
        assert_eq!(c.new_order(&o, None), Ok(()));
        assert_eq!(
            reason(c.new_order(&o, Some(Price(5_000_000)))),
            Some(RejectReason::NotionalBelowMin)
        );
    }

    #[test]
    fn max_price() {
        let spec = InstrumentSpec {
            max_price: Some(Decimal::from(1_000)),
            ..btc()
        };
        let c = Checks::new(&Instrument::new(spec).unwrap(), &RiskLimits::default()).unwrap();
        // 1_000.00 at a tick of 0.01 is 100_000 ticks
        assert_eq!(c.price(Price(100_000)), Ok(()));
        assert_eq!(
            c.new_order(&limit(1, "a", Side::Buy, 100_001, 1_000), None),
            Err(Reject::field(RejectReason::PriceAboveMax, Field::Price))
        );
        let bad = InstrumentSpec {
            max_price: Some(Decimal::new(1, 3)),
            ..btc()
        };
        assert!(Instrument::new(bad).is_err(), "a max price off the tick");
        let bad = InstrumentSpec {
            max_price: Some(Decimal::from(10)),
            reference_price: Some(Decimal::from(20)),
            ..btc()
        };
        assert!(Instrument::new(bad).is_err(), "a reference above the max");
    }

    #[test]
    fn price_band_and_market_protection() {
        let c = checks(RiskLimits {
            price_band_percent: Some(Decimal::from_str("5").unwrap()),
            ..RiskLimits::default()
        });
        let reference = Some(Price(10_000));
        assert_eq!(c.band(Price(10_500), reference), Ok(()));
        assert_eq!(c.band(Price(9_500), reference), Ok(()));
        assert_eq!(
            reason(c.band(Price(10_501), reference)),
            Some(RejectReason::PriceOutsideBand)
        );
        assert_eq!(
            reason(c.band(Price(9_499), reference)),
            Some(RejectReason::PriceOutsideBand)
        );
        assert_eq!(c.band(Price(1), None), Ok(()));
        assert_eq!(c.market_limit(Side::Buy, reference), Some(Price(10_500)));
        assert_eq!(c.market_limit(Side::Sell, reference), Some(Price(9_500)));
        assert_eq!(c.market_limit(Side::Sell, None), None);
        assert_eq!(
            checks(RiskLimits::default()).market_limit(Side::Buy, reference),
            None
        );
    }

    #[test]
    fn instrument_band_overrides_global_band() {
        let mut spec = btc();
        spec.price_band_percent = Some(Decimal::ONE);
        let limits = RiskLimits {
            price_band_percent: Some(Decimal::from(50)),
            ..RiskLimits::default()
        };
        let c = Checks::new(&Instrument::new(spec).unwrap(), &limits).unwrap();
        assert_eq!(
            reason(c.band(Price(10_200), Some(Price(10_000)))),
            Some(RejectReason::PriceOutsideBand)
        );
    }

    #[test]
    fn open_order_limit_and_halt() {
        let c = checks(RiskLimits {
            max_open_orders: Some(2),
            ..RiskLimits::default()
        });
        assert_eq!(c.open_orders(1), Ok(()));
        assert_eq!(
            reason(c.open_orders(2)),
            Some(RejectReason::TooManyOpenOrders)
        );
        let mut spec = btc();
        spec.status = crate::InstrumentStatus::Halted;
        let halted = Checks::new(&Instrument::new(spec).unwrap(), &RiskLimits::default()).unwrap();
        assert_eq!(
            halted.new_order(&limit(1, "a", Side::Buy, 100, 1), None),
            Err(Reject::field(RejectReason::InstrumentHalted, Field::Symbol))
        );
    }

    #[test]
    fn rejects_bad_risk_configuration() {
        let i = Instrument::new(btc()).unwrap();
        let bad_band = RiskLimits {
            price_band_percent: Some(Decimal::ZERO),
            ..RiskLimits::default()
        };
        assert!(matches!(
            Checks::new(&i, &bad_band),
            Err(RiskError::Band(_))
        ));
        let bad_notional = RiskLimits {
            max_order_notional: Some(Decimal::from(-1)),
            ..RiskLimits::default()
        };
        assert!(matches!(
            Checks::new(&i, &bad_notional),
            Err(RiskError::Notional(_))
        ));
    }
}
