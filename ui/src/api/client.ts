// The REST API, with the session's key. Every write carries an Idempotency-Key chosen by the
// caller, so a retry of the same submission can never act twice.

import type { OrderBody } from "../lib/validate";
import type {
  Balance,
  BookView,
  Candle,
  ErrorBody,
  Fill,
  Instrument,
  MarketTrade,
  Order,
  Ticker,
  WhoAmI,
} from "./types";

/** An answer that was not a success, in the API's error shape (or a network failure). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A fresh idempotency key: one per submission, reused by its retries. */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}

export class Api {
  constructor(
    private readonly key: string,
    private readonly base = "",
  ) {}

  private async call<T>(method: string, path: string, body?: unknown, idempotency?: string): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotency) headers["Idempotency-Key"] = idempotency;
    let response: Response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    const text = await response.text();
    const json = text ? (JSON.parse(text) as unknown) : undefined;
    if (!response.ok) {
      const error = (json as ErrorBody | undefined)?.error;
      throw new ApiError(
        response.status,
        error?.code ?? String(response.status),
        error?.message ?? response.statusText,
        error?.field ?? undefined,
      );
    }
    return json as T;
  }

  whoami(): Promise<WhoAmI> {
    return this.call("GET", "/v1/key");
  }

  instruments(): Promise<Instrument[]> {
    return this.call("GET", "/v1/instruments");
  }

  balances(account: string): Promise<{ account: string; balances: Balance[] }> {
    return this.call("GET", `/v1/balances?account=${encodeURIComponent(account)}`);
  }

  orders(account: string, status?: string, limit = 200): Promise<{ orders: Order[] }> {
    const filter = status ? `&status=${status}` : "";
    return this.call("GET", `/v1/orders?account=${encodeURIComponent(account)}${filter}&limit=${limit}`);
  }

  fills(account: string, limit = 200): Promise<{ trades: Fill[] }> {
    return this.call("GET", `/v1/trades?account=${encodeURIComponent(account)}&limit=${limit}`);
  }

  book(symbol: string, depth = 100): Promise<BookView> {
    return this.call("GET", `/v1/book/${encodeURIComponent(symbol)}?depth=${depth}`);
  }

  marketTrades(symbol: string, limit = 50): Promise<MarketTrade[]> {
    return this.call("GET", `/v1/markets/${encodeURIComponent(symbol)}/trades?limit=${limit}`);
  }

  ticker(symbol: string): Promise<Ticker> {
    return this.call("GET", `/v1/markets/${encodeURIComponent(symbol)}/ticker`);
  }

  candles(symbol: string, minutes = 240): Promise<Candle[]> {
    return this.call("GET", `/v1/markets/${encodeURIComponent(symbol)}/candles?minutes=${minutes}`);
  }

  place(account: string, symbol: string, order: OrderBody, idempotency: string): Promise<{ order_id: string }> {
    return this.call("POST", "/v1/orders", { account, symbol, ...order }, idempotency);
  }

  amend(orderId: string, change: { price?: string; quantity?: string }, idempotency: string): Promise<unknown> {
    return this.call("PATCH", `/v1/orders/${encodeURIComponent(orderId)}`, change, idempotency);
  }

  cancel(orderId: string, idempotency: string): Promise<unknown> {
    return this.call("DELETE", `/v1/orders/${encodeURIComponent(orderId)}`, undefined, idempotency);
  }

  cancelAll(account: string, symbol: string | undefined, idempotency: string): Promise<unknown> {
    const filter = symbol ? `&symbol=${encodeURIComponent(symbol)}` : "";
    return this.call("DELETE", `/v1/orders?account=${encodeURIComponent(account)}${filter}`, undefined, idempotency);
  }
}
