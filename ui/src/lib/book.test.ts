import { describe, expect, it } from "vitest";
import { applyUpdate, crossed, cumulative, fromSnapshot, type Book } from "./book";

const snapshot = {
  symbol: "BTC-USDT",
  seq: 10,
  bids: [
    ["100.00", "1"],
    ["99.00", "2"],
  ] as [string, string][],
  asks: [
    ["101.00", "1.5"],
    ["102.00", "3"],
  ] as [string, string][],
};

describe("book from the stream", () => {
  it("applies updates in sequence: sets, adds and removes levels, best first", () => {
    const book = fromSnapshot(snapshot);
    const next = applyUpdate(book, {
      symbol: "BTC-USDT",
      seq: 12,
      prev_seq: 10,
      bids: [
        ["100.5", "0.5"],
        ["99.00", "0"],
      ],
      asks: [["101.00", "0.25"]],
    }) as Book;
    expect(next.seq).toBe(12);
    expect(next.bids).toEqual([
      ["100.5", "0.5"],
      ["100.00", "1"],
    ]);
    expect(next.asks).toEqual([
      ["101.00", "0.25"],
      ["102.00", "3"],
    ]);
    // The snapshot is left as it was.
    expect(book.bids).toHaveLength(2);
  });

  it("treats the same price written two ways as one level", () => {
    const next = applyUpdate(fromSnapshot(snapshot), {
      symbol: "BTC-USDT",
      seq: 11,
      prev_seq: 10,
      bids: [["100", "4"]],
      asks: [],
    }) as Book;
    expect(next.bids).toEqual([
      ["100", "4"],
      ["99.00", "2"],
    ]);
  });

  it("reports a gap when an update does not follow the last one", () => {
    expect(applyUpdate(fromSnapshot(snapshot), { symbol: "BTC-USDT", seq: 13, prev_seq: 11, bids: [], asks: [] })).toBe("gap");
  });

  it("sums depth outwards from the best price", () => {
    expect(cumulative(snapshot.asks)).toEqual([
      { price: "101.00", quantity: "1.5", total: "1.5" },
      { price: "102.00", quantity: "3", total: "4.5" },
    ]);
    expect(crossed(fromSnapshot(snapshot))).toBe(false);
  });
});
