// The API's shapes, as docs/api.md describes them. Numbers are decimal strings.

import type { Level } from "../lib/book";
import type { OrderType, SelfTradePrevention, Side, TimeInForce } from "../lib/validate";

export type { Instrument } from "../lib/validate";

export interface WhoAmI {
  id: string;
  accounts: string[];
  scopes: string[];
}

export type OrderStatus =
  | "new"
  | "partially_filled"
  | "filled"
  | "canceled"
  | "rejected"
  | "expired";

export interface Order {
  order_id: string;
  client_order_id: string;
  account: string;
  symbol: string;
  side: Side;
  type: OrderType;
  time_in_force: TimeInForce;
  price: string | null;
  quantity: string;
  quote_quantity?: string | null;
  filled_quantity: string;
  filled_quote: string;
  average_price: string | null;
  status: OrderStatus;
  reject_reason?: string | null;
  expire_reason?: string | null;
  post_only: boolean;
  self_trade_prevention: SelfTradePrevention;
  created_at: string;
  updated_at: string;
  version: number;
}

export interface Fill {
  trade_id: number;
  symbol: string;
  price: string;
  quantity: string;
  order_id: string;
  side: Side;
  liquidity: "maker" | "taker";
  fee: string;
  fee_asset: string;
  executed_at: string;
}

export interface Balance {
  asset: string;
  available: string;
  held: string;
  total: string;
}

export interface LedgerEntry {
  seq: number;
  asset: string;
  kind: string;
  available: string;
  held: string;
}

export interface MarketTrade {
  trade_id: number;
  price: string;
  quantity: string;
  taker_side: Side;
  executed_at: string;
}

export interface Ticker {
  symbol: string;
  last_price: string | null;
  best_bid: { price: string; quantity: string } | null;
  best_ask: { price: string; quantity: string } | null;
  open: string | null;
  high: string | null;
  low: string | null;
  volume: string;
  quote_volume: string;
  trades: number;
}

export interface Candle {
  start: string;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
}

export interface BookView {
  symbol: string;
  seq: number;
  bids: Level[];
  asks: Level[];
}

/** The API's one error shape. */
export interface ErrorBody {
  error: { code: string; message: string; field?: string | null };
}
