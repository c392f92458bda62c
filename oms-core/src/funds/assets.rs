//! Assets and the integer units of their amounts.
//!
//! An asset's amounts count units of `10^-scale`. The scale is the finest any instrument needs:
//! a base asset must count its instrument's lots exactly, a quote asset its instrument's
//! `tick × lot` (the unit of notionals). With that, every trade moves whole units and nothing
//! is ever rounded but fees.

use crate::instrument::Instrument;
use crate::reject::{Field, Reject, RejectReason};
use crate::types::{Price, Quantity, Side, Symbol};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::collections::BTreeMap;

/// An asset's name, such as `BTC`.
pub type Asset = SmolStr;

/// An amount of one asset in units of its scale.
pub type Amount = u128;

/// The most decimals an asset may have: amounts stay far from `u128::MAX` (3.4 × 10^38).
pub const MAX_SCALE: u32 = 18;

/// Every asset of the configured instruments, with its scale.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assets {
    scales: BTreeMap<Asset, u32>,
}

/// How one instrument's lots and notionals convert to its assets' units, and its fees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Market {
    /// The instrument.
    pub symbol: Symbol,
    /// The asset bought or sold.
    pub base: Asset,
    /// The asset prices are quoted in.
    pub quote: Asset,
    /// Base units in one lot.
    pub base_per_lot: Amount,
    /// Quote units in one `tick × lot`.
    pub quote_per_unit: Amount,
    /// Maker fee, basis points of what the maker receives.
    pub maker_fee_bps: u32,
    /// Taker fee, basis points of what the taker receives.
    pub taker_fee_bps: u32,
}

/// Why the assets of a configuration cannot be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("asset {asset} would need {scale} decimals; at most {MAX_SCALE} are supported")]
pub struct ScaleError {
    /// The asset.
    pub asset: Asset,
    /// The decimals it would need.
    pub scale: u32,
}

/// Decimals of `value` without trailing zeros.
fn decimals(value: Decimal) -> u32 {
    value.normalize().scale()
}

/// `value` in units of `10^-scale`, if it is a whole, representable number of them.
fn units(value: Decimal, scale: u32) -> Option<Amount> {
    if decimals(value) > scale || value.is_sign_negative() {
        return None;
    }
    let mut mantissa = u128::try_from(value.normalize().mantissa()).ok()?;
    for _ in decimals(value)..scale {
        mantissa = mantissa.checked_mul(10)?;
    }
    Some(mantissa)
}

impl Assets {
    /// The assets of `instruments`, each at the finest scale one of them needs.
    pub fn new<'a>(
        instruments: impl IntoIterator<Item = &'a Instrument>,
    ) -> Result<Assets, ScaleError> {
        let mut scales: BTreeMap<Asset, u32> = BTreeMap::new();
        for instrument in instruments {
            let spec = instrument.spec();
            let needs = [
                (&spec.base, decimals(spec.lot_size)),
                (&spec.quote, decimals(spec.tick_size * spec.lot_size)),
            ];
            for (asset, scale) in needs {
                if scale > MAX_SCALE {
                    return Err(ScaleError {
                        asset: asset.clone(),
                        scale,
                    });
                }
                let entry = scales.entry(asset.clone()).or_insert(0);
                *entry = (*entry).max(scale);
            }
        }
        Ok(Assets { scales })
    }

    /// The scale of `asset`, if it is one.
    pub fn scale(&self, asset: &str) -> Option<u32> {
        self.scales.get(asset).copied()
    }

    /// Every asset, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Asset, u32)> {
        self.scales.iter().map(|(asset, scale)| (asset, *scale))
    }

    /// An API amount in units: positive, within the asset's decimals, representable.
    pub fn amount(&self, asset: &str, value: Decimal) -> Result<Amount, Reject> {
        let scale = self
            .scale(asset)
            .ok_or(Reject::field(RejectReason::UnknownAsset, Field::Asset))?;
        if value <= Decimal::ZERO {
            return Err(Reject::field(RejectReason::NotPositive, Field::Amount));
        }
        if decimals(value) > scale {
            return Err(Reject::field(RejectReason::TooPrecise, Field::Amount));
        }
        units(value, scale).ok_or(Reject::field(RejectReason::TooLarge, Field::Amount))
    }

    /// Units of `asset` as an API decimal at the asset's scale.
    pub fn decimal(&self, asset: &str, amount: Amount) -> Decimal {
        let scale = self.scale(asset).unwrap_or(0);
        // Every amount below 2^96 fits a decimal; larger ones cannot come from real balances.
        let mantissa = i128::try_from(amount).unwrap_or(i128::MAX);
        Decimal::try_from_i128_with_scale(mantissa, scale).unwrap_or(Decimal::MAX)
    }

    /// The conversions of `instrument`, if its assets are known here.
    pub fn market(&self, instrument: &Instrument) -> Option<Market> {
        let spec = instrument.spec();
        let base_per_lot = units(spec.lot_size, self.scale(&spec.base)?)?;
        let quote_per_unit = units(spec.tick_size * spec.lot_size, self.scale(&spec.quote)?)?;
        Some(Market {
            symbol: spec.symbol.clone(),
            base: spec.base.clone(),
            quote: spec.quote.clone(),
            base_per_lot,
            quote_per_unit,
            maker_fee_bps: spec.maker_fee_bps,
            taker_fee_bps: spec.taker_fee_bps,
        })
    }
}

