import { describe, expect, it } from "vitest";
import { orderBody, validate, type Instrument, type Ticket } from "./validate";

const btc: Instrument = {
  symbol: "BTC-USDT",
  base: "BTC",
  quote: "USDT",
  tick_size: "0.01",
  lot_size: "0.00001",
  min_quantity: "0.00001",
  max_quantity: "100",
  min_notional: "5",
  max_price: "10000000",
};

const limit: Ticket = {
  side: "buy",
  type: "limit",
  timeInForce: "gtc",
  price: "65000.00",
  quantity: "0.5",
  quoteQuantity: "",
  byQuote: false,
  postOnly: false,
  selfTradePrevention: "none",
};

describe("order ticket validation", () => {
  it("passes a valid limit order and builds its body", () => {
    expect(validate(limit, btc)).toEqual({});
    expect(orderBody(limit)).toEqual({
      side: "buy",
      type: "limit",
      time_in_force: "gtc",
      price: "65000.00",
      quantity: "0.5",
      self_trade_prevention: "none",
    });
  });

  it("refuses prices off the tick, missing, zero or above the maximum", () => {
    expect(validate({ ...limit, price: "65000.005" }, btc).price).toMatch(/tick size 0.01/);
    expect(validate({ ...limit, price: "" }, btc).price).toMatch(/needs a price/);
    expect(validate({ ...limit, price: "0" }, btc).price).toMatch(/above zero/);
    expect(validate({ ...limit, price: "1e5" }, btc).price).toMatch(/not a decimal/);
    expect(validate({ ...limit, price: "10000000.01" }, btc).price).toMatch(/maximum price/);
  });

  it("refuses quantities off the lot or outside the limits, and small notionals", () => {
    expect(validate({ ...limit, quantity: "0.000005" }, btc).quantity).toMatch(/lot size/);
    expect(validate({ ...limit, quantity: "100.00001" }, btc).quantity).toMatch(/maximum 100/);
    expect(validate({ ...limit, quantity: "0.00001" }, btc).quantity).toMatch(/notional below the minimum 5/);
    expect(validate({ ...limit, quantity: "-1" }, btc).quantity).toMatch(/not a decimal/);
  });

  it("takes market orders without a price, ioc or fok", () => {
    const market: Ticket = { ...limit, type: "market", price: "", timeInForce: "ioc" };
    expect(validate(market, btc)).toEqual({});
    expect(orderBody(market).price).toBeUndefined();
    expect(validate({ ...market, timeInForce: "gtc" }, btc).time_in_force).toBeDefined();
  });

  it("sizes a market buy by a quote amount on the tick × lot grid", () => {
    const byQuote: Ticket = { ...limit, type: "market", timeInForce: "ioc", byQuote: true, quoteQuantity: "100.5" };
    expect(validate(byQuote, btc)).toEqual({});
    expect(orderBody(byQuote)).toMatchObject({ quote_quantity: "100.5" });
    expect(orderBody(byQuote).quantity).toBeUndefined();
    expect(validate({ ...byQuote, quoteQuantity: "4" }, btc).quote_quantity).toMatch(/minimum notional/);
    expect(validate({ ...byQuote, quoteQuantity: "100.00000001" }, btc).quote_quantity).toMatch(/multiple of 0.0000001/);
    expect(validate({ ...byQuote, timeInForce: "fok" }, btc).time_in_force).toMatch(/ioc/);
  });

  it("allows post-only on gtc limit orders only", () => {
    expect(validate({ ...limit, postOnly: true }, btc)).toEqual({});
    expect(orderBody({ ...limit, postOnly: true }).post_only).toBe(true);
    expect(validate({ ...limit, postOnly: true, timeInForce: "ioc" }, btc).post_only).toBeDefined();
  });
});
