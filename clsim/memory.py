"""Handing freed memory back to the system.

glibc keeps the pages a process freed for its own later use, so a process that once held a large
temporary (a tokeniser's encodings, a message's gradients) keeps its peak resident size. Where
that matters — long-lived federation processes, whose peak the bench reports — clsim calls
:func:`give_back` after the temporary is gone."""
from __future__ import annotations

import ctypes


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _libc()


def give_back() -> None:
    """Return freed heap pages to the system (a no-op where libc has no ``malloc_trim``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
