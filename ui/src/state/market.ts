// One instrument's market data: the book from its snapshot and updates (subscribing again on a
// gap), public trades, the ticker and one-minute candles; all read again after a reconnect.

import { useEffect, useRef, useState } from "react";
import type { Api } from "../api/client";
import type { Connection, Stream } from "../api/stream";
import type { Candle, MarketTrade, Ticker } from "../api/types";
import { applyUpdate, fromSnapshot, type Book, type BookSnapshot, type BookUpdate } from "../lib/book";

export interface MarketState {
  book?: Book;
  trades: MarketTrade[];
  ticker?: Ticker;
  candles: Candle[];
  /** Book gaps seen (each answered by a new snapshot). */
  resyncs: number;
}

const KEEP_TRADES = 100;

export function useMarket(api: Api, stream: Stream, symbol: string): MarketState {
  const [state, setState] = useState<MarketState>({ trades: [], candles: [], resyncs: 0 });
  const book = useRef<Book | undefined>(undefined);

  useEffect(() => {
    let alive = true;
    book.current = undefined;
    setState({ trades: [], candles: [], resyncs: 0 });
    const readRest = () => {
      api.marketTrades(symbol, KEEP_TRADES).then((trades) => alive && setState((s) => ({ ...s, trades })), () => {});
      api.ticker(symbol).then((ticker) => alive && setState((s) => ({ ...s, ticker })), () => {});
      api.candles(symbol).then((candles) => alive && setState((s) => ({ ...s, candles })), () => {});
    };
    const off = stream.onMessage((message) => {
      if (message.symbol !== symbol && (message.ticker as Ticker | undefined)?.symbol !== symbol) return;
      switch (message.type) {
        case "book_snapshot":
          book.current = fromSnapshot(message as unknown as BookSnapshot);
          setState((s) => ({ ...s, book: book.current }));
          break;
        case "book_update": {
          if (!book.current) return;
          const next = applyUpdate(book.current, message as unknown as BookUpdate);
          if (next === "gap") {
            book.current = undefined;
            stream.resubscribe({ channel: "book", symbol });
            setState((s) => ({ ...s, resyncs: s.resyncs + 1 }));
          } else {
            book.current = next;
            setState((s) => ({ ...s, book: next }));
          }
          break;
        }
        case "trade": {
          const trade = message.trade as MarketTrade;
          setState((s) =>
            s.trades.some((t) => t.trade_id === trade.trade_id)
              ? s
              : { ...s, trades: [trade, ...s.trades].slice(0, KEEP_TRADES) },
          );
          break;
        }
        case "ticker":
          setState((s) => ({ ...s, ticker: message.ticker as Ticker }));
          break;
      }
    });
    const offState = stream.onState((connection: Connection) => {
      if (connection === "live") readRest();
    });
    const subscriptions = (["book", "trades", "ticker"] as const).map((channel) => stream.subscribe({ channel, symbol }));
    readRest();
    return () => {
      alive = false;
      off();
      offState();
      subscriptions.forEach((unsubscribe) => unsubscribe());
    };
  }, [api, stream, symbol]);

  return state;
}
