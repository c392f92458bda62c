import { describe, expect, it } from "vitest";
import type { Fill, Order } from "../api/types";
import { mergeFills, mergeOrder } from "./account";

const order = (version: number, status: Order["status"]): Order => ({
  order_id: "7",
  client_order_id: "7",
  account: "alice",
  symbol: "BTC-USDT",
  side: "buy",
  type: "limit",
  time_in_force: "gtc",
  price: "100",
  quantity: "1",
  filled_quantity: "0",
  filled_quote: "0",
  average_price: null,
  status,
  post_only: false,
  self_trade_prevention: "none",
  created_at: "2026-11-29T12:00:00Z",
  updated_at: "2026-11-29T12:00:00Z",
  version,
});

const fill = (trade_id: number, at: string): Fill => ({
  trade_id,
  symbol: "BTC-USDT",
  price: "100",
  quantity: "1",
  order_id: "7",
  side: "buy",
  liquidity: "maker",
  fee: "0.001",
  fee_asset: "BTC",
  executed_at: at,
});

describe("live account state", () => {
  it("keeps the newest version of an order, whichever arrives first", () => {
    let orders = new Map<string, Order>();
    orders = mergeOrder(orders, order(3, "canceled"));
    orders = mergeOrder(orders, order(2, "partially_filled"));
    expect(orders.get("7")?.status).toBe("canceled");
    expect(mergeOrder(orders, order(3, "canceled"))).toBe(orders);
  });

  it("keeps each fill once, newest first", () => {
    const fills = mergeFills([fill(1, "2026-11-29T12:00:00Z")], [fill(2, "2026-11-29T12:00:01Z"), fill(1, "2026-11-29T12:00:00Z")]);
    expect(fills.map((f) => f.trade_id)).toEqual([2, 1]);
  });
});
