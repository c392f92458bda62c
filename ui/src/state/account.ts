// An account's orders, fills and balances: read once from the REST API, then kept live from
// the stream. Whichever arrives first, the newer state wins: orders by their version,
// balances by ledger sequence, fills by trade.

import { useEffect, useMemo, useReducer } from "react";
import type { Api } from "../api/client";
import type { Message, Stream } from "../api/stream";
import type { Balance, Fill, Order } from "../api/types";
import { add } from "../lib/decimal";

export interface AccountState {
  orders: Map<string, Order>;
  fills: Fill[];
  balances: Map<string, Balance & { seq: number }>;
  error?: string;
}

type Action =
  | { kind: "loaded"; orders: Order[]; fills: Fill[]; balances: Balance[]; since: number }
  | { kind: "order"; order: Order }
  | { kind: "fill"; fill: Fill }
  | { kind: "balance"; asset: string; available: string; held: string; seq: number }
  | { kind: "failed"; error: string };

const empty = (): AccountState => ({ orders: new Map(), fills: [], balances: new Map() });

function fillKey(fill: Fill): string {
  return `${fill.symbol}/${fill.trade_id}/${fill.order_id}`;
}

export function mergeOrder(orders: Map<string, Order>, order: Order): Map<string, Order> {
  const known = orders.get(order.order_id);
  if (known && known.version >= order.version) return orders;
  return new Map(orders).set(order.order_id, order);
}

export function mergeFills(fills: Fill[], more: Fill[]): Fill[] {
  const seen = new Set(fills.map(fillKey));
  const fresh = more.filter((fill) => !seen.has(fillKey(fill)));
  if (fresh.length === 0) return fills;
  return [...fresh, ...fills].sort((a, b) => b.executed_at.localeCompare(a.executed_at) || b.trade_id - a.trade_id);
}

function reduce(state: AccountState, action: Action): AccountState {
  switch (action.kind) {
    case "loaded": {
      let orders = state.orders;
      for (const order of action.orders) orders = mergeOrder(orders, order);
      const balances = new Map(state.balances);
      for (const balance of action.balances) {
        // A stream entry newer than the request is newer than this answer.
        const known = balances.get(balance.asset);
        if (!known || known.seq < action.since) balances.set(balance.asset, { ...balance, seq: -1 });
      }
      return { orders, fills: mergeFills(state.fills, action.fills), balances };
    }
    case "order":
      return { ...state, orders: mergeOrder(state.orders, action.order) };
    case "fill":
      return { ...state, fills: mergeFills(state.fills, [action.fill]) };
    case "balance": {
      const known = state.balances.get(action.asset);
      if (known && known.seq >= action.seq) return state;
      const balance = {
        asset: action.asset,
        available: action.available,
        held: action.held,
        total: add(action.available, action.held),
        seq: action.seq,
      };
      return { ...state, balances: new Map(state.balances).set(action.asset, balance) };
    }
    case "failed":
      return { ...state, error: action.error };
  }
}

/** The newest ledger sequence number seen on the stream per account, so that a REST answer
 * requested before a streamed entry does not undo it. */
const streamed = new Map<string, number>();

export function useAccount(api: Api, stream: Stream, account: string): AccountState & { reload: () => void } {
  const [state, dispatch] = useReducer(reduce, undefined, empty);
  const reload = useMemo(
    () => () => {
      const since = streamed.get(account) ?? 0;
      Promise.all([api.orders(account, "open"), api.orders(account), api.fills(account), api.balances(account)])
        .then(([open, recent, fills, balances]) =>
          dispatch({
            kind: "loaded",
            orders: [...open.orders, ...recent.orders],
            fills: fills.trades,
            balances: balances.balances,
            since,
          }),
        )
        .catch((error: Error) => dispatch({ kind: "failed", error: error.message }));
    },
    [api, account],
  );

  useEffect(() => {
    const off = stream.onMessage((message: Message) => {
      if (message.account !== account) return;
      if (message.type === "order") dispatch({ kind: "order", order: message.order as Order });
      else if (message.type === "fill") dispatch({ kind: "fill", fill: message.fill as Fill });
      else if (message.type === "balance") {
        const entry = message.entry as { seq: number; asset: string; available: string; held: string };
        streamed.set(account, Math.max(streamed.get(account) ?? 0, entry.seq));
        // The entry has a `kind` of its own (hold, trade, ...): pick the fields.
        const { seq, asset, available, held } = entry;
        dispatch({ kind: "balance", seq, asset, available, held });
      } else if (message.type === "resync") reload();
    });
    const subscriptions = (["orders", "fills", "balances"] as const).map((channel) =>
      stream.subscribe({ channel, account }),
    );
    reload();
    return () => {
      off();
      subscriptions.forEach((unsubscribe) => unsubscribe());
    };
  }, [stream, account, reload]);

  return { ...state, reload };
}
