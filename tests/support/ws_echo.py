#!/usr/bin/python3
"""A real WebSocket peer for the tunnel tests (Debian's python3-websockets).

  ws_echo.py serve PORT        echo server on 127.0.0.1:PORT (text and binary, frame for frame)
  ws_echo.py serve PORT CERT KEY   the same over TLS (wss), with that PEM certificate and key
  ws_echo.py client URL...     for each URL: handshake, a text and a 200 KiB binary message
                               echoed back exactly, a ping answered, a clean close; exit 0 if so
                               (wss:// URLs verify the server against the CA file in $WS_CA_FILE)
"""
import asyncio
import os
import ssl
import sys

import websockets


async def echo(ws, *_):
    async for message in ws:
        await ws.send(message)


async def serve(port, cert=None, key=None):
    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None, ssl=tls):
        await asyncio.Future()


async def client(urls):
    for url in urls:
        tls = None
        if url.startswith("wss://"):
            tls = ssl.create_default_context(cafile=os.environ.get("WS_CA_FILE"))
        async with websockets.connect(url, max_size=None, open_timeout=5, close_timeout=5, ssl=tls) as ws:
            await ws.send("hello through the proxy")
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == "hello through the proxy", f"{url}: text echo {got!r}"
            blob = os.urandom(200 * 1024)
            await ws.send(blob)
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == blob, f"{url}: binary echo differs"
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
        print(f"ok {url}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2]), *sys.argv[3:5]))
    else:
        asyncio.run(client(sys.argv[2:]))
