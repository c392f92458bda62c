"""An independent client of the OMS streams: Python `websockets` (not the project's Rust client)
against a running oms-runtime. Places, amends, fills and cancels through the REST API and checks
that the stream shows every change, in order, with no gap; that the book rebuilt from its
snapshot and updates equals GET /v1/book; that a reconnect resumes from the cursor; that a key
cannot read another account.

Usage: check-streams.py <http base> <key of alice and bob> <key of carol only> <tag>
(run by scripts/check-streams, which starts the server)."""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import websockets

BASE, KEY, OTHER_KEY, TAG = sys.argv[1:5]
WS = BASE.replace("http://", "ws://") + "/v1/ws"


def rest(method, path, body=None, key=KEY, idempotency=None):
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(body).encode()
    if idempotency:
        request.add_header("Idempotency-Key", f"{TAG}-{idempotency}")
        request.add_header("Prefer", "wait=10")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def place(idempotency, account, side, price, quantity):
    status, order = rest(
        "POST",
        "/v1/orders",
        {"account": account, "symbol": "BTC-USDT", "side": side, "type": "limit",
         "price": price, "quantity": quantity},
        idempotency=idempotency,
    )
    assert status == 201, (status, order)
    return order["order_id"]


async def request(ws, message, kept):
    """Sends a request and returns its answer; updates read meanwhile go to `kept`."""
    await ws.send(json.dumps(message))
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer.get("id") == message.get("id"):
            return answer
        kept.append(answer)


async def drain(ws, kept, quiet=1.5):
    """Every update until none arrives for `quiet` seconds."""
    seen = list(kept)
    kept.clear()
    while True:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), quiet))
        except asyncio.TimeoutError:
            return [m for m in seen if m["type"] != "heartbeat"]
        seen.append(message)


def apply_book(book, message):
    if message["type"] == "book_snapshot":
        book.clear()
        book.update(seq=0, bids={}, asks={})
    elif message["type"] == "book_update":
        assert message["prev_seq"] == book["seq"], ("a gap in the book", message, book["seq"])
    else:
        return
    book["seq"] = message["seq"]
    for side in ("bids", "asks"):
        for price, quantity in message[side]:
            if quantity == "0":
                book[side].pop(price, None)
            else:
                book[side][price] = quantity


async def main():
    for asset, account, amount in (("USDT", "alice", "1000000"), ("BTC", "bob", "100")):
        status, done = rest("POST", "/v1/deposits",
                            {"account": account, "asset": asset, "amount": amount},
                            idempotency=f"fund-{account}-{asset}")
        assert status == 201 and done["status"] == "completed", (status, done)

    headers = {"Authorization": f"Bearer {KEY}"}
    kept = []
    async with websockets.connect(WS, additional_headers=headers) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        subscriptions = [("orders", "account", "alice"), ("orders", "account", "bob"),
                         ("fills", "account", "alice"), ("balances", "account", "alice"),
                         ("book", "symbol", "BTC-USDT"), ("trades", "symbol", "BTC-USDT")]
        for n, (channel, field, name) in enumerate(subscriptions, 1):
            answer = await request(ws, {"op": "subscribe", "id": n, "channel": channel,
                                        field: name}, kept)
            assert answer["type"] == "ack", answer

        place("1", "bob", "sell", "50100.00", "0.4")
        bid = place("2", "alice", "buy", "49000.00", "1")
        status, amended = rest("PATCH", f"/v1/orders/{bid}", {"price": "50100.00"},
                               idempotency="3")
        assert status == 200, (status, amended)
        status, canceled = rest("DELETE", f"/v1/orders/{bid}", idempotency="4")
        assert status in (200, 201, 202), (status, canceled)
        seen = await drain(ws, kept)

        last = {}
        for message in (m for m in seen if m["type"] == "order"):
            order = message["order"]
            before = last.get(order["order_id"], {"version": 0})["version"]
            assert order["version"] == before + 1, ("a gap", order, before)
            assert message["cursor"], message
            last[order["order_id"]] = order
        assert len(last) == 2, last
        for order_id, order in last.items():
            status, stored = rest("GET", f"/v1/orders/{order_id}")
            assert status == 200 and stored == order, (stored, order)
        fills = [m["fill"] for m in seen if m["type"] == "fill"]
        status, trades = rest("GET", "/v1/trades?account=alice")
        assert fills == trades["trades"] and len(fills) == 1, (fills, trades)
        public = [m["trade"] for m in seen if m["type"] == "trade"]
        assert len(public) == 1 and "account" not in json.dumps(public), public
        assert any(m["type"] == "balance" for m in seen)
        book = {}
        for message in seen:
            apply_book(book, message)
        status, rest_book = rest("GET", "/v1/book/BTC-USDT?depth=100")
        assert book["seq"] == rest_book["seq"], (book, rest_book)
        assert book["bids"] == dict(rest_book["bids"]), (book, rest_book)
        assert book["asks"] == dict(rest_book["asks"]), (book, rest_book)
        cursor = [m for m in seen if "cursor" in m][-1]["cursor"]

    # Away for a while, then back with the cursor: what was missed comes first.
    missed = place("5", "alice", "buy", "48000.00", "0.5")
    async with websockets.connect(WS) as ws:
        await ws.send(json.dumps({"op": "auth", "key": KEY}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        answer = await request(ws, {"op": "subscribe", "id": 1, "channel": "orders",
                                    "account": "alice", "cursor": cursor}, kept)
        assert answer["type"] == "ack" and answer["replayed"] == 1, answer
        resumed = await drain(ws, kept)
        assert [m["order"]["order_id"] for m in resumed] == [missed], resumed

    # Another key reads only its own account.
    async with websockets.connect(WS, additional_headers={"Authorization": f"Bearer {OTHER_KEY}"}) as ws:
        await ws.recv()
        answer = await request(ws, {"op": "subscribe", "id": 1, "channel": "orders",
                                    "account": "alice"}, kept)
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
    print(f"  python websockets {websockets.__version__}: {len(seen)} updates checked ({TAG})")


asyncio.run(main())
