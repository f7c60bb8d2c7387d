"""The bench's simulator: `alert2voice simulator`, its process tuned for a long run of small requests.

Arguments are alert2voice's own (`--log-level warning simulator --listen ...`); rig.py starts it.

    python bench/simulator.py --log-level warning simulator --listen 127.0.0.1:9090 --callback-delay 0
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

from alert2voice.cli import main

# glibc's mallopt(3) parameters, and asyncio's socket reads: a fresh 256 KiB buffer each, shrunk to what arrived.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
SOCKET_READ_BYTES = 256 * 1024


def tune_allocator() -> None:
    """Serve socket-read-sized blocks from the heap, and keep the heap's top that large."""
    # glibc gives a block as large as asyncio's socket reads its own mmap whenever the heap's top lacks
    # room, so under load most requests mapped, shrank and unmapped their read buffer (one mmap, mremap
    # and munmap each in strace). Serve such blocks from the heap, and let its top stay that large
    # instead of being trimmed after every request.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # a libc without mallopt: nothing to tune
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 4 * SOCKET_READ_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, 8 * SOCKET_READ_BYTES)


if __name__ == "__main__":
    tune_allocator()
    main(sys.argv[1:])
