"""Process-level speed settings for the CPU paths (worker, experiment, Predict in the app).

glibc serves large allocations with fresh ``mmap`` pages and returns them on free, so every
convolution's output buffer page-faults again: measured on the 2-core build machine, the frozen
EfficientNet-Lite0 prefix ran at 8.4 img/s (batch 64, 224 px, channels-last) with glibc's defaults and
27.6 img/s after raising the mmap threshold to 1 GiB and disabling heap trimming (the same effect as the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, which only act at process
start). The cost: freed memory stays with the process for reuse instead of going back to the OS.
Reproduce: ``python bench/prefix_speed.py --engines fp32-glibc,fp32``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("sgcl.perf")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator() -> bool:
    """Keep large buffers in the heap (glibc only; a no-op elsewhere). True when the setting applied."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl, macOS, Windows: nothing to tune
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    _done = ok
    if not ok:
        log.info("mallopt refused the allocator settings; running with the defaults")
    return ok
