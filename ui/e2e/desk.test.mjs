// End to end: the built UI in a real headless Chromium (Debian's, driven by playwright-core)
// against a real single-node oms-runtime started here. Run by scripts/check-ui, which builds
// both and passes:
//   OMS_RUNTIME      the oms-runtime binary
//   OMS_UI_DIST      the built UI (ui/dist)
//   OMS_SCREENSHOTS  where the screenshots go
//   CHROMIUM         the browser (default /usr/bin/chromium)
// Any console error or uncaught exception in the page fails the run.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const RUNTIME = process.env.OMS_RUNTIME;
const DIST = process.env.OMS_UI_DIST;
const SHOTS = process.env.OMS_SCREENSHOTS ?? join(tmpdir(), "oms-ui-screenshots");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
assert.ok(RUNTIME && DIST, "set OMS_RUNTIME and OMS_UI_DIST (scripts/check-ui does)");

const SYMBOL = "BTC-USDT";
const dir = mkdtempSync(join(tmpdir(), "oms-ui-e2e-"));
let server;
let browser;
let page;
let base;
const keys = {};
const problems = [];
// Refusals the test provokes: the browser logs each failed request as a console error.
let expectedHttpErrors = 0;

let ports;

/** Starts oms-runtime on `ports` with the test's data and keys; resolves once it is ready. */
async function startServer() {
  const [apiPort, adminPort] = ports;
  server = spawn(
    RUNTIME,
    [
      "--api-addr", `127.0.0.1:${apiPort}`,
      "--admin-addr", `127.0.0.1:${adminPort}`,
      "--data-dir", join(dir, "data"),
      "--api-keys-file", join(dir, "keys.json"),
      "--ui-dir", DIST,
      // Heartbeats every second, so a silent server shows as stale within seconds.
      "--stream-heartbeat", "1s",
    ],
    { env: { ...process.env, OMS_LOG: "warn" }, stdio: ["ignore", "ignore", "inherit"] },
  );
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok) return;
    } catch {}
    assert.ok(i < 600 && server.exitCode === null, "oms-runtime did not become ready");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function stopServer() {
  const exited = new Promise((resolve) => server.once("exit", resolve));
  server.kill("SIGTERM");
  await exited;
}

