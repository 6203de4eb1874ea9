#!/usr/bin/env python3
"""Opens N SMTP connections to HOST:PORT from source addresses 127.0.0.2, 127.0.0.3, ... (PER_IP
each), reads each greeting, optionally sends EHLO, then holds them all idle until stdin closes.
Prints `open=N` once every connection has its greeting. Bounded: gives up after 120 s."""
import os, selectors, socket, sys, time

host, port, n, per_ip, ehlo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "ehlo"
sel = selectors.DefaultSelector()
socks, greeted = [], 0
deadline = time.time() + 120
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.{2 + i // per_ip // 250}.{2 + (i // per_ip) % 250}", 0))
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_READ, bytearray())
    socks.append(s)
while greeted < n and time.time() < deadline:
    for key, _ in sel.select(timeout=1):
        data = key.fileobj.recv(4096)
        if not data:
            sys.exit(f"connection closed by the server after {greeted} greetings")
        key.data.extend(data)
        if key.data.endswith(b"\r\n"):
            if key.data.startswith(b"220 ") and ehlo:
                key.fileobj.sendall(os.environ.get("IDLE_CMD", "EHLO idle.test").encode() + b"\r\n")
                key.data.clear()
                key.data.extend(b"ehlo:")
                continue
            greeted += 1
            sel.unregister(key.fileobj)
if greeted < n:
    sys.exit(f"only {greeted} of {n} connections greeted within 120 s")
print(f"open={n}", flush=True)
sys.stdin.read()
