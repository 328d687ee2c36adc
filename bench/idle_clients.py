#!/usr/bin/env python3
"""Open N idle PostgreSQL client connections (startup + authentication, up to
ReadyForQuery), print how many succeeded, then hold them until a line arrives
on stdin (or stdin closes). Standard library only: raw sockets, cleartext,
md5 and SCRAM-SHA-256 authentication, no TLS (loopback).

    idle_clients.py HOST PORT USER DATABASE PASSWORD N
"""
import base64
import hashlib
import hmac
import os
import socket
import struct
import sys


def send(sock, tag, payload):
    sock.sendall(tag + struct.pack("!I", len(payload) + 4) + payload)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def recv_msg(sock):
    head = recv_exact(sock, 5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], recv_exact(sock, length - 4)


def scram(sock, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    first = ("n,," + first_bare).encode()
    send(sock, b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
    tag, body = recv_msg(sock)
    if tag != b"R" or struct.unpack("!I", body[:4])[0] != 11:
        raise ConnectionError("expected SASLContinue, got %r" % (tag + body[:64]))
    server_first = body[4:].decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = "c=biws,r=" + attrs["r"]
    auth_message = ",".join([first_bare, server_first, final_bare]).encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    send(sock, b"p", (final_bare + ",p=" + base64.b64encode(proof).decode()).encode())


def connect(host, port, user, database, password):
    sock = socket.create_connection((host, port), timeout=30)
    params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    body = struct.pack("!I", 196608) + params
    sock.sendall(struct.pack("!I", len(body) + 4) + body)
    while True:
        tag, body = recv_msg(sock)
        if tag == b"E":
            raise ConnectionError(body.replace(b"\0", b" ").decode(errors="replace"))
        if tag == b"Z":
            return sock
        if tag != b"R":
            continue
        code = struct.unpack("!I", body[:4])[0]
        if code == 3:
            send(sock, b"p", password.encode() + b"\0")
        elif code == 5:
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            send(sock, b"p", b"md5" + outer.encode() + b"\0")
        elif code == 10:
            scram(sock, password)
        elif code not in (0, 12):
            raise ConnectionError("unsupported authentication request %d" % code)


def main():
    host, port, user, database, password, n = sys.argv[1:7]
    socks, errors = [], {}
    for _ in range(int(n)):
        try:
            socks.append(connect(host, int(port), user, database, password))
        except (OSError, ConnectionError) as e:
            errors[str(e)] = errors.get(str(e), 0) + 1
    for msg, count in errors.items():
        print("%d x %s" % (count, msg), file=sys.stderr)
    print(len(socks), flush=True)
    sys.stdin.readline()
    for s in socks:
        try:
            send(s, b"X", b"")
            s.close()
        except OSError:
            pass


if __name__ == "__main__":
    main()
