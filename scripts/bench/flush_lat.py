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


def main():
    args = sys.argv[1:]
    jbd2 = args[0] == "--commits"
    if jbd2:
        args = args[1:]
    kind = args[0]
    if jbd2:
        start = time.perf_counter()
        if kind == "file":
            count = int(args[2])
            fd = os.open(args[1], os.O_RDWR)
            lat = commits(lambda at, data: os.pwrite(fd, data, at), lambda: os.fdatasync(fd),
                          os.fstat(fd).st_size, count)
            os.close(fd)
        else:
            count = int(args[3])
            s, size = nbd_open(args[1], args[2])
            cookie = iter(range(1 << 62))
            lat = commits(lambda at, data: nbd_request(s, 1, next(cookie), at, len(data), data),
                          lambda: nbd_request(s, 3, next(cookie), 0, 0), size, count)
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
            s.close()
        elapsed = time.perf_counter() - start
        lat.sort()
        print(json.dumps({"iops": count / elapsed, "p50_ms": lat[len(lat) // 2] * 1000,
                          "p99_ms": lat[int(len(lat) * 0.99)] * 1000, "p999_ms": lat[int(len(lat) * 0.999)] * 1000}))
        return
    sys.argv[1:] = args
    kind = sys.argv[1]
    rnd = random.Random(42)
    payload = os.urandom(BLOCK)
    lat = []
    if kind == "file":
        count = int(sys.argv[3])
        fd = os.open(sys.argv[2], os.O_RDWR)
        blocks = os.fstat(fd).st_size // BLOCK
        for _ in range(count):
            t = time.perf_counter()
            os.pwrite(fd, payload, rnd.randrange(blocks) * BLOCK)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        os.close(fd)
    else:
        count = int(sys.argv[4])
        s, size = nbd_open(sys.argv[2], sys.argv[3])
        blocks = size // BLOCK
        for i in range(count):
            t = time.perf_counter()
            nbd_request(s, 1, 2 * i, rnd.randrange(blocks) * BLOCK, BLOCK, payload)
            nbd_request(s, 3, 2 * i + 1, 0, 0)
            lat.append(time.perf_counter() - t)
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        s.close()
    total = sum(lat)
    lat.sort()
    print(json.dumps({"iops": count / total, "p50_ms": lat[len(lat) // 2] * 1000,
                      "p99_ms": lat[int(len(lat) * 0.99)] * 1000}))


if __name__ == "__main__":
    main()
