// An order book kept from the stream: a snapshot, then updates that each name the sequence
// number of the one before. A gap means the book is no longer known: the caller subscribes
// again for a new snapshot.

import { add, compare, isZero } from "./decimal";

export type Level = [price: string, quantity: string];

export interface BookSnapshot {
  symbol: string;
  seq: number;
  bids: Level[];
  asks: Level[];
}

export interface BookUpdate {
  symbol: string;
  seq: number;
  prev_seq: number;
  bids: Level[];
  asks: Level[];
}

export interface Book {
  symbol: string;
  seq: number;
  /** Best (highest) first. */
  bids: Level[];
  /** Best (lowest) first. */
  asks: Level[];
}

export function fromSnapshot(snapshot: BookSnapshot): Book {
  return {
    symbol: snapshot.symbol,
    seq: snapshot.seq,
    bids: [...snapshot.bids],
    asks: [...snapshot.asks],
  };
}

/** Sets or removes (quantity "0") each changed level, keeping the side sorted best first. */
function merge(side: Level[], changes: Level[], bids: boolean): Level[] {
  const levels = new Map(side.map(([price, quantity]) => [price, quantity]));
  for (const [price, quantity] of changes) {
    // Prices may arrive as "100.5" and "100.50": key them by value.
    const existing = [...levels.keys()].find((known) => compare(known, price) === 0);
    if (existing !== undefined) levels.delete(existing);
    if (!isZero(quantity)) levels.set(price, quantity);
  }
  const sorted = [...levels.entries()].sort(([a], [b]) => compare(a, b));
  return (bids ? sorted.reverse() : sorted) as Level[];
}

/** The book after `update`, or "gap" if an update was missed. */
export function applyUpdate(book: Book, update: BookUpdate): Book | "gap" {
  if (update.prev_seq !== book.seq) return "gap";
  return {
    symbol: book.symbol,
    seq: update.seq,
    bids: merge(book.bids, update.bids, true),
    asks: merge(book.asks, update.asks, false),
  };
}

/** Each level with the quantity up to and including it, from the best price outwards. */
export function cumulative(levels: Level[]): { price: string; quantity: string; total: string }[] {
  let total = "0";
  return levels.map(([price, quantity]) => {
    total = add(total, quantity);
    return { price, quantity, total };
  });
}

/** Whether the best bid is at or above the best ask (never true of a correct book). */
export function crossed(book: Book): boolean {
  return book.bids.length > 0 && book.asks.length > 0 && compare(book.bids[0][0], book.asks[0][0]) >= 0;
}
