#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from recorded traffic (see record.sh).

Usage: seeds.py RECORDING_DIR OUT_DIR

RECORDING_DIR holds what tests/common/tap.rs recorded while the test suite ran: one file per
connection (client-*.rec: a client and the proxy; upstream-*.rec: the proxy and the cluster),
records [direction u8: 0 towards the server side, 1 back][length u32 BE][bytes]. OUT_DIR gets
one directory per target, one file per distinct seed (named by its SHA-1). The configuration
seeds are the configuration files of the repository (config/, and the TOML of deploy/k8s).
"""

import hashlib
import pathlib
import re
import struct
import sys

MAX_SEED = 16 * 1024  # larger streams are cut: libFuzzer's inputs stay small and fast
MAX_SQL = 4 * 1024
MAX_SQL_SEEDS = 1500
MAX_TOKENS = 32

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102


def records(path):
    data = path.read_bytes()
    at = 0
    while at + 5 <= len(data):
        direction, length = data[at], struct.unpack(">I", data[at + 1 : at + 5])[0]
        yield direction, data[at + 5 : at + 5 + length]
        at += 5 + length


def streams(path):
    out = {0: bytearray(), 1: bytearray()}
    for direction, chunk in records(path):
        out[direction] += chunk
    return bytes(out[0]), bytes(out[1])


def startup_end(stream):
    """Offset after the startup-phase packets (SSLRequest…, StartupMessage); None: not a session."""
    at = 0
    while at + 8 <= len(stream):
        length, code = struct.unpack(">ii", stream[at : at + 8])
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            at += length
            continue
        if code == CANCEL_REQUEST or code >> 16 != 3:
            return None
        return at + length
    return None


def messages(stream, at=0):
    """(offset, tag, body) of each whole tagged message from `at`."""
    while at + 5 <= len(stream):
        tag = stream[at]
        length = struct.unpack(">i", stream[at + 1 : at + 5])[0]
        if length < 4 or at + 1 + length > len(stream):
            return
        yield at, tag, stream[at + 5 : at + 1 + length]
        at += 1 + length


def cstr(body):
    end = body.find(b"\0")
    return None if end < 0 else (body[:end], body[end + 1 :])


class Out:
    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.count = {}
        self.shapes = set()

    def add(self, target, seed, shape=None):
        """Adds `seed` unless one of the same `shape` (a summary such as its message types)
        was added already: the corpus keeps one seed per kind of traffic, not every session."""
        if shape is not None:
            if (target, shape) in self.shapes:
                return
            self.shapes.add((target, shape))
        d = self.root / target
        d.mkdir(parents=True, exist_ok=True)
        p = d / hashlib.sha1(seed).hexdigest()
        if not p.exists():
            p.write_bytes(seed)
            self.count[target] = self.count.get(target, 0) + 1


def client_seeds(path, out, sql):
    sent, answered = streams(path)
    end = startup_end(sent)
    # TLS after an SSLRequest answered 'S' is ciphertext: not what the framer reads.
    if sent[:8] == struct.pack(">ii", 8, SSL_REQUEST) and answered[:1] == b"S":
        return
    seed = sent[:MAX_SEED]
    if end is None:
        out.add("client_stream", seed, seed[:8])
        return
    out.add("client_stream", seed, bytes(tag for _, tag, _ in messages(seed, end)))
    for _, tag, body in messages(sent, end):
        if tag == ord("p") and out.count.get("jwt_password", 0) < 2 * MAX_TOKENS:
            out.add("jwt_password", b"\0" + body)
            out.add("jwt_password", b"\1" + body)
        elif tag == ord("Q") and cstr(body):
            sql.add(cstr(body)[0])
        elif tag == ord("P") and cstr(body) and cstr(cstr(body)[1]):
            sql.add(cstr(cstr(body)[1])[0])


def server_seeds(path, out):
    """The relay's part of an upstream connection: requests after the authentication, replies
    after the first ReadyForQuery, as chunks [direction][u16 length][bytes] in arrival order."""
    sent, answered = streams(path)
    end = startup_end(sent)
    if end is None:
        return
    skip = {0: end, 1: None}
    for at, tag, _ in messages(sent, end):
        if tag != ord("p"):
            break
        skip[0] = at + 1 + struct.unpack(">i", sent[at + 1 : at + 5])[0]
    for at, tag, _ in messages(answered):
        if tag == ord("Z"):
            skip[1] = at + 6
            break
    if skip[1] is None:
        return
    seed, seen = bytearray(), {0: 0, 1: 0}
    for direction, chunk in records(path):
        start, seen[direction] = seen[direction], seen[direction] + len(chunk)
        chunk = chunk[max(0, skip[direction] - start) :]
        while chunk:
            piece, chunk = chunk[:0xFFFF], chunk[0xFFFF:]
            seed += bytes([direction]) + struct.pack(">H", len(piece)) + piece
        if len(seed) >= MAX_SEED:
            break
    seed = bytes(seed[:MAX_SEED])
    if seed:
        tags = bytes(tag for _, tag, _ in messages(sent, skip[0])) + b"/" + bytes(t for _, t, _ in messages(answered, skip[1]))
        out.add("server_stream", seed, tags[:4096])


def config_seeds(repo, out):
    for p in sorted((repo / "config").glob("*.toml")):
        out.add("config_toml", p.read_bytes())
    for p in sorted((repo / "deploy" / "k8s").glob("*.yaml")):
        text = p.read_text()
        for m in re.finditer(r"^( *)\S+\.toml: \|\n((?:\1 +.*\n|\n)+)", text, re.M):
            indent = len(m.group(1)) + 2
            out.add("config_toml", "".join(line[indent:] + "\n" for line in m.group(2).splitlines()).encode())


def main():
    rec, root = pathlib.Path(sys.argv[1]), sys.argv[2]
    out, sql = Out(root), set()
    for path in sorted(rec.glob("client-*.rec")):
        client_seeds(path, out, sql)
    for path in sorted(rec.glob("upstream-*.rec")):
        server_seeds(path, out)
    shapes = {re.sub(rb"[0-9]+", b"0", t): t for t in sorted(sql, key=lambda t: (-len(t), t)) if len(t) <= MAX_SQL}
    for text in sorted(shapes.values(), key=lambda t: (len(t), t))[:MAX_SQL_SEEDS]:
        out.add("guard_sql", b"\0" + text)
        if any(0x30 <= b <= 0x39 for b in text):
            # Edits of the text's digits (see guard_cache): derived from the text, not chosen.
            out.add("guard_cache", text + b"\0" + hashlib.sha256(text).digest()[:8])
    config_seeds(pathlib.Path(__file__).resolve().parent.parent, out)
    for target, n in sorted(out.count.items()):
        print(f"{target}: {n} new seeds")


if __name__ == "__main__":
    main()
