import { useState, type KeyboardEvent } from "react";
import { Api, ApiError, idempotencyKey } from "../api/client";
import type { Balance, Fill, Instrument, Order } from "../api/types";
import { decimalsOf, format } from "../lib/decimal";
import { shortTime } from "../lib/time";
import { Head } from "./Head";

type Tab = "open" | "history" | "fills";

const OPEN = new Set(["new", "partially_filled"]);

function digits(instruments: Map<string, Instrument>, symbol: string) {
  const instrument = instruments.get(symbol);
  return {
    price: instrument ? decimalsOf(instrument.tick_size) : undefined,
    quantity: instrument ? decimalsOf(instrument.lot_size) : undefined,
  };
}

/** Open orders, order history and fills, one tab at a time. */
export function Blotters({
  api,
  account,
  orders,
  fills,
  instruments,
  canTrade,
}: {
  api: Api;
  account: string;
  orders: Map<string, Order>;
  fills: Fill[];
  instruments: Map<string, Instrument>;
  canTrade: boolean;
}) {
  const [tab, setTab] = useState<Tab>("open");
  const all = [...orders.values()].sort(
    (a, b) =>
      b.created_at.localeCompare(a.created_at) ||
      b.order_id.length - a.order_id.length ||
      b.order_id.localeCompare(a.order_id),
  );
  const open = all.filter((order) => OPEN.has(order.status));
  const history = all.filter((order) => !OPEN.has(order.status));
  const tabs: [Tab, string][] = [
    ["open", `Open orders (${open.length})`],
    ["history", "Order history"],
    ["fills", "Fills"],
  ];
  // The tab list is one stop for Tab; the arrow keys move between its tabs (WAI-ARIA tabs).
  const arrows = (event: KeyboardEvent) => {
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (step === 0) return;
    const index = tabs.findIndex(([id]) => id === tab);
    const next = tabs[(index + step + tabs.length) % tabs.length][0];
    setTab(next);
    document.getElementById(`tab-${next}`)?.focus();
  };
  return (
    <section className="panel blotters" aria-label="Orders and fills">
      <div role="tablist" className="tabs" onKeyDown={arrows}>
        {tabs.map(([id, label]) => (
          <button
            key={id}
            role="tab"
            id={`tab-${id}`}
            aria-selected={tab === id}
            aria-controls={`tabpanel-${id}`}
            tabIndex={tab === id ? 0 : -1}
            className={tab === id ? "active" : ""}
            onClick={() => setTab(id)}
          >
            {label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`tabpanel-${tab}`} aria-labelledby={`tab-${tab}`} className="tab-body">
        {tab === "open" && (
          <OpenOrders api={api} account={account} orders={open} instruments={instruments} canTrade={canTrade} />
        )}
        {tab === "history" && <History orders={history} instruments={instruments} />}
        {tab === "fills" && <Fills fills={fills} instruments={instruments} />}
      </div>
    </section>
  );
}

function OpenOrders({
  api,
  account,
  orders,
  instruments,
  canTrade,
}: {
  api: Api;
  account: string;
  orders: Order[];
  instruments: Map<string, Instrument>;
  canTrade: boolean;
}) {
  const [message, setMessage] = useState<string>();
  const cancelAll = async () => {
    setMessage(undefined);
    try {
      await api.cancelAll(account, undefined, idempotencyKey());
    } catch (e) {
      setMessage((e as Error).message);
    }
  };
  return (
    <>
      <div className="toolbar">
        <button type="button" onClick={cancelAll} disabled={!canTrade || orders.length === 0}>
          Cancel all
        </button>
        <span className="field-error" role="alert">
          {message}
        </span>
      </div>
      {orders.length === 0 ? (
        <p className="muted">No open orders.</p>
      ) : (
        <table aria-label="Open orders">
          <Head columns={["Time", "Symbol", "Side", ["Price", "num"], ["Quantity", "num"], ["Filled", "num"], "Status", ""]} />
          <tbody>
            {orders.map((order) => (
              <OpenRow key={order.order_id} api={api} order={order} instruments={instruments} canTrade={canTrade} />
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function OpenRow({
  api,
  order,
  instruments,
  canTrade,
}: {
  api: Api;
  order: Order;
  instruments: Map<string, Instrument>;
  canTrade: boolean;
}) {
  const [editing, setEditing] = useState(false);
  const [price, setPrice] = useState(order.price ?? "");
  const [quantity, setQuantity] = useState(order.quantity);
  const [error, setError] = useState<{ field?: string; text: string }>();
  const [busy, setBusy] = useState(false);
  const d = digits(instruments, order.symbol);

  const save = async () => {
    const change: { price?: string; quantity?: string } = {};
    if (price.trim() !== (order.price ?? "")) change.price = price.trim();
    if (quantity.trim() !== order.quantity) change.quantity = quantity.trim();
    if (Object.keys(change).length === 0) return setEditing(false);
    setBusy(true);
    try {
      await api.amend(order.order_id, change, idempotencyKey());
      setEditing(false);
      setError(undefined);
    } catch (e) {
      const failure = e as ApiError;
      setError({ field: failure.field, text: failure.message });
    } finally {
      setBusy(false);
    }
  };
  const cancel = async () => {
    try {
      await api.cancel(order.order_id, idempotencyKey());
    } catch (e) {
      setError({ text: (e as Error).message });
    }
  };
  const keys = (event: KeyboardEvent) => {
    if (event.key === "Enter") void save();
    if (event.key === "Escape") {
      setEditing(false);
      setError(undefined);
    }
  };
  const startEditing = () => {
    setPrice(order.price ?? "");
    setQuantity(order.quantity);
    setEditing(true);
  };

  return (
    <tr data-testid="open-order" data-order-id={order.order_id}>
      <td className="muted">{shortTime(order.created_at)}</td>
      <td>{order.symbol}</td>
      <td className={order.side === "buy" ? "up" : "down"}>{order.side}</td>
      <td className="num">
        {editing ? (
          <input
            aria-label="New price"
            className="inline"
            value={price}
            autoFocus
            onChange={(e) => setPrice(e.target.value)}
            onKeyDown={keys}
            aria-invalid={error?.field === "price"}
          />
        ) : order.price ? (
          format(order.price, d.price)
        ) : (
          "market"
        )}
      </td>
      <td className="num">
        {editing ? (
          <input
            aria-label="New quantity"
            className="inline"
            value={quantity}
            onChange={(e) => setQuantity(e.target.value)}
            onKeyDown={keys}
            aria-invalid={error?.field === "quantity"}
          />
        ) : (
          format(order.quantity, d.quantity)
        )}
      </td>
      <td className="num">{format(order.filled_quantity, d.quantity)}</td>
      <td>
        {order.status}
        {error && (
          <span className="field-error" role="alert">
            {" "}
            {error.text}
          </span>
        )}
      </td>
      <td className="actions">
        {editing ? (
          <>
            <button type="button" onClick={save} disabled={busy}>
              Save
            </button>
            <button type="button" onClick={() => setEditing(false)}>
              Back
            </button>
          </>
        ) : (
          <>
            <button type="button" onClick={startEditing} disabled={!canTrade}>
              Amend
            </button>
            <button type="button" onClick={cancel} disabled={!canTrade}>
              Cancel
            </button>
          </>
        )}
      </td>
    </tr>
  );
}

function History({ orders, instruments }: { orders: Order[]; instruments: Map<string, Instrument> }) {
  if (orders.length === 0) return <p className="muted">No finished orders yet.</p>;
  return (
    <table aria-label="Order history">
      <Head
        columns={["Updated", "Symbol", "Side", "Type", ["Price", "num"], ["Quantity", "num"], ["Filled", "num"], ["Average", "num"], "Status"]}
      />
      <tbody>
        {orders.map((order) => {
          const d = digits(instruments, order.symbol);
          const reason = order.reject_reason ?? order.expire_reason;
          return (
            <tr key={order.order_id} data-testid="history-order">
              <td className="muted">{shortTime(order.updated_at)}</td>
              <td>{order.symbol}</td>
              <td className={order.side === "buy" ? "up" : "down"}>{order.side}</td>
              <td>{order.type}</td>
              <td className="num">{order.price ? format(order.price, d.price) : "—"}</td>
              <td className="num">{format(order.quantity, d.quantity)}</td>
              <td className="num">{format(order.filled_quantity, d.quantity)}</td>
              <td className="num">{order.average_price ? format(order.average_price, d.price) : "—"}</td>
              <td>
                {order.status}
                {reason && <span className="muted"> ({reason})</span>}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function Fills({ fills, instruments }: { fills: Fill[]; instruments: Map<string, Instrument> }) {
  if (fills.length === 0) return <p className="muted">No fills yet.</p>;
  return (
    <table aria-label="Fills">
      <Head columns={["Time", "Symbol", "Side", ["Price", "num"], ["Quantity", "num"], "Liquidity", ["Fee", "num"]]} />
      <tbody>
        {fills.map((fill) => {
          const d = digits(instruments, fill.symbol);
          return (
            <tr key={`${fill.symbol}/${fill.trade_id}/${fill.order_id}`} data-testid="fill">
              <td className="muted">{shortTime(fill.executed_at)}</td>
              <td>{fill.symbol}</td>
              <td className={fill.side === "buy" ? "up" : "down"}>{fill.side}</td>
              <td className="num">{format(fill.price, d.price)}</td>
              <td className="num">{format(fill.quantity, d.quantity)}</td>
              <td>{fill.liquidity}</td>
              <td className="num" data-testid="fill-fee">
                {format(fill.fee)} {fill.fee_asset}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** Available and held per asset. */
export function Balances({ balances }: { balances: (Balance & { seq: number })[] }) {
  if (balances.length === 0) return <p className="muted">No balances.</p>;
  return (
    <table className="compact" aria-label="Balances">
      <Head columns={["Asset", ["Available", "num"], ["Held", "num"]]} />
      <tbody>
        {balances.map((balance) => (
          <tr key={balance.asset} data-testid={`balance-${balance.asset}`}>
            <td>{balance.asset}</td>
            <td className="num" data-testid="available">
              {format(balance.available)}
            </td>
            <td className="num" data-testid="held">
              {format(balance.held)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

