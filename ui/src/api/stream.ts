// One WebSocket to `GET /v1/ws` for the whole app: authenticates by message (a browser cannot
// set headers on an upgrade), subscribes to what the screens ask for, resumes private channels
// with the last cursor after a reconnect, and says how fresh it is.

export type Connection = "connecting" | "live" | "reconnecting" | "stale" | "refused";

export interface Subscription {
  channel: "orders" | "fills" | "balances" | "book" | "trades" | "ticker";
  account?: string;
  symbol?: string;
}

/** A message from the server, as docs/api.md lists them. */
export interface Message {
  type: string;
  [field: string]: unknown;
}

type Listener = (message: Message) => void;

const PRIVATE = new Set(["orders", "fills", "balances"]);

function keyOf(subscription: Subscription): string {
  return `${subscription.channel}:${subscription.account ?? subscription.symbol ?? ""}`;
}

export class Stream {
  private socket?: WebSocket;
  private subscriptions = new Map<string, Subscription>();
  private listeners = new Set<Listener>();
  private stateListeners = new Set<(state: Connection) => void>();
  private cursor?: string;
  private nextId = 1;
  private attempts = 0;
  private heartbeatMs = 10_000;
  private lastMessage = 0;
  private retry?: ReturnType<typeof setTimeout>;
  private watchdog?: ReturnType<typeof setInterval>;
  private closed = false;
  state: Connection = "connecting";

  constructor(
    private readonly key: string,
    private readonly url = defaultUrl(),
  ) {}

  start(): void {
    this.closed = false;
    this.open();
    this.watchdog = setInterval(() => this.check(), 1_000);
  }

  stop(): void {
    this.closed = true;
    clearInterval(this.watchdog);
    clearTimeout(this.retry);
    this.socket?.close(1000);
  }

  onMessage(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener: (state: Connection) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  subscribe(subscription: Subscription): () => void {
    const key = keyOf(subscription);
    if (!this.subscriptions.has(key)) {
      this.subscriptions.set(key, subscription);
      if (this.state === "live" || this.state === "stale") this.send({ op: "subscribe", ...this.withCursor(subscription) });
    }
    return () => {
      if (this.subscriptions.delete(key) && (this.state === "live" || this.state === "stale")) {
        this.send({ op: "unsubscribe", ...subscription });
      }
    };
  }

  /** Subscribes again: a new book snapshot after a gap. */
  resubscribe(subscription: Subscription): void {
    if (this.state !== "live" && this.state !== "stale") return;
    this.send({ op: "unsubscribe", ...subscription });
    this.send({ op: "subscribe", ...subscription });
  }

  private withCursor(subscription: Subscription): Subscription & { cursor?: string } {
    return PRIVATE.has(subscription.channel) && this.cursor ? { ...subscription, cursor: this.cursor } : subscription;
  }

  private open(): void {
    this.setState(this.attempts === 0 ? "connecting" : "reconnecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ op: "auth", key: this.key }));
    socket.onmessage = (event) => this.receive(String(event.data));
    socket.onclose = (event) => {
      if (this.socket !== socket || this.closed) return;
      // 4003: the key is not (or no longer) valid; trying again cannot help.
      if (event.code === 4003) return this.setState("refused");
      this.setState("reconnecting");
      const delay = Math.min(10_000, 500 * 2 ** this.attempts) * (0.75 + Math.random() / 2);
      this.attempts += 1;
      this.retry = setTimeout(() => this.open(), delay);
    };
  }

  private receive(data: string): void {
    this.lastMessage = Date.now();
    let message: Message;
    try {
      message = JSON.parse(data) as Message;
    } catch {
      return;
    }
    if (message.type === "welcome") {
      this.attempts = 0;
      if (typeof message.heartbeat_ms === "number") this.heartbeatMs = message.heartbeat_ms;
      for (const subscription of this.subscriptions.values()) {
        this.send({ op: "subscribe", ...this.withCursor(subscription) });
      }
      this.setState("live");
    } else if (this.state === "stale") {
      this.setState("live");
    }
    if (typeof message.cursor === "string") this.cursor = message.cursor;
    for (const listener of this.listeners) listener(message);
  }

  /** Stale: nothing heard for two heartbeats while connected. */
  private check(): void {
    if (this.state === "live" && Date.now() - this.lastMessage > 2 * this.heartbeatMs) {
      this.setState("stale");
      this.send({ op: "ping" });
    }
  }

  private send(request: Record<string, unknown>): void {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ id: this.nextId++, ...request }));
    }
  }

  private setState(state: Connection): void {
    if (this.state === state) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }
}

function defaultUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/v1/ws`;
}