function freePort() {
  return new Promise((resolve) => {
    const socket = createServer().listen(0, "127.0.0.1", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

function keygen(id, accounts, scopes) {
  return execFileSync(
    RUNTIME,
    ["keygen", "--id", id, "--accounts", accounts, "--scopes", scopes, "--keys-file", join(dir, "keys.json")],
    { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
  ).trim();
}

async function api(key, method, path, body) {
  const headers = { Authorization: `Bearer ${key}`, Prefer: "wait=5" };
  if (method !== "GET") headers["Idempotency-Key"] = crypto.randomUUID();
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** The text of a balance cell of the signed-in account. */
function balance(asset, column) {
  return page.getByTestId(`balance-${asset}`).getByTestId(column);
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  keys.alice = keygen("alice-desk", "alice", "read,trade");
  keys.bob = keygen("bob-bot", "bob", "read,trade");
  keys.treasury = keygen("treasury", "alice,bob", "read,funds");
  ports = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${ports[0]}`;
  await startServer();
  for (const account of ["alice", "bob"]) {
    for (const [asset, amount] of [["USDT", "100000"], ["BTC", "10"]]) {
      await api(keys.treasury, "POST", "/v1/deposits", { account, asset, amount });
    }
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Root in CI has no sandbox; the rest keeps Chromium off a network this machine lacks.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    timezoneId: "Europe/Berlin",
    colorScheme: "dark",
  });
  page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (expectedHttpErrors > 0 && message.text().startsWith("Failed to load resource")) {
      expectedHttpErrors -= 1;
      return;
    }
    problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.stack ?? error.message}`));
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(problems, [], "the page logged errors");
});

test("a wrong key is refused", async () => {
  await page.goto(base + "/");
  await shot("01-sign-in");
  await page.getByLabel("API key").fill("oms_not_a_key");
  expectedHttpErrors += 1;
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("This key is not valid.").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("oms.key")), null);
});

test("signing in shows the desk, live", async () => {
  await page.getByLabel("API key").fill(keys.alice);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("connection").getByText("live").waitFor();
  await page.getByTestId("balance-USDT").getByText("100 000").waitFor();
  // The key is in this tab's session storage, and nowhere in the address.
  assert.equal(await page.evaluate(() => sessionStorage.getItem("oms.key")), keys.alice);
  assert.ok(!page.url().includes(keys.alice));
});

test("a limit order shows in open orders and on the ladder", async () => {
  const ticket = page.getByRole("form", { name: "Order ticket" });
  await ticket.getByLabel("Price (USDT)").fill("60000");
  await ticket.getByLabel("Quantity (BTC)").fill("0.5");
  // A double click is one order: one submission, one Idempotency-Key.
  const posts = [];
  const count = (request) => request.method() === "POST" && request.url().endsWith("/v1/orders") && posts.push(request);
  page.on("request", count);
  await ticket.getByRole("button", { name: "Buy BTC" }).dblclick();
  await page.getByTestId("open-order").first().waitFor();
  await page.getByTestId("bid-level").filter({ hasText: "60 000.00" }).filter({ hasText: "0.50000" }).waitFor();
  page.off("request", count);
  assert.equal(posts.length, 1, "a double click sent one order");
  assert.equal(await page.getByTestId("open-order").count(), 1);
  await balance("USDT", "held").getByText("30 000").waitFor();
  await balance("USDT", "available").getByText("70 000").waitFor();
  await shot("02-resting-order");
});

test("a fill from another account shows with its fee, and both balances change", async () => {
  await api(keys.bob, "POST", "/v1/orders", {
    account: "bob", symbol: SYMBOL, side: "sell", type: "limit", price: "60000", quantity: "0.2", time_in_force: "ioc",
  });
  await page.getByRole("tab", { name: "Fills" }).click();
  const fill = page.getByTestId("fill").first();
  await fill.waitFor();
  // Maker fee 10 bps of the 0.2 BTC received, in BTC.
  await fill.getByTestId("fill-fee").getByText("0.0002 BTC").waitFor();
  await fill.getByText("maker").waitFor();
  // 10 + 0.2 - 0.0002 BTC; USDT: 30,000 held less the 12,000 paid.
  await balance("BTC", "available").getByText("10.1998").waitFor();
  await balance("USDT", "held").getByText("18 000").waitFor();
  await page.getByTestId("last-price").getByText("60 000.00").waitFor();
  await page.getByRole("tab", { name: /Open orders/ }).click();
  await page.getByTestId("open-order").getByText("partially_filled").waitFor();
  await shot("03-after-fill");
});

test("amending an order inline moves it on the ladder", async () => {
  const row = page.getByTestId("open-order").first();
  await row.getByRole("button", { name: "Amend" }).click();
  const price = row.getByLabel("New price");
  await price.fill("59990");
  await price.press("Enter");
  await page.getByTestId("open-order").getByText("59 990.00").waitFor();
  await page.getByTestId("bid-level").filter({ hasText: "59 990.00" }).waitFor();
  assert.equal(await page.getByTestId("bid-level").filter({ hasText: "60 000.00" }).count(), 0);
});

test("an off-tick price is caught before sending; the API's own refusal shows at the field", async () => {
  const ticket = page.getByRole("form", { name: "Order ticket" });
  const sent = [];
  const count = (request) => request.method() === "POST" && request.url().endsWith("/v1/orders") && sent.push(request);
  page.on("request", count);
  await ticket.getByLabel("Price (USDT)").fill("60000.005");
  await ticket.getByLabel("Quantity (BTC)").fill("0.1");
  await ticket.getByRole("button", { name: "Buy BTC" }).click();
  await ticket.getByTestId("price-error").getByText("not a multiple of the tick size 0.01").waitFor();
  assert.equal(sent.length, 0, "nothing was sent");
  page.off("request", count);

  // With a stale copy of the instrument (tick 0.001, as if the server's had changed since the
  // page loaded), the order goes out and the server's message lands next to the price.
  await page.route("**/v1/instruments", async (route) => {
    const response = await route.fetch();
    const instruments = (await response.json()).map((i) => (i.symbol === SYMBOL ? { ...i, tick_size: "0.001" } : i));
    await route.fulfill({ response, json: instruments });
  });
  await page.reload();
  await page.getByTestId("connection").getByText("live").waitFor();
  await ticket.getByLabel("Price (USDT)").fill("60000.005");
  await ticket.getByLabel("Quantity (BTC)").fill("0.1");
  expectedHttpErrors += 1;
  await ticket.getByRole("button", { name: "Buy BTC" }).click();
  await ticket.getByTestId("price-error").getByText("price: price is not a multiple of the tick size").waitFor();
  await shot("04-api-error-at-field");
  await page.unroute("**/v1/instruments");
  await page.reload();
  await page.getByTestId("connection").getByText("live").waitFor();
});

test("cancel all empties open orders and releases the holds", async () => {
  const ticket = page.getByRole("form", { name: "Order ticket" });
  await ticket.getByRole("button", { name: "Sell" }).click();
  await ticket.getByLabel("Price (USDT)").fill("65000");
  await ticket.getByLabel("Quantity (BTC)").fill("1");
  await ticket.getByRole("button", { name: "Sell BTC" }).click();
  await page.getByTestId("open-order").nth(1).waitFor();
  await balance("BTC", "held").getByText("1").waitFor();
  await page.getByRole("button", { name: "Cancel all" }).click();
  await page.getByText("No open orders.").waitFor();
  await balance("USDT", "held").getByText(/^0$/).waitFor();
  await balance("BTC", "held").getByText(/^0$/).waitFor();
  await page.getByRole("tab", { name: "Order history" }).click();
  await page.getByTestId("history-order").filter({ hasText: "canceled" }).first().waitFor();
  await shot("05-history");
});

test("the light theme and the keyboard", async () => {
  await page.getByRole("button", { name: "Switch theme" }).click();
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light");
  // The ticket is reachable and usable from the keyboard alone.
  const ticket = page.getByRole("form", { name: "Order ticket" });
  await ticket.getByRole("button", { name: "Buy" }).focus();
  await page.keyboard.press("Enter");
  await ticket.getByLabel("Price (USDT)").focus();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.type("59000");
  await page.keyboard.press("Tab");
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.type("0.01");
  await page.keyboard.press("Enter");
  // The blotter's tabs: one Tab stop, the arrow keys move between them.
  await page.getByRole("tab", { name: "Fills" }).click();
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getByRole("tab", { name: /Open orders/ }).getAttribute("aria-selected"), "true");
  await page.getByTestId("open-order").filter({ hasText: "59 000.00" }).waitFor();
  await shot("06-light-theme");
  // Nothing wider than the window at 1280 px.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than 1280`);
});

