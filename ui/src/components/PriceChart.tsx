import { CandlestickSeries, ColorType, createChart, type ISeriesApi, type UTCTimestamp } from "lightweight-charts";
import { useEffect, useRef } from "react";
import type { Candle, MarketTrade } from "../api/types";
import { toNumber } from "../lib/decimal";
import { epochSeconds } from "../lib/time";

interface Bar {
  time: UTCTimestamp;
  open: number;
  high: number;
  low: number;
  close: number;
}

/** One-minute candles: the stored ones, then each live trade folded into its minute. */
export function PriceChart({ candles, trades, theme }: { candles: Candle[]; trades: MarketTrade[]; theme: string }) {
  const container = useRef<HTMLDivElement>(null);
  const series = useRef<ISeriesApi<"Candlestick"> | undefined>(undefined);

  useEffect(() => {
    if (!container.current) return;
    const style = getComputedStyle(document.documentElement);
    const made = createChart(container.current, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: style.getPropertyValue("--panel").trim() || "#111" },
        textColor: style.getPropertyValue("--text").trim() || "#ddd",
        attributionLogo: true,
      },
      grid: {
        vertLines: { color: style.getPropertyValue("--grid").trim() || "#333" },
        horzLines: { color: style.getPropertyValue("--grid").trim() || "#333" },
      },
      timeScale: {
        timeVisible: true,
        secondsVisible: false,
        rightOffset: 4,
        tickMarkFormatter: (time: number) =>
          new Date(time * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false }),
      },
      // Times are drawn in the browser's own zone.
      localization: {
        timeFormatter: (time: number) => new Date(time * 1000).toLocaleTimeString(undefined, { hour12: false }),
      },
    });
    series.current = made.addSeries(CandlestickSeries, {
      upColor: style.getPropertyValue("--up").trim() || "#2a9d5c",
      downColor: style.getPropertyValue("--down").trim() || "#d9534f",
      wickUpColor: style.getPropertyValue("--up").trim() || "#2a9d5c",
      wickDownColor: style.getPropertyValue("--down").trim() || "#d9534f",
      borderVisible: false,
    });
    return () => {
      made.remove();
      series.current = undefined;
    };
  }, [theme]);

  useEffect(() => {
    const map = new Map<number, Bar>();
    for (const candle of candles) {
      const time = epochSeconds(candle.start) as UTCTimestamp;
      map.set(time, {
        time,
        open: toNumber(candle.open),
        high: toNumber(candle.high),
        low: toNumber(candle.low),
        close: toNumber(candle.close),
      });
    }
    // Trades newer than the stored candles, oldest first.
    for (const trade of [...trades].reverse()) {
      const time = (Math.floor(epochSeconds(trade.executed_at) / 60) * 60) as UTCTimestamp;
      const price = toNumber(trade.price);
      const bar = map.get(time);
      map.set(
        time,
        bar
          ? { ...bar, high: Math.max(bar.high, price), low: Math.min(bar.low, price), close: price }
          : { time, open: price, high: price, low: price, close: price },
      );
    }
    series.current?.setData([...map.values()].sort((a, b) => a.time - b.time));
  }, [candles, trades, theme]);

  return <div className="price-chart" ref={container} aria-label="Price chart" role="img" />;
}
