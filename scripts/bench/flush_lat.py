#!/usr/bin/env python3
"""4 KiB writes each followed by a flush, one at a time, timed one by one, the same way through
either door: a file (pwrite + fdatasync) or an NBD export (NBD_CMD_WRITE + NBD_CMD_FLUSH, by a
minimal client of the fixed newstyle handshake). Prints {"iops", "p50_ms", "p99_ms"} as JSON.
(fio's nbd engine with --fdatasync=1 reports 1000 IOPS for every server, FACTS.md: not used.)

With --commits, COUNT jbd2 commits instead, as ext4 makes them on an external journal: the
transaction's blocks (COMMIT_KIB, 368 KiB), a flush, the commit block (4 KiB), a flush, going
round the device; every flush is timed. Prints {"iops" (commits per second), "p50_ms", "p99_ms",
"p999_ms"} of the flushes.

Usage: flush_lat.py [--commits] file PATH COUNT | flush_lat.py [--commits] nbd SOCKET EXPORT COUNT
"""
import json
import os
import random
import socket
import struct
import sys
import time

BLOCK = 4096


def recv(s, n):
    b = bytearray()
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise SystemExit("flush_lat: the server hung up")
        b += chunk
    return bytes(b)


def nbd_open(path, export):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    magic, opt, flags = struct.unpack(">QQH", recv(s, 18))
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    name = export.encode()
    s.sendall(b"IHAVEOPT" + struct.pack(">III", 7, 4 + len(name) + 2, len(name)) + name + struct.pack(">H", 0))
    size = None
    while True:
        _, _, rtype, n = struct.unpack(">QIII", recv(s, 20))
        data = recv(s, n) if n else b""
        if rtype == 3 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        elif rtype == 1:
            return s, size
        elif rtype & 0x80000000:
            raise SystemExit(f"flush_lat: export {export} refused: {data.decode(errors='replace')}")


def nbd_request(s, cmd, cookie, offset, length, data=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, cmd, cookie, offset, length) + data)
    magic, err, got = struct.unpack(">IIQ", recv(s, 16))
    if err or got != cookie:
        raise SystemExit(f"flush_lat: command {cmd} failed: error {err}")


COMMIT_KIB = 368


def commits(write, flush, size, count):
    """count jbd2-like commits through write(offset, bytes) and flush(); the flushes' latencies."""
    body = os.urandom(COMMIT_KIB << 10)
    block = os.urandom(BLOCK)
    lat = []
    at = 0
    for _ in range(count):
        if at + len(body) + BLOCK > size:
            at = 0
        for data in (body, block):
            write(at, data)
            at += len(data)
            t = time.perf_counter()
            flush()
            lat.append(time.perf_counter() - t)
    return lat


def door(args):
    """(write(offset, bytes), flush(), size, close(), count) of a file or an NBD export, from the arguments."""
    if args[0] == "file":
        fd = os.open(args[1], os.O_RDWR)
        return (lambda at, data: os.pwrite(fd, data, at), lambda: os.fdatasync(fd), os.fstat(fd).st_size,
                lambda: os.close(fd), int(args[2]))
    s, size = nbd_open(args[1], args[2])
    cookie = iter(range(1 << 62))

    def close():
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        s.close()
    return (lambda at, data: nbd_request(s, 1, next(cookie), at, len(data), data),
            lambda: nbd_request(s, 3, next(cookie), 0, 0), size, close, int(args[3]))


def main():
    args = sys.argv[1:]
    jbd2 = args[0] == "--commits"
    write, flush, size, close, count = door(args[1:] if jbd2 else args)
    start = time.perf_counter()
    if jbd2:
        lat = commits(write, flush, size, count)
    else:
        rnd = random.Random(42)
        payload = os.urandom(BLOCK)
        lat = []
        for _ in range(count):
            t = time.perf_counter()
            write(rnd.randrange(size // BLOCK) * BLOCK, payload)
            flush()
            lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    close()
    lat.sort()
    out = {"iops": count / (elapsed if jbd2 else sum(lat)), "p50_ms": lat[len(lat) // 2] * 1000,
           "p99_ms": lat[int(len(lat) * 0.99)] * 1000}
    if jbd2:
        out["p999_ms"] = lat[int(len(lat) * 0.999)] * 1000
    print(json.dumps(out))

if __name__ == "__main__":
    main()
