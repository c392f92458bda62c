import type { MarketTrade } from "../api/types";
import { format } from "../lib/decimal";
import { shortTime } from "../lib/time";
import { Head } from "./Head";

/** The newest public trades, newest first; the taker's side colours the price. */
export function MarketTrades({
  trades,
  priceDecimals,
  quantityDecimals,
}: {
  trades: MarketTrade[];
  priceDecimals: number;
  quantityDecimals: number;
}) {
  if (trades.length === 0) return <p className="muted">No trades yet.</p>;
  return (
    <table className="compact" aria-label="Recent trades">
      <Head columns={["Price", ["Size", "num"], ["Time", "num"]]} />
      <tbody>
        {trades.slice(0, 30).map((trade) => (
          <tr key={trade.trade_id}>
            <td className={trade.taker_side === "buy" ? "up" : "down"}>{format(trade.price, priceDecimals)}</td>
            <td className="num">{format(trade.quantity, quantityDecimals)}</td>
            <td className="num muted">{shortTime(trade.executed_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
