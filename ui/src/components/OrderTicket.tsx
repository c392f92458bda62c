import { useEffect, useRef, useState, type FormEvent } from "react";
import { Api, ApiError, idempotencyKey } from "../api/client";
import type { Instrument } from "../api/types";
import { orderBody, validate, type Problems, type Ticket, type TicketField } from "../lib/validate";

const FIELDS: TicketField[] = ["price", "quantity", "quote_quantity", "time_in_force", "post_only"];

const initial: Ticket = {
  side: "buy",
  type: "limit",
  timeInForce: "gtc",
  price: "",
  quantity: "",
  quoteQuantity: "",
  byQuote: false,
  postOnly: false,
  selfTradePrevention: "none",
};

/**
 * The order ticket. Checked against the instrument's rules as the trader types; each
 * submission gets its own Idempotency-Key, kept for retries of the very same order after a
 * failure that may have been journaled (network, 503), so nothing is ever placed twice.
 */
export function OrderTicket({
  api,
  account,
  instrument,
  pickedPrice,
  canTrade,
}: {
  api: Api;
  account: string;
  instrument: Instrument;
  pickedPrice?: { price: string; at: number };
  canTrade: boolean;
}) {
  const [ticket, setTicket] = useState<Ticket>(initial);
  const [touched, setTouched] = useState<Partial<Record<TicketField, boolean>>>({});
  const [serverProblems, setServerProblems] = useState<Problems>({});
  const [status, setStatus] = useState<{ kind: "ok" | "error"; text: string }>();
  const [busy, setBusy] = useState(false);
  const inFlight = useRef(false);
  const retry = useRef<{ body: string; key: string } | undefined>(undefined);

  useEffect(() => {
    if (pickedPrice) setTicket((t) => ({ ...t, type: "limit", price: pickedPrice.price }));
  }, [pickedPrice]);

  useEffect(() => {
    setTicket((t) => ({ ...t, price: "", quantity: "", quoteQuantity: "" }));
    setTouched({});
    setServerProblems({});
  }, [instrument.symbol]);

  const problems = validate(ticket, instrument);
  const change = (patch: Partial<Ticket>, field?: TicketField) => {
    setTicket((t) => {
      const next = { ...t, ...patch };
      // Keep the time in force one the order type takes.
      if (patch.type === "market" && next.timeInForce === "gtc") next.timeInForce = "ioc";
      if (patch.type === "limit" && !patch.timeInForce) next.postOnly = next.postOnly && next.timeInForce === "gtc";
      return next;
    });
    if (field) {
      setTouched((t) => ({ ...t, [field]: true }));
      setServerProblems((p) => ({ ...p, [field]: undefined }));
    }
    setStatus(undefined);
  };

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setTouched(Object.fromEntries(FIELDS.map((f) => [f, true])));
    if (Object.keys(problems).length > 0 || inFlight.current) return;
    const body = orderBody(ticket);
    const text = JSON.stringify({ account, symbol: instrument.symbol, ...body });
    const key = retry.current?.body === text ? retry.current.key : idempotencyKey();
    inFlight.current = true;
    setBusy(true);
    setServerProblems({});
    try {
      const placed = await api.place(account, instrument.symbol, body, key);
      retry.current = undefined;
      setStatus({ kind: "ok", text: `Order ${placed.order_id} sent` });
    } catch (e) {
      const error = e as ApiError;
      // It may have been journaled: a retry of the same order must reuse the key.
      const uncertain = error.status === 0 || error.status >= 500 || error.code === "idempotency_key_in_use";
      retry.current = uncertain ? { body: text, key } : undefined;
      const field = error.field as TicketField | undefined;
      if (field && FIELDS.includes(field)) setServerProblems({ [field]: error.message });
      else setStatus({ kind: "error", text: uncertain ? `${error.message} (retry sends the same order)` : error.message });
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };

  const shown = (field: TicketField) => serverProblems[field] ?? (touched[field] ? problems[field] : undefined);
  const fieldProps = (field: TicketField) => ({
    "aria-invalid": shown(field) !== undefined,
    "aria-describedby": `${field}-error`,
  });
  const error = (field: TicketField) => (
    <span id={`${field}-error`} className="field-error" role="alert" data-testid={`${field}-error`}>
      {shown(field)}
    </span>
  );
  const quoteMode = ticket.type === "market" && ticket.side === "buy" && ticket.byQuote;

  return (
    <form className="ticket" onSubmit={submit} aria-label="Order ticket">
      <div className="segmented" role="group" aria-label="Side">
        {(["buy", "sell"] as const).map((side) => (
          <button
            key={side}
            type="button"
            className={`${side} ${ticket.side === side ? "active" : ""}`}
            aria-pressed={ticket.side === side}
            onClick={() => change({ side })}
          >
            {side === "buy" ? "Buy" : "Sell"}
          </button>
        ))}
      </div>
      <div className="row">
        <label>
          Type
          <select value={ticket.type} onChange={(e) => change({ type: e.target.value as Ticket["type"] })}>
            <option value="limit">Limit</option>
            <option value="market">Market</option>
          </select>
        </label>
        <label>
          Time in force
          <select
            value={ticket.timeInForce}
            onChange={(e) => change({ timeInForce: e.target.value as Ticket["timeInForce"] }, "time_in_force")}
            {...fieldProps("time_in_force")}
          >
            {ticket.type === "limit" && <option value="gtc">GTC</option>}
            <option value="ioc">IOC</option>
            <option value="fok">FOK</option>
          </select>
        </label>
      </div>
      {error("time_in_force")}
      {ticket.type === "limit" && (
        <label>
          Price ({instrument.quote})
          <input
            name="price"
            inputMode="decimal"
            autoComplete="off"
            placeholder={`tick ${instrument.tick_size}`}
            value={ticket.price}
            onChange={(e) => change({ price: e.target.value }, "price")}
            {...fieldProps("price")}
          />
          {error("price")}
        </label>
      )}
      {ticket.type === "market" && ticket.side === "buy" && (
        <label className="check">
          <input type="checkbox" checked={ticket.byQuote} onChange={(e) => change({ byQuote: e.target.checked, timeInForce: "ioc" })} />
          Size by amount of {instrument.quote}
        </label>
      )}
      {quoteMode ? (
        <label>
          Amount ({instrument.quote})
          <input
            name="quote_quantity"
            inputMode="decimal"
            autoComplete="off"
            value={ticket.quoteQuantity}
            onChange={(e) => change({ quoteQuantity: e.target.value }, "quote_quantity")}
            {...fieldProps("quote_quantity")}
          />
          {error("quote_quantity")}
        </label>
      ) : (
        <label>
          Quantity ({instrument.base})
          <input
            name="quantity"
            inputMode="decimal"
            autoComplete="off"
            placeholder={`lot ${instrument.lot_size}, min ${instrument.min_quantity}`}
            value={ticket.quantity}
            onChange={(e) => change({ quantity: e.target.value }, "quantity")}
            {...fieldProps("quantity")}
          />
          {error("quantity")}
        </label>
      )}
      <div className="row">
        <label className="check">
          <input
            type="checkbox"
            name="post_only"
            checked={ticket.postOnly}
            disabled={ticket.type !== "limit"}
            onChange={(e) => change({ postOnly: e.target.checked }, "post_only")}
          />
          Post-only
        </label>
        <label>
          Self-trade
          <select
            value={ticket.selfTradePrevention}
            onChange={(e) => change({ selfTradePrevention: e.target.value as Ticket["selfTradePrevention"] })}
          >
            <option value="none">allow</option>
            <option value="expire_taker">cancel newest</option>
            <option value="expire_maker">cancel oldest</option>
            <option value="expire_both">cancel both</option>
          </select>
        </label>
      </div>
      {error("post_only")}
      <button type="submit" className={`submit ${ticket.side}`} disabled={busy || !canTrade}>
        {busy ? "Sending…" : `${ticket.side === "buy" ? "Buy" : "Sell"} ${instrument.base}`}
      </button>
      {!canTrade && <p className="muted">This key may not trade.</p>}
      <p className={`status ${status?.kind ?? ""}`} role="status" data-testid="ticket-status">
        {status?.text}
      </p>
    </form>
  );
}
