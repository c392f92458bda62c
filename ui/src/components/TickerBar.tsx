import type { Ticker } from "../api/types";
import { format } from "../lib/decimal";

/** Last price, best bid and ask, and the last 24 hours. */
export function TickerBar({ ticker, priceDecimals, base }: { ticker?: Ticker; priceDecimals: number; base: string }) {
  const price = (value?: string | null) => (value ? format(value, priceDecimals) : "—");
  return (
    <dl className="ticker" aria-label="Ticker">
      <div>
        <dt>Last</dt>
        <dd data-testid="last-price">{price(ticker?.last_price)}</dd>
      </div>
      <div>
        <dt>Bid</dt>
        <dd className="up">{price(ticker?.best_bid?.price)}</dd>
      </div>
      <div>
        <dt>Ask</dt>
        <dd className="down">{price(ticker?.best_ask?.price)}</dd>
      </div>
      <div>
        <dt>24h high</dt>
        <dd>{price(ticker?.high)}</dd>
      </div>
      <div>
        <dt>24h low</dt>
        <dd>{price(ticker?.low)}</dd>
      </div>
      <div>
        <dt>24h volume</dt>
        <dd>
          {ticker ? format(ticker.volume) : "—"} {base}
        </dd>
      </div>
      <div>
        <dt>Trades</dt>
        <dd>{ticker?.trades ?? "—"}</dd>
      </div>
    </dl>
  );
}
