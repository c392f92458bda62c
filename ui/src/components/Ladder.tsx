import type { Book } from "../lib/book";
import { cumulative } from "../lib/book";
import { compare, format, sub } from "../lib/decimal";
import { Head } from "./Head";

const ROWS = 12;

/** The depth ladder: asks above (best at the bottom), the spread, bids below. A click on a
 * price puts it into the order ticket. */
export function Ladder({
  book,
  priceDecimals,
  quantityDecimals,
  onPick,
}: {
  book?: Book;
  priceDecimals: number;
  quantityDecimals: number;
  onPick: (price: string) => void;
}) {
  if (!book) return <p className="muted">Waiting for the book…</p>;
  const asks = cumulative(book.asks.slice(0, ROWS)).reverse();
  const bids = cumulative(book.bids.slice(0, ROWS));
  const deepest = [...asks, ...bids].reduce((max, level) => (compare(level.total, max) > 0 ? level.total : max), "0");
  const spread = book.asks.length && book.bids.length ? sub(book.asks[0][0], book.bids[0][0]) : undefined;
  const bar = (total: string) => `${deepest === "0" ? 0 : (Number(total) / Number(deepest)) * 100}%`;
  const row = (side: "bid" | "ask") => (level: { price: string; quantity: string; total: string }) => (
    <tr key={`${side}${level.price}`} className={side} data-testid={`${side}-level`}>
      <td className="price">
        <button type="button" className="link" onClick={() => onPick(level.price)} title="Use this price">
          {format(level.price, priceDecimals)}
        </button>
      </td>
      <td className="num">{format(level.quantity, quantityDecimals)}</td>
      <td className="num depth-cell">
        <span className="depth-bar" style={{ width: bar(level.total) }} />
        {format(level.total, quantityDecimals)}
      </td>
    </tr>
  );
  return (
    <table className="ladder" aria-label="Order book">
      <Head columns={["Price", ["Size", "num"], ["Total", "num"]]} />
      <tbody>
        {asks.map(row("ask"))}
        <tr className="spread">
          <td colSpan={3}>{spread !== undefined
              ? `spread ${format(spread, priceDecimals)}`
              : book.asks.length + book.bids.length === 0
                ? "no orders"
                : "one side empty"}</td>
        </tr>
        {bids.map(row("bid"))}
      </tbody>
    </table>
  );
}
