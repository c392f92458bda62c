import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Stream } from "./stream";

/** A WebSocket stand-in: records what the client sends, lets the test play the server. */
class FakeSocket {
  static OPEN = 1;
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen?: () => void;
  onmessage?: (event: { data: string }) => void;
  onclose?: (event: { code: number }) => void;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  send(data: string) {
    this.sent.push(JSON.parse(data));
  }

  close() {}

  // The server's side.
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.();
  }

  push(message: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code });
  }

  requests(op: string) {
    return this.sent.filter((m) => m.op === op);
  }
}

const last = () => FakeSocket.all[FakeSocket.all.length - 1];

function connected(stream: Stream, heartbeatMs = 10_000) {
  last().open();
  last().push({ type: "welcome", key: "desk", heartbeat_ms: heartbeatMs, cursor: "0" });
  expect(stream.state).toBe("live");
}

describe("the stream connection", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeSocket.all = [];
    vi.stubGlobal("WebSocket", FakeSocket);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it("authenticates by message, then subscribes to what was asked before and after", () => {
    const stream = new Stream("oms_key", "ws://test/v1/ws");
    stream.subscribe({ channel: "orders", account: "alice" });
    stream.start();
    expect(stream.state).toBe("connecting");
    last().open();
    expect(last().sent[0]).toEqual({ op: "auth", key: "oms_key" });
    expect(last().requests("subscribe")).toHaveLength(0);
    last().push({ type: "welcome", heartbeat_ms: 10_000, cursor: "0" });
    stream.subscribe({ channel: "book", symbol: "BTC-USDT" });
    expect(last().requests("subscribe").map((m) => m.channel)).toEqual(["orders", "book"]);
    stream.stop();
  });

  it("reconnects after a drop and resumes private channels from the last cursor", () => {
    const stream = new Stream("oms_key", "ws://test/v1/ws");
    const seen: string[] = [];
    stream.onMessage((m) => seen.push(m.type));
    stream.subscribe({ channel: "orders", account: "alice" });
    stream.subscribe({ channel: "book", symbol: "BTC-USDT" });
    stream.start();
    connected(stream);
    last().push({ type: "order", cursor: "41", account: "alice", order: {} });
    last().push({ type: "heartbeat", cursor: "42" });
    last().drop(1006);
    expect(stream.state).toBe("reconnecting");
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(1_000);
    expect(FakeSocket.all).toHaveLength(2);
    connected(stream);
    const again = last().requests("subscribe");
    expect(again).toContainEqual(expect.objectContaining({ channel: "orders", account: "alice", cursor: "42" }));
    // A book starts over from a snapshot: no cursor.
    expect(again.find((m) => m.channel === "book")).not.toHaveProperty("cursor");
    expect(seen).toContain("order");
    stream.stop();
  });

  it("gives up on a refused key", () => {
    const stream = new Stream("oms_revoked", "ws://test/v1/ws");
    stream.start();
    connected(stream);
    last().drop(4003);
    expect(stream.state).toBe("refused");
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    stream.stop();
  });

  it("is stale after two silent heartbeats, and live again on the next message", () => {
    const stream = new Stream("oms_key", "ws://test/v1/ws");
    stream.start();
    connected(stream, 1_000);
    vi.advanceTimersByTime(1_500);
    expect(stream.state).toBe("live");
    vi.advanceTimersByTime(1_600);
    expect(stream.state).toBe("stale");
    expect(last().requests("ping")).toHaveLength(1);
    last().push({ type: "pong" });
    expect(stream.state).toBe("live");
    stream.stop();
  });

  it("unsubscribes what nobody uses any more", () => {
    const stream = new Stream("oms_key", "ws://test/v1/ws");
    stream.start();
    connected(stream);
    const off = stream.subscribe({ channel: "ticker", symbol: "ETH-USDT" });
    off();
    expect(last().requests("unsubscribe")).toEqual([expect.objectContaining({ channel: "ticker", symbol: "ETH-USDT" })]);
    stream.stop();
  });
});
