// The order ticket's checks, the same the API makes at its edge (tick, lot, minimum and
// maximum quantity, minimum notional, maximum price), so that a trader sees the problem next
// to the field before anything is sent. The API stays the judge: its answer is shown too.

import { compare, isDecimal, isMultiple, isZero, mul } from "./decimal";

export interface Instrument {
  symbol: string;
  base: string;
  quote: string;
  tick_size: string;
  lot_size: string;
  min_quantity: string;
  max_quantity: string;
  min_notional: string;
  max_price?: string | null;
  maker_fee_bps?: number;
  taker_fee_bps?: number;
}

export type Side = "buy" | "sell";
export type OrderType = "limit" | "market";
export type TimeInForce = "gtc" | "ioc" | "fok";
export type SelfTradePrevention = "none" | "expire_taker" | "expire_maker" | "expire_both";

export interface Ticket {
  side: Side;
  type: OrderType;
  timeInForce: TimeInForce;
  price: string;
  quantity: string;
  /** A market buy's budget in the quote asset, instead of a quantity. */
  quoteQuantity: string;
  /** Whether a market buy is sized by `quoteQuantity`. */
  byQuote: boolean;
  postOnly: boolean;
  selfTradePrevention: SelfTradePrevention;
}

export type TicketField = "price" | "quantity" | "quote_quantity" | "time_in_force" | "post_only";
export type Problems = Partial<Record<TicketField, string>>;

/** The request body `POST /v1/orders` takes for a ticket (no account or symbol yet). */
export interface OrderBody {
  side: Side;
  type: OrderType;
  time_in_force: TimeInForce;
  price?: string;
  quantity?: string;
  quote_quantity?: string;
  post_only?: boolean;
  self_trade_prevention: SelfTradePrevention;
}

/** What is wrong with a positive decimal field, if anything; `missing` when it is empty. */
function checkPositive(text: string, missing: string): string | undefined {
  if (text.trim() === "") return missing;
  if (!isDecimal(text)) return "not a decimal number";
  if (isZero(text)) return "must be above zero";
  return undefined;
}

function checkPrice(price: string, instrument: Instrument): string | undefined {
  const number = checkPositive(price, "a limit order needs a price");
  if (number) return number;
  if (!isMultiple(price, instrument.tick_size)) {
    return `not a multiple of the tick size ${instrument.tick_size}`;
  }
  if (instrument.max_price && compare(price, instrument.max_price) > 0) {
    return `above the maximum price ${instrument.max_price}`;
  }
  return undefined;
}

function checkQuantity(quantity: string, instrument: Instrument): string | undefined {
  const number = checkPositive(quantity, "enter a quantity");
  if (number) return number;
  if (!isMultiple(quantity, instrument.lot_size)) {
    return `not a multiple of the lot size ${instrument.lot_size}`;
  }
  if (compare(quantity, instrument.min_quantity) < 0) {
    return `below the minimum ${instrument.min_quantity} ${instrument.base}`;
  }
  if (compare(quantity, instrument.max_quantity) > 0) {
    return `above the maximum ${instrument.max_quantity} ${instrument.base}`;
  }
  return undefined;
}

function checkBudget(budget: string, instrument: Instrument): string | undefined {
  const number = checkPositive(budget, `enter an amount of ${instrument.quote}`);
  if (number) return number;
  const step = mul(instrument.tick_size, instrument.lot_size);
  if (!isMultiple(budget, step)) return `not a multiple of ${step}`;
  if (compare(budget, instrument.min_notional) < 0) {
    return `below the minimum notional ${instrument.min_notional} ${instrument.quote}`;
  }
  return undefined;
}

/** What is wrong with a ticket, by field; empty when it may be sent. */
export function validate(ticket: Ticket, instrument: Instrument): Problems {
  const problems: Problems = {};
  const quote = ticket.type === "market" && ticket.side === "buy" && ticket.byQuote;
  if (ticket.type === "limit") {
    const price = checkPrice(ticket.price, instrument);
    if (price) problems.price = price;
  }
  if (quote) {
    const budget = checkBudget(ticket.quoteQuantity, instrument);
    if (budget) problems.quote_quantity = budget;
  } else {
    const quantity = checkQuantity(ticket.quantity, instrument);
    if (quantity) problems.quantity = quantity;
  }
  if (ticket.type === "market" && ticket.timeInForce === "gtc") {
    problems.time_in_force = "a market order is ioc or fok";
  }
  if (quote && ticket.timeInForce !== "ioc") {
    problems.time_in_force = "a market buy by amount is ioc";
  }
  if (ticket.postOnly && (ticket.type !== "limit" || ticket.timeInForce !== "gtc")) {
    problems.post_only = "post-only is for gtc limit orders";
  }
  if (
    ticket.type === "limit" &&
    !problems.price &&
    !problems.quantity &&
    compare(mul(ticket.price, ticket.quantity), instrument.min_notional) < 0
  ) {
    problems.quantity = `notional below the minimum ${instrument.min_notional} ${instrument.quote}`;
  }
  return problems;
}

/** The request body of a valid ticket. */
export function orderBody(ticket: Ticket): OrderBody {
  const body: OrderBody = {
    side: ticket.side,
    type: ticket.type,
    time_in_force: ticket.timeInForce,
    self_trade_prevention: ticket.selfTradePrevention,
  };
  if (ticket.type === "limit") body.price = ticket.price.trim();
  if (ticket.type === "market" && ticket.side === "buy" && ticket.byQuote) {
    body.quote_quantity = ticket.quoteQuantity.trim();
  } else {
    body.quantity = ticket.quantity.trim();
  }
  if (ticket.postOnly) body.post_only = true;
  return body;
}
