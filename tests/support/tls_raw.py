#!/usr/bin/python3
"""Raw bytes over TLS, for the listen_tls tests.

  tls_raw.py CAFILE PORT REQUEST_FILE [SECONDS [SPLIT]]

Connects to 127.0.0.1:PORT verifying the certificate for "localhost" against CAFILE, sends the
file's bytes in one write (so pipelined requests arrive in one TLS record), then prints to
stdout everything the server sends until it closes or SECONDS (default 3) pass with no byte.
With SPLIT, the first SPLIT bytes go in one TLS record and the rest 300 ms later in another.
Exit 0 when the handshake worked, 2 when it failed.
"""
import socket
import ssl
import sys
import time

ca, port, request = sys.argv[1], int(sys.argv[2]), sys.argv[3]
quiet = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
split = int(sys.argv[5]) if len(sys.argv) > 5 else None
ctx = ssl.create_default_context(cafile=ca)
with open(request, "rb") as f:
    data = f.read()
raw = socket.create_connection(("127.0.0.1", port), timeout=5)
try:
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
except (ssl.SSLError, OSError) as e:
    print(f"handshake failed: {e}", file=sys.stderr)
    sys.exit(2)
if split is None:
    tls.sendall(data)
else:
    tls.sendall(data[:split])
    time.sleep(0.3)
    tls.sendall(data[split:])
tls.settimeout(quiet)
out = b""
try:
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        out += chunk
except (socket.timeout, ssl.SSLError, OSError):
    pass
sys.stdout.buffer.write(out)
