import type { Book } from "../lib/book";
import { cumulative } from "../lib/book";
import { toNumber } from "../lib/decimal";

const WIDTH = 400;
const HEIGHT = 140;

/** Cumulative depth on both sides of the spread, as stepped areas (drawn in SVG). */
export function DepthChart({ book }: { book?: Book }) {
  if (!book || (book.bids.length === 0 && book.asks.length === 0)) {
    return <p className="muted">No depth yet.</p>;
  }
  const bids = cumulative(book.bids).map((l) => [toNumber(l.price), toNumber(l.total)] as const);
  const asks = cumulative(book.asks).map((l) => [toNumber(l.price), toNumber(l.total)] as const);
  const prices = [...bids, ...asks].map(([price]) => price);
  const low = Math.min(...prices);
  const high = Math.max(...prices);
  const top = Math.max(...[...bids, ...asks].map(([, total]) => total));
  const x = (price: number) => (high === low ? WIDTH / 2 : ((price - low) / (high - low)) * WIDTH);
  const y = (total: number) => HEIGHT - (total / top) * (HEIGHT - 8);
  const area = (points: (readonly [number, number])[]) => {
    if (points.length === 0) return "";
    let path = `M ${x(points[0][0])} ${HEIGHT}`;
    let last = HEIGHT;
    for (const [price, total] of points) {
      path += ` L ${x(price)} ${last} L ${x(price)} ${y(total)}`;
      last = y(total);
    }
    const end = points[points.length - 1][0];
    return `${path} L ${x(end)} ${HEIGHT} Z`;
  };
  return (
    <svg className="depth-chart" viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label="Depth chart">
      <path className="bid-area" d={area(bids)} />
      <path className="ask-area" d={area(asks)} />
    </svg>
  );
}
