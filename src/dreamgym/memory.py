"""Giving memory back between the phases of one process (s2r, quickstart).

A finished phase leaves its models behind as garbage *cycles*: a model and its generation engine refer to each
other (models/engine.py binds the engine on the model), as do a Lightning module and its trainer. Python frees
cycles only in a full garbage collection, which runs when the count of long-lived objects has grown by a
quarter; a phase that leaves few new objects never triggers one, so the next phase loaded its own models on
top of every earlier phase's (session 9's CPU study: S2R's process reached 24 GB and was killed in its last
evaluation, where a standalone evaluation of the same adapter peaks at 5.4 GB). `release_memory` collects
them now, lets glibc return freed heap pages to the OS and empties CUDA's cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
import sys

import torch

__all__ = ["release_memory", "peak_rss_mb", "rss_mb"]

log = logging.getLogger(__name__)


def release_memory() -> int:
    """Collect unreachable objects (all generations), trim the C heap, empty the CUDA cache; the number of
    unreachable objects found."""
    found = gc.collect()
    _malloc_trim()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.debug("release_memory: %d unreachable objects, rss %.0f MB", found, rss_mb())
    return found


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _malloc_trim() -> None:
    """glibc keeps freed heap pages mapped; malloc_trim(0) returns them (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        pass
