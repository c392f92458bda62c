"""Trades against a running oms-runtime through its Binance-compatible API with unchanged
clients: CCXT's `binance` class (REST and its WebSocket user data stream), python-binance
(REST and its user socket), and raw signed requests for the signature rules.

Usage: check-binance.py <base-url> <alice-api-key> <alice-secret> <bob-api-key> <bob-secret>
(alice and bob hold the demo deposits; run by scripts/check-binance.)
"""

import asyncio
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import ccxt
import ccxt.pro
import websockets
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException

BASE, ALICE_KEY, ALICE_SECRET, BOB_KEY, BOB_SECRET = sys.argv[1:6]
WS = BASE.replace("http://", "ws://")
TIMEOUT = 10


def step(text):
    print(f"    {text}", flush=True)


def ccxt_client(key, secret):
    """CCXT's binance class, pointed at the OMS and kept on spot."""
    exchange = ccxt.pro.binance({
        "apiKey": key,
        "secret": secret,
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        },
    })
    exchange.urls["api"]["public"] = BASE + "/api/v3"
    exchange.urls["api"]["private"] = BASE + "/api/v3"
    exchange.urls["api"]["ws"]["ws-api"]["spot"] = WS + "/ws-api/v3"
    return exchange


async def watched(watch, cached, predicate, what):
    """Waits for a watch_* update that satisfies predicate. CCXT resolves a watch with the
    next message and keeps the state it builds from every message: updates that arrive while
    no watch is pending are only in that state, so it is checked too."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            found = await asyncio.wait_for(watch(), 1)
        except asyncio.TimeoutError:
            found = cached()
        for item in found if isinstance(found, list) else [found]:
            if item is not None and predicate(item):
                return item
    raise AssertionError(f"no update over the stream: {what}")


async def eventually(read, predicate, what):
    """Reads until predicate holds: what the read side shows follows processing."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = await read()
        if predicate(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {TIMEOUT} s: {what}: {value}")


def next_order(client, predicate, what):
    return watched(lambda: client.watch_orders("BTC/USDT"), lambda: list(client.orders or []),
                   predicate, what)


def next_balance(client, predicate, what):
    return watched(client.watch_balance, lambda: client.balance.get("spot"), predicate, what)


async def check_ccxt():
    alice = ccxt_client(ALICE_KEY, ALICE_SECRET)
    bob = ccxt_client(BOB_KEY, BOB_SECRET)
    try:
        markets = await alice.load_markets()
        market = markets["BTC/USDT"]
        assert market["spot"] and market["active"], market
        assert market["precision"]["price"] == 0.01, market["precision"]
        assert market["precision"]["amount"] == 0.00001, market["precision"]
        step(f"load_markets: {sorted(markets)}; BTC/USDT tick 0.01, step 0.00001")

        before = await alice.fetch_balance()
        usdt = before["USDT"]["free"]
        btc = before["BTC"]["total"]
        assert before["USDT"]["used"] == 0, before["USDT"]

        # The user data stream first, so that it sees everything below.
        first = asyncio.ensure_future(alice.watch_orders("BTC/USDT"))
        await asyncio.sleep(0.5)
        order = await alice.create_order("BTC/USDT", "limit", "buy", 0.5, 60000)
        assert order["status"] == "open" and order["amount"] == 0.5, order
        step(f"create_order limit buy 0.5 @ 60000: {order['id']} open")
        seen = await asyncio.wait_for(first, TIMEOUT)
        assert any(o["id"] == order["id"] and o["status"] == "open" for o in seen), seen
        step("watch_orders: the new order arrived")

        book = await alice.fetch_order_book("BTC/USDT")
        assert book["bids"][0][:2] == [60000.0, 0.5], book["bids"]
        fetched = await alice.fetch_order(order["id"], "BTC/USDT")
        assert fetched["status"] == "open" and fetched["price"] == 60000.0, fetched
        open_orders = await alice.fetch_open_orders("BTC/USDT")
        assert [o["id"] for o in open_orders] == [order["id"]], open_orders
        held = await alice.fetch_balance()
        assert held["USDT"]["used"] == 30000.0, held["USDT"]
        step("fetch_order_book, fetch_order, fetch_open_orders, fetch_balance (30,000 USDT held)")

        # 0.2 BTC bought, 10 bps maker fee (0.0002 BTC) out of it.
        received = btc + 0.1998
        balance_update = asyncio.ensure_future(next_balance(
            alice, lambda b: abs(b.get("BTC", {}).get("free", 0) - received) < 1e-9, "BTC received"))
        partial_update = asyncio.ensure_future(next_order(
            alice, lambda o: o["id"] == order["id"] and o["filled"] == 0.2, "partially filled"))
        await asyncio.sleep(0.2)
        sold = await bob.create_order("BTC/USDT", "market", "sell", 0.2)
        assert sold["status"] == "closed" and sold["filled"] == 0.2, sold
        assert sold["trades"] and sold["trades"][0]["price"] == 60000.0, sold["trades"]
        step(f"bob create_order market sell 0.2: filled at 60000 (FULL answer, {len(sold['trades'])} fill)")

        partial = await partial_update
        assert partial["status"] == "open" and partial["remaining"] == 0.3, partial
        step("watch_orders: alice's order partially filled, 0.2 of 0.5")
        balance = await balance_update
        step(f"watch_balance: BTC free {balance['BTC']['free']} (0.2 bought, 0.0002 maker fee)")

        trades = await alice.fetch_my_trades("BTC/USDT")
        assert len(trades) == 1 and trades[0]["takerOrMaker"] == "maker", trades
        assert trades[0]["fee"]["cost"] == 0.0002 and trades[0]["fee"]["currency"] == "BTC", trades[0]["fee"]
        bob_trades = await bob.fetch_my_trades("BTC/USDT")
        assert bob_trades[-1]["takerOrMaker"] == "taker" and bob_trades[-1]["side"] == "sell", bob_trades
        ticker = await alice.fetch_ticker("BTC/USDT")
        assert ticker["last"] == 60000.0 and ticker["bid"] == 60000.0, ticker
        step("fetch_my_trades (maker, fee 0.0002 BTC; bob taker), fetch_ticker last 60000")

        try:
            await alice.create_order("BTC/USDT", "limit", "sell", 0.1, 59000, {"postOnly": True})
            raise AssertionError("a post-only order that would take was accepted")
        except ccxt.OrderImmediatelyFillable:
            pass
        maker = await alice.create_order("BTC/USDT", "limit", "buy", 0.1, 59000, {"postOnly": True})
        assert maker["postOnly"] and maker["status"] == "open", maker
        step("post-only: one that would take refused (OrderImmediatelyFillable), one resting")

        try:
            await alice.create_order("BTC/USDT", "limit", "buy", 5, 60000)
            raise AssertionError("an order beyond the balance was accepted")
        except ccxt.InsufficientFunds:
            pass
        params = {"newClientOrderId": "ccxt-dup-1"}
        await alice.create_order("BTC/USDT", "limit", "buy", 0.01, 58000, params)
        try:
            await alice.create_order("BTC/USDT", "limit", "buy", 0.01, 58000, params)
            raise AssertionError("a duplicate newClientOrderId was accepted")
        except ccxt.InvalidOrder as error:
            assert "Duplicate order sent." in str(error), error
        step("insufficient funds refused (InsufficientFunds); a duplicate newClientOrderId refused (-2010)")

        canceled_update = asyncio.ensure_future(next_order(
            alice, lambda o: o["id"] == order["id"] and o["status"] == "canceled", "canceled"))
        await asyncio.sleep(0.2)
        canceled = await alice.cancel_order(order["id"], "BTC/USDT")
        assert canceled["status"] == "canceled", canceled
        await canceled_update
        left = await alice.cancel_all_orders("BTC/USDT")
        assert len(left) == 2 and all(o["status"] == "canceled" for o in left), left
        assert await alice.fetch_open_orders("BTC/USDT") == []
        # Distributed mode settles funds after the books, so balances follow a moment later.
        after = await eventually(alice.fetch_balance, lambda b: b["USDT"]["used"] == 0, "holds released")
        assert after["USDT"]["total"] == usdt - 12000.0, (after["USDT"], usdt)
        step("cancel_order, cancel_all_orders (2): nothing open, nothing held, 12,000 USDT spent")

        await bob.create_order("BTC/USDT", "limit", "sell", 0.02, 60000)
        cost = await alice.create_market_buy_order_with_cost("BTC/USDT", 600)
        assert cost["status"] == "closed" and cost["filled"] == 0.01 and cost["cost"] == 600, cost
        await bob.cancel_all_orders("BTC/USDT")
        step("market buy by cost (quoteOrderQty 600 USDT): 0.01 BTC at 60000")

        # Candles from the trades so far: 0.2 and 0.01 BTC at 60000.
        ohlcv = await eventually(
            lambda: alice.fetch_ohlcv("BTC/USDT", "1m", limit=10),
            lambda rows: abs(sum(row[5] for row in rows) - 0.21) < 1e-9, "candles")
        assert ohlcv[-1][4] == 60000.0 and ohlcv[-1][2] == 60000.0, ohlcv
        hourly = await alice.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert abs(sum(row[5] for row in hourly) - 0.21) < 1e-9, hourly
        assert all(row[0] % 3_600_000 == 0 for row in hourly), hourly
        step(f"fetch_ohlcv 1m ({len(ohlcv)} candles) and 1h: 0.21 BTC traded, close 60000")
    finally:
        await alice.close()
        await bob.close()


def signed_request(method, path, params, secret=ALICE_SECRET, key=ALICE_KEY, body=False):
    query = urllib.parse.urlencode(params)
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    signed = f"{query}&signature={signature}"
    return raw(method, path, signed, key, body)


def raw(method, path, signed, key=ALICE_KEY, body=False):
    url = f"{BASE}{path}" + ("" if body else f"?{signed}")
    data = signed.encode() if body else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("X-MBX-APIKEY", key)
    if body:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def now_ms():
    return int(time.time() * 1000)


def check_signatures():
    status, body = signed_request("GET", "/api/v3/account", {"timestamp": now_ms()})
    assert status == 200 and "balances" in body, (status, body)
    status, body = signed_request("GET", "/api/v3/account", {"timestamp": now_ms()}, secret="x" * 64)
    assert (status, body["code"]) == (400, -1022), (status, body)
    step("wrong secret: 400 -1022")
    status, body = signed_request("GET", "/api/v3/account", {"timestamp": now_ms() - 60_000})
    assert (status, body["code"]) == (400, -1021), (status, body)
    status, body = signed_request("GET", "/api/v3/account", {"timestamp": now_ms() + 5_000})
    assert (status, body["code"]) == (400, -1021), (status, body)
    step("stale and future timestamps: 400 -1021")
    params = urllib.parse.urlencode({
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.01", "price": "58500", "newOrderRespType": "ACK", "timestamp": now_ms(),
    })
    signature = hmac.new(ALICE_SECRET.encode(), params.encode(), hashlib.sha256).hexdigest()
    signed = f"{params}&signature={signature}"
    status, first = raw("POST", "/api/v3/order", signed, body=True)
    assert status == 200 and first["orderId"], (status, first)
    status, again = raw("POST", "/api/v3/order", signed, body=True)
    assert (status, again["code"]) == (400, -1022), (status, again)
    step("the same signed order twice: placed once, then 400 -1022 (replay)")
    # ACK answers once the order is durable; it is readable once processed.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status, body = signed_request("GET", "/api/v3/order", {
            "symbol": "BTCUSDT", "orderId": first["orderId"], "timestamp": now_ms()})
        if status == 200:
            break
        assert body["code"] == -2013, body
        time.sleep(0.05)
    status, body = signed_request("DELETE", "/api/v3/order", {
        "symbol": "BTCUSDT", "orderId": first["orderId"], "timestamp": now_ms()})
    assert status == 200 and body["status"] == "CANCELED", (status, body)
    status, body = raw("GET", "/api/v3/account", "timestamp=1", key=None)
    assert (status, body["code"]) == (401, -2014), (status, body)
    status, body = signed_request("GET", "/api/v3/account", {"timestamp": now_ms()}, key="A" * 64)
    assert (status, body["code"]) == (401, -2015), (status, body)
    status, body = raw("GET", "/api/v3/account", f"timestamp={now_ms()}")
    assert (status, body["code"]) == (400, -1102), (status, body)
    status, body = signed_request("GET", "/api/v3/depth", {"symbol": "NOPE"})
    assert (status, body["code"]) == (400, -1121), (status, body)
    status, body = raw("GET", "/api/v3/klines", "symbol=BTCUSDT&interval=7m", key=None)
    assert (status, body["code"]) == (400, -1120), (status, body)
    status, body = signed_request("POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "STOP_LOSS", "quantity": "0.01",
        "stopPrice": "59000", "timestamp": now_ms()}, body=True)
    assert (status, body["code"]) == (400, -1104), (status, body)
    step("no key 401 -2014, unknown key 401 -2015, unsigned 400 -1102, unknown symbol 400 -1121, "
         "bad interval -1120, a stop order -1104")


