#!/usr/bin/env python3
"""A foreign client for the Acorn topics protocol (PROTOCOL.md, version 1).

Written only from the public contract, with off-the-shelf libraries
(`websockets`, `msgpack`, and the standard library for HTTP), to prove the
server talks to clients the project did not write.

Usage: conformance.py <ws_url> <http_url> <operator_key>
Exits 0 when every check passes, non-zero (with a message) otherwise.
"""

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import msgpack
import websockets
from websockets.asyncio.client import connect

TIMEOUT = 10.0
CACHE = "py-cache"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def mint(http_url, key, sub, perms, ttl=600):
    body = json.dumps({"sub": sub, "expires_in": ttl, "perms": perms}).encode()
    status, raw = http("POST", f"{http_url}/v1/tokens", body,
                       {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    check(status == 200, f"mint: HTTP {status} {raw!r}")
    doc = json.loads(raw)
    check(isinstance(doc.get("token"), str), f"mint: no token in {doc}")
    check(isinstance(doc.get("expires_at"), int), f"mint: no expires_at in {doc}")
    check(abs(doc["expires_at"] - (time.time() + ttl)) < 5, f"mint: expires_at off: {doc}")
    return doc["token"]


def http_publish(http_url, token, topic, body, content_type):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, raw = http("POST", f"{http_url}/v1/topics/{CACHE}/{topic}", body, headers)
    return status, json.loads(raw) if raw else None


class Client:
    """One WebSocket connection; decodes frames holding several messages."""

    def __init__(self, ws):
        self.ws = ws
        self.inbox = []

    async def send(self, *msgs):
        await self.ws.send(b"".join(msgpack.packb(m, use_bin_type=True) for m in msgs))

    async def recv(self):
        while not self.inbox:
            frame = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
            check(isinstance(frame, bytes), f"server sent a text frame: {frame!r}")
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
            unpacker.feed(frame)
            msgs = list(unpacker)
            check(msgs, "server sent an empty frame")
            for m in msgs:
                check(isinstance(m, dict) and isinstance(m.get("op"), str), f"not a message: {m!r}")
            self.inbox.extend(m for m in msgs if m["op"] != "hb")
        return self.inbox.pop(0)

    async def reply(self, id_):
        """The ok/err/pong for id_; other messages stay queued."""
        while True:
            for i, m in enumerate(self.inbox):
                if m.get("id") == id_ and m["op"] in ("ok", "err", "pong"):
                    return self.inbox.pop(i)
            frame = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
            check(isinstance(frame, bytes), "text frame from server")
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(frame)
            self.inbox.extend(m for m in unpacker if m.get("op") != "hb")

    async def request(self, msg):
        await self.send(msg)
        return await self.reply(msg["id"])


async def run(ws_url, http_url, key):
    alice = mint(http_url, key, "py-alice", [{"role": "publishsubscribe", "cache": CACHE, "topic": "py.*"}])
    svc = mint(http_url, key, "py-svc", [{"role": "publishonly", "cache": "*", "topic": "*"}])

    # Refused upgrade without a token.
    try:
        async with connect(ws_url, open_timeout=TIMEOUT):
            raise Failure("upgrade without a token was accepted")
    except websockets.exceptions.InvalidStatus as e:
        check(e.response.status_code == 401, f"upgrade without token: {e.response.status_code}")

    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {alice}"},
                       open_timeout=TIMEOUT) as ws:
        c = Client(ws)

        # ping / pong
        m = await c.request({"op": "ping", "id": 1})
        check(m == {"op": "pong", "id": 1} or (m["op"] == "pong" and m["id"] == 1), f"ping: {m}")

        # sub on a fresh topic: ok with seq 0 and an epoch
        m = await c.request({"op": "sub", "id": 2, "cache": CACHE, "topic": "py.room"})
        check(m["op"] == "ok" and m["seq"] == 0, f"sub: {m}")
        epoch = m["epoch"]
        check(isinstance(epoch, str) and epoch, f"sub epoch: {m}")

        # HTTP publish: text → str value, from = publisher's sub
        status, doc = http_publish(http_url, svc, "py.room", "héllo".encode(), "text/plain; charset=utf-8")
        check(status == 200 and doc == {"seq": 1}, f"HTTP publish: {status} {doc}")
        item = await c.recv()
        check(item["op"] == "item", f"expected item: {item}")
        check(item["cache"] == CACHE and item["topic"] == "py.room", f"item names: {item}")
        check(item["seq"] == 1 and item["value"] == "héllo" and item["from"] == "py-svc", f"item: {item}")

        # HTTP publish: bytes
        status, doc = http_publish(http_url, svc, "py.room", b"\x00\xffbin", "application/octet-stream")
        check(status == 200 and doc == {"seq": 2}, f"HTTP publish bytes: {status} {doc}")
        item = await c.recv()
        check(item["seq"] == 2 and item["value"] == b"\x00\xffbin", f"bytes item: {item}")

        # WS publish, several messages in one frame, with and without id
        await c.send({"op": "pub", "id": 3, "cache": CACHE, "topic": "py.room", "value": b"\x01\x02"},
                     {"op": "pub", "cache": CACHE, "topic": "py.room", "value": "text"},
                     {"op": "ping", "id": 4, "x-unknown": {"nested": [1, 2]}})
        m = await c.reply(3)
        check(m["op"] == "ok" and m["seq"] == 3, f"pub ok: {m}")
        m = await c.reply(4)
        check(m["op"] == "pong", f"pong: {m}")
        got = [await c.recv(), await c.recv()]
        check([i["seq"] for i in got] == [3, 4], f"ws items: {got}")
        check(got[0]["value"] == b"\x01\x02" and got[1]["value"] == "text", f"ws values: {got}")
        check(all(i["from"] == "py-alice" for i in got), f"ws from: {got}")

        # errors keep the connection open
        m = await c.request({"op": "pub", "id": 5, "cache": CACHE, "topic": "other", "value": "x"})
        check(m["op"] == "err" and m["code"] == "permission_denied" and m["message"], f"denied: {m}")
        m = await c.request({"op": "sub", "id": 6, "cache": CACHE, "topic": "py bad"})
        check(m["op"] == "err" and m["code"] in ("invalid_name", "permission_denied"), f"bad name: {m}")

        # unsub
        m = await c.request({"op": "unsub", "id": 7, "cache": CACHE, "topic": "py.room"})
        check(m["op"] == "ok", f"unsub: {m}")

    # Resume on a second connection, token in the query string.
    async with connect(f"{ws_url}?token={alice}", open_timeout=TIMEOUT) as ws:
        c = Client(ws)
        m = await c.request({"op": "sub", "id": 1, "cache": CACHE, "topic": "py.room",
                             "resume_after": 1, "epoch": epoch})
        check(m["op"] == "ok" and m["seq"] == 4 and m["epoch"] == epoch, f"resume ok: {m}")
        seqs = [(await c.recv())["seq"] for _ in range(3)]
        check(seqs == [2, 3, 4], f"resume replay: {seqs}")
        status, doc = http_publish(http_url, svc, "py.room", b"live", "text/plain")
        check(status == 200 and doc == {"seq": 5}, f"live publish: {status} {doc}")
        item = await c.recv()
        check(item["op"] == "item" and item["seq"] == 5 and item["value"] == "live", f"live item: {item}")

        # wrong epoch → gap with last = resume_after first
        m = await c.request({"op": "sub", "id": 2, "cache": CACHE, "topic": "py.room",
                             "resume_after": 3, "epoch": epoch + "-gone"})
        check(m["op"] == "ok", f"resume wrong epoch: {m}")
        gap = await c.recv()
        check(gap["op"] == "gap" and gap["last"] == 3 and isinstance(gap["next"], int), f"gap: {gap}")

    # A protocol violation closes 4400 with a reason.
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {alice}"},
                       open_timeout=TIMEOUT) as ws:
        await ws.send(msgpack.packb({"op": "no-such-op", "id": 1}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        except websockets.exceptions.ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 4400, f"close: {e.rcvd}")
            check(e.rcvd.reason, "close 4400 without a reason")

    # HTTP errors are JSON.
    status, doc = http_publish(http_url, None, "py.room", b"x", "text/plain")
    check(status == 401 and doc["code"] == "unauthenticated" and doc["message"], f"401: {status} {doc}")
    status, raw = http("GET", f"{http_url}/v1/health")
    check(status == 200, f"health: {status}")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(run(*sys.argv[1:]))
    except Failure as e:
        print(f"CONFORMANCE FAILURE: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any surprise is a failure
        print(f"CONFORMANCE ERROR: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("conformance: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