impl Market {
    /// What one side of a trade receives (base for a buy, quote for a sell), and the fee it pays
    /// on that, in that asset: the rule settlement charges by.
    pub fn fill_fee(
        &self,
        side: Side,
        maker: bool,
        price: Price,
        quantity: Quantity,
    ) -> (&Asset, Amount) {
        let (asset, received) = match side {
            Side::Buy => (&self.base, self.base(quantity).unwrap_or(0)),
            Side::Sell => (&self.quote, self.quote(price, quantity).unwrap_or(0)),
        };
        let bps = if maker {
            self.maker_fee_bps
        } else {
            self.taker_fee_bps
        };
        (asset, fee(received, bps))
    }

    /// Base units of `quantity`.
    pub fn base(&self, quantity: Quantity) -> Option<Amount> {
        u128::from(quantity.0).checked_mul(self.base_per_lot)
    }

    /// Quote units of `quantity` at `price`.
    pub fn quote(&self, price: Price, quantity: Quantity) -> Option<Amount> {
        (u128::from(price.0) * u128::from(quantity.0)).checked_mul(self.quote_per_unit)
    }
}

/// The fee on `received` at `bps`, rounded up to a whole unit: the venue never loses a
/// fraction. Never more than `received`.
pub fn fee(received: Amount, bps: u32) -> Amount {
    if bps == 0 {
        return 0;
    }
    let bps = bps.min(crate::instrument::MAX_FEE_BPS);
    // The common case in 64 bits: a 128-bit division is a library call, many times slower.
    if let Ok(small) = u64::try_from(received)
        && let Some(product) = small.checked_mul(u64::from(bps))
    {
        return u128::from(product.div_ceil(10_000)).min(received);
    }
    received
        .saturating_mul(u128::from(bps))
        .div_ceil(10_000)
        .min(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::btc;
    use rust_decimal::prelude::ToPrimitive;

    #[test]
    fn scales_are_the_finest_any_instrument_needs() {
        let btc = Instrument::new(btc()).unwrap();
        let mut eth = btc.spec().clone();
        eth.symbol = "ETH-BTC".into();
        eth.base = "ETH".into();
        eth.quote = "BTC".into();
        eth.tick_size = Decimal::new(1, 6);
        eth.lot_size = Decimal::new(1, 3);
        eth.min_quantity = Decimal::new(1, 3);
        let eth = Instrument::new(eth).unwrap();
        let assets = Assets::new([&btc, &eth]).unwrap();
        // BTC: base of lots of 0.00001, quote of 0.000001 × 0.001 = 10^-9
        assert_eq!(assets.scale("BTC"), Some(9));
        // USDT: 0.01 × 0.00001 = 10^-7
        assert_eq!(assets.scale("USDT"), Some(7));
        assert_eq!(assets.scale("ETH"), Some(3));
        let market = assets.market(&btc).unwrap();
        assert_eq!(market.base_per_lot, 10_000);
        assert_eq!(market.quote_per_unit, 1);
        assert_eq!(
            market.quote(Price(5_000_000), Quantity(10)),
            Some(50_000_000)
        );
    }

    #[test]
    fn amounts_convert_exactly_or_not_at_all() {
        let btc = Instrument::new(btc()).unwrap();
        let assets = Assets::new([&btc]).unwrap();
        assert_eq!(assets.amount("USDT", Decimal::new(15, 1)), Ok(15_000_000));
        assert_eq!(
            assets
                .amount("USDT", Decimal::new(1, 8))
                .unwrap_err()
                .reason,
            RejectReason::TooPrecise
        );
        assert_eq!(
            assets.amount("USDT", Decimal::ZERO).unwrap_err().reason,
            RejectReason::NotPositive
        );
        assert_eq!(
            assets.amount("DOGE", Decimal::ONE).unwrap_err().reason,
            RejectReason::UnknownAsset
        );
        assert_eq!(
            assets.decimal("USDT", 15_000_000),
            Decimal::new(15_000_000, 7)
        );
        assert_eq!(assets.decimal("BTC", 0).to_string(), "0.00000");
    }

    #[test]
    fn fees_round_up_and_never_exceed_what_is_received() {
        assert_eq!(fee(10_000, 10), 10);
        assert_eq!(fee(10_001, 10), 11);
        assert_eq!(fee(1, 1), 1);
        assert_eq!(fee(0, 10), 0);
        assert_eq!(fee(5, 0), 0);
        assert_eq!(fee(7, 10_000), 7);
        assert_eq!(fee(7, 20_000), 7);
    }

    #[test]
    fn too_fine_an_instrument_is_refused() {
        let mut spec = btc();
        spec.tick_size = Decimal::new(1, 12);
        spec.lot_size = Decimal::new(1, 12);
        spec.min_quantity = Decimal::new(1, 12);
        spec.max_quantity = Decimal::ONE;
        let instrument = Instrument::new(spec).unwrap();
        assert!(Assets::new([&instrument]).is_err());
    }

    #[test]
    fn to_u64_is_not_needed_for_units() {
        // units() works in u128 all the way: a value beyond u64 still converts.
        assert_eq!(
            units(Decimal::from(u64::MAX) * Decimal::TEN, 0),
            Decimal::from(u64::MAX).to_u128().map(|v| v * 10)
        );
    }
}