async def check_listen_key():
    status, body = raw("POST", "/api/v3/userDataStream", "", key=BOB_KEY, body=True)
    assert status == 200 and len(body["listenKey"]) == 64, (status, body)
    listen_key = body["listenKey"]
    status, again = raw("POST", "/api/v3/userDataStream", "", key=BOB_KEY, body=True)
    assert again["listenKey"] == listen_key, again
    status, kept = raw("PUT", "/api/v3/userDataStream", f"listenKey={listen_key}", key=BOB_KEY)
    assert (status, kept) == (200, {}), (status, kept)
    status, wrong = raw("PUT", "/api/v3/userDataStream", f"listenKey={listen_key}", key=ALICE_KEY)
    assert (status, wrong["code"]) == (400, -1125), (status, wrong)
    async with websockets.connect(f"{WS}/ws/{listen_key}") as socket:
        await asyncio.sleep(0.3)
        status, placed = signed_request("POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "65000", "timestamp": now_ms(),
        }, secret=BOB_SECRET, key=BOB_KEY, body=True)
        assert status == 200 and placed["status"] == "NEW", (status, placed)
        kinds = set()
        deadline = time.monotonic() + TIMEOUT
        while {"executionReport", "outboundAccountPosition"} - kinds and time.monotonic() < deadline:
            event = json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT))
            kinds.add(event["e"])
            if event["e"] == "executionReport":
                assert event["i"] == placed["orderId"] and event["x"] == "NEW", event
                assert event["s"] == "BTCUSDT" and event["X"] == "NEW", event
        assert {"executionReport", "outboundAccountPosition"} <= kinds, kinds
    status, canceled = signed_request("DELETE", "/api/v3/openOrders", {
        "symbol": "BTCUSDT", "timestamp": now_ms()}, secret=BOB_SECRET, key=BOB_KEY)
    assert status == 200 and [o["status"] for o in canceled] == ["CANCELED"], (status, canceled)
    step("listen key: the same key twice, keep-alive, another key's refused (-1125); "
         "/ws/<listenKey> sent executionReport NEW and outboundAccountPosition")


