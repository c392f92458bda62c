#!/usr/bin/env python3
"""What one journal append costs on this disk: a write of a group of records plus its fdatasync.

Usage: scripts/bench-fsync.py [--dir DIR] [--appends N] [--bytes B]

Three ways, each into a fresh file in DIR (default: a temporary directory on the disk that
holds the current directory, where the data directory usually lives):
  growing     the file grows with every append (the journal's segments before they were
              zero-filled): the sync also writes the inode, or commits ext4's journal
  prepared    the file was zero-filled a page per write and synced first (what
              oms-runtime does, store/embedded/segments.rs): the sync writes the data only
  prepared-1M the same, zero-filled with 1 MiB writes: Linux 6.16+ keeps them cached as large
              folios, and each small append writes its whole folio back

It prints the time per append and the bytes the kernel wrote per append (/proc/self/io).
Numbers vary with the disk and what else writes to it; run it on an idle node.
"""

import argparse
import os
import tempfile
import time

SEGMENT = 64 << 20
PAGE = 4096


def written_bytes():
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def zero_fill(fd, chunk):
    zeros = b"\0" * chunk
    for offset in range(0, SEGMENT, chunk):
        os.pwrite(fd, zeros, offset)
    os.fsync(fd)


def run(directory, name, fill, appends, size):
    path = os.path.join(directory, f"bench-fsync-{name}.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if fill:
            zero_fill(fd, fill)
        record = b"x" * size
        before, started, offset = written_bytes(), time.perf_counter(), 0
        for _ in range(appends):
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            offset += size
        elapsed = time.perf_counter() - started
        per_append = (written_bytes() - before) / appends
        print(
            f"{name:<12} {elapsed / appends * 1e6:8.1f} µs per append+fdatasync"
            f"   {per_append:10.0f} bytes written per {size}-byte append"
        )
    finally:
        os.close(fd)
        os.remove(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to write (default: a temporary directory here)")
    parser.add_argument("--appends", type=int, default=2000, help="appends per way (2000)")
    parser.add_argument("--bytes", type=int, default=5000, help="bytes per append (5000)")
    args = parser.parse_args()
    if args.appends * args.bytes > SEGMENT:
        parser.error("appends × bytes must fit in one 64 MiB segment")
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as directory:
        print(f"{args.appends} appends of {args.bytes} bytes in {directory}")
        for name, fill in [("growing", 0), ("prepared", PAGE), ("prepared-1M", 1 << 20)]:
            run(directory, name, fill, args.appends, args.bytes)


if __name__ == "__main__":
    main()
