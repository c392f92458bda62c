import { useEffect, useMemo, useState } from "react";
import { Api } from "./api/client";
import { Stream, type Connection } from "./api/stream";
import type { Instrument, WhoAmI } from "./api/types";
import { Balances, Blotters } from "./components/Blotters";
import { DepthChart } from "./components/DepthChart";
import { Ladder } from "./components/Ladder";
import { MarketTrades } from "./components/MarketTrades";
import { OrderTicket } from "./components/OrderTicket";
import { PriceChart } from "./components/PriceChart";
import { SignIn } from "./components/SignIn";
import { TickerBar } from "./components/TickerBar";
import { decimalsOf } from "./lib/decimal";
import { zone } from "./lib/time";
import { useAccount } from "./state/account";
import { useMarket } from "./state/market";

// The key lives in sessionStorage only: gone when the tab closes, never in a URL or a log.
const KEY = "oms.key";

type Theme = "dark" | "light";

function initialTheme(): Theme {
  const saved = localStorage.getItem("oms.theme");
  const theme = saved === "dark" || saved === "light" ? saved : window.matchMedia?.("(prefers-color-scheme: light)").matches ? "light" : "dark";
  return applied(theme);
}

/** Sets the theme on the document at once: the charts read its colours while they render,
 * before any effect of this component would run. */
function applied(theme: Theme): Theme {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("oms.theme", theme);
  return theme;
}

export function App() {
  const [session, setSession] = useState<{ key: string; who: WhoAmI }>();
  const [checking, setChecking] = useState(() => sessionStorage.getItem(KEY) !== null);
  const [theme, setTheme] = useState<Theme>(initialTheme);

  // A reload keeps the session: check the stored key again.
  useEffect(() => {
    const key = sessionStorage.getItem(KEY);
    if (!key) return;
    new Api(key)
      .whoami()
      .then((who) => setSession({ key, who }))
      .catch(() => sessionStorage.removeItem(KEY))
      .finally(() => setChecking(false));
  }, []);

  const signIn = (key: string, who: WhoAmI) => {
    sessionStorage.setItem(KEY, key);
    setSession({ key, who });
  };
  const signOut = () => {
    sessionStorage.removeItem(KEY);
    setSession(undefined);
  };
  const toggleTheme = () => setTheme(applied(theme === "dark" ? "light" : "dark"));

  if (checking) return <p className="muted centered">Signing in…</p>;
  if (!session) return <SignIn onSignedIn={signIn} />;
  return <Desk session={session} theme={theme} onToggleTheme={toggleTheme} onSignOut={signOut} />;
}

function Desk({
  session,
  theme,
  onToggleTheme,
  onSignOut,
}: {
  session: { key: string; who: WhoAmI };
  theme: Theme;
  onToggleTheme: () => void;
  onSignOut: () => void;
}) {
  const api = useMemo(() => new Api(session.key), [session.key]);
  const stream = useMemo(() => new Stream(session.key), [session.key]);
  const [connection, setConnection] = useState<Connection>(stream.state);
  const [instruments, setInstruments] = useState<Instrument[]>([]);
  const [symbol, setSymbol] = useState<string>();
  const [account, setAccount] = useState(session.who.accounts[0]);
  const [picked, setPicked] = useState<{ price: string; at: number }>();

  useEffect(() => {
    const off = stream.onState(setConnection);
    stream.start();
    return () => {
      off();
      stream.stop();
    };
  }, [stream]);

  useEffect(() => {
    if (connection === "refused") onSignOut();
  }, [connection, onSignOut]);

  useEffect(() => {
    api.instruments().then((list) => {
      const sorted = [...list].sort((a, b) => a.symbol.localeCompare(b.symbol));
      setInstruments(sorted);
      setSymbol((s) => s ?? sorted[0]?.symbol);
    });
  }, [api]);

  const bySymbol = useMemo(() => new Map(instruments.map((i) => [i.symbol, i])), [instruments]);
  const instrument = symbol ? bySymbol.get(symbol) : undefined;
  const canTrade = session.who.scopes.includes("trade");

  return (
    <div className="desk">
      <header className="top">
        <strong className="brand">OMS</strong>
        <label>
          Market
          <select value={symbol ?? ""} onChange={(e) => setSymbol(e.target.value)} aria-label="Market">
            {instruments.map((i) => (
              <option key={i.symbol}>{i.symbol}</option>
            ))}
          </select>
        </label>
        <label>
          Account
          <select value={account} onChange={(e) => setAccount(e.target.value)} aria-label="Account">
            {session.who.accounts.map((a) => (
              <option key={a}>{a}</option>
            ))}
          </select>
        </label>
        <span className={`connection ${connection}`} role="status" aria-live="polite" data-testid="connection">
          {connection}
        </span>
        <span className="muted spacer">times in {zone()}</span>
        <span className="muted">key {session.who.id}</span>
        <button type="button" onClick={onToggleTheme} aria-label="Switch theme">
          {theme === "dark" ? "Light theme" : "Dark theme"}
        </button>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      {instrument && account ? (
        <Trading
          key={`${instrument.symbol}/${account}`}
          api={api}
          stream={stream}
          instrument={instrument}
          instruments={bySymbol}
          account={account}
          canTrade={canTrade}
          theme={theme}
          picked={picked}
          onPick={(price) => setPicked({ price, at: Date.now() })}
        />
      ) : (
        <p className="muted centered">{session.who.accounts.length === 0 ? "This key has no account." : "Loading markets…"}</p>
      )}
    </div>
  );
}

function Trading({
  api,
  stream,
  instrument,
  instruments,
  account,
  canTrade,
  theme,
  picked,
  onPick,
}: {
  api: Api;
  stream: Stream;
  instrument: Instrument;
  instruments: Map<string, Instrument>;
  account: string;
  canTrade: boolean;
  theme: string;
  picked?: { price: string; at: number };
  onPick: (price: string) => void;
}) {
  const market = useMarket(api, stream, instrument.symbol);
  const mine = useAccount(api, stream, account);
  const priceDecimals = decimalsOf(instrument.tick_size);
  const quantityDecimals = decimalsOf(instrument.lot_size);
  const balances = [...mine.balances.values()].sort((a, b) => a.asset.localeCompare(b.asset));

  return (
    <main className="grid">
      <section className="panel book" aria-label="Book">
        <h2>Book</h2>
        <Ladder book={market.book} priceDecimals={priceDecimals} quantityDecimals={quantityDecimals} onPick={onPick} />
        <DepthChart book={market.book} />
      </section>
      <section className="panel chart" aria-label="Market">
        <TickerBar ticker={market.ticker} priceDecimals={priceDecimals} base={instrument.base} />
        <PriceChart candles={market.candles} trades={market.trades} theme={theme} />
      </section>
      <section className="panel trades" aria-label="Trades">
        <h2>Trades</h2>
        <MarketTrades trades={market.trades} priceDecimals={priceDecimals} quantityDecimals={quantityDecimals} />
      </section>
      <section className="panel order" aria-label="Order entry">
        <h2>
          Order <span className="muted">{account}</span>
        </h2>
        <OrderTicket api={api} account={account} instrument={instrument} pickedPrice={picked} canTrade={canTrade} />
        <h2>Balances</h2>
        <Balances balances={balances} />
        {mine.error && (
          <p className="field-error" role="alert">
            {mine.error}
          </p>
        )}
      </section>
      <Blotters
        api={api}
        account={account}
        orders={mine.orders}
        fills={mine.fills}
        instruments={instruments}
        canTrade={canTrade}
      />
    </main>
  );
}