async def check_python_binance():
    client = AsyncClient(ALICE_KEY, ALICE_SECRET)
    client.API_URL = BASE + "/api"
    from binance.ws.websocket_api import WebsocketAPI
    client.ws_api = WebsocketAPI(url=WS + "/ws-api/v3", tld="com")
    bob = AsyncClient(BOB_KEY, BOB_SECRET)
    bob.API_URL = BASE + "/api"
    try:
        info = await client.get_exchange_info()
        symbol = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
        filters = {f["filterType"]: f for f in symbol["filters"]}
        assert filters["PRICE_FILTER"]["tickSize"] == "0.01", filters
        assert (await client.get_server_time())["serverTime"] > 0
        manager = BinanceSocketManager(client)
        async with manager.user_socket() as user:
            order = await client.create_order(
                symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                quantity="0.1", price="61000", newClientOrderId="pb-1")
            assert order["status"] == "NEW" and order["clientOrderId"] == "pb-1", order
            step(f"python-binance create_order: {order['orderId']} NEW")
            got = await client.get_order(symbol="BTCUSDT", origClientOrderId="pb-1")
            assert got["orderId"] == order["orderId"] and got["origQty"] == "0.10000", got
            opened = await client.get_open_orders(symbol="BTCUSDT")
            assert [o["orderId"] for o in opened] == [order["orderId"]], opened
            book = await client.get_order_book(symbol="BTCUSDT", limit=5)
            assert book["bids"][0] == ["61000.00", "0.10000"], book
            sold = await bob.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.1")
            assert sold["status"] == "FILLED" and sold["fills"][0]["price"] == "61000.00", sold
            step("get_order, get_open_orders, get_order_book; bob's market sell filled it")
            reports = []
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and not any(r.get("X") == "FILLED" for r in reports):
                event = await asyncio.wait_for(user.recv(), TIMEOUT)
                if event.get("e") == "executionReport" and event.get("i") == order["orderId"]:
                    reports.append(event)
            kinds = [(r["x"], r["X"]) for r in reports]
            assert ("NEW", "NEW") in kinds and ("TRADE", "FILLED") in kinds, kinds
            fill = next(r for r in reports if r["x"] == "TRADE")
            assert fill["l"] == "0.10000" and fill["L"] == "61000.00" and fill["m"] is True, fill
            step("user_socket: executionReport NEW, then TRADE/FILLED with last qty, price, maker")
        trades = await client.get_my_trades(symbol="BTCUSDT")
        assert trades[-1]["orderId"] == order["orderId"] and trades[-1]["isMaker"], trades[-1]
        orders = await client.get_all_orders(symbol="BTCUSDT")
        assert orders[-1]["orderId"] == order["orderId"] and orders[-1]["status"] == "FILLED", orders[-1]
        account = await client.get_account()
        assert {b["asset"] for b in account["balances"]} >= {"BTC", "USDT"}, account
        try:
            await client.cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
            raise AssertionError("a filled order was canceled")
        except BinanceAPIException as error:
            assert error.code == -2011, error
        try:
            await client.get_order(symbol="BTCUSDT", orderId=1)
            raise AssertionError("a missing order was found")
        except BinanceAPIException as error:
            assert error.code == -2013, error
        step("get_my_trades, get_all_orders, get_account; cancel of a filled order -2011, missing -2013")
    finally:
        await client.close_connection()
        await bob.close_connection()


async def main():
    print("  CCXT (binance, REST and watch_orders/watch_balance)", flush=True)
    await check_ccxt()
    print("  signatures", flush=True)
    check_signatures()
    print("  user data stream by listen key", flush=True)
    await check_listen_key()
    print("  python-binance (REST and user_socket)", flush=True)
    await check_python_binance()


asyncio.run(main())