test("another market: its own book and the ticket on its own rules", async () => {
  await page.getByRole("banner").getByLabel("Market").selectOption("ETH-USDT");
  const ticket = page.getByRole("form", { name: "Order ticket" });
  await ticket.getByLabel("Quantity (ETH)").waitFor();
  await ticket.getByLabel("Price (USDT)").fill("3000");
  await ticket.getByLabel("Quantity (ETH)").fill("0.00005");
  await ticket.getByRole("button", { name: "Buy ETH" }).click();
  await ticket.getByTestId("quantity-error").getByText("not a multiple of the lot size 0.0001").waitFor();
  await page.getByRole("banner").getByLabel("Market").selectOption("BTC-USDT");
  await ticket.getByLabel("Quantity (BTC)").waitFor();
});

test("a server that stops answering shows as stale, then live again", async () => {
  process.kill(server.pid, "SIGSTOP");
  try {
    await page.getByTestId("connection").getByText("stale").waitFor({ timeout: 15_000 });
    await shot("08-stale");
  } finally {
    process.kill(server.pid, "SIGCONT");
  }
  await page.getByTestId("connection").getByText("live").waitFor({ timeout: 15_000 });
});

test("a restart of the server: reconnecting, then live again and caught up without a reload", async () => {
  await stopServer();
  await page.getByTestId("connection").getByText("reconnecting").waitFor();
  await shot("07-reconnecting");
  await startServer();
  await page.getByTestId("connection").getByText("live").waitFor({ timeout: 20_000 });
  // What happens after the reconnect reaches the page: a trade against alice's resting bid.
  await api(keys.bob, "POST", "/v1/orders", {
    account: "bob", symbol: SYMBOL, side: "sell", type: "limit", price: "59000", quantity: "0.01", time_in_force: "ioc",
  });
  await page.getByTestId("open-order").filter({ hasText: "59 000.00" }).waitFor({ state: "detached" });
  await page.getByRole("tab", { name: "Fills" }).click();
  await page.getByTestId("fill").filter({ hasText: "59 000.00" }).waitFor();
  await page.getByTestId("last-price").getByText("59 000.00").waitFor();
  await balance("USDT", "held").getByText(/^0$/).waitFor();
});
