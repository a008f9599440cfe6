"""Ids of requests and of the objects a response names: unique, not secret, and cheap.

A random prefix drawn once per process, then a counter: no system call per id (reading
the OS's randomness costs more than the rest of building an id). A forked child draws a
prefix of its own.
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix: str | None = None
_counter = itertools.count()


def _reset() -> None:
    global _prefix, _counter
    _prefix, _counter = None, itertools.count()


os.register_at_fork(after_in_child=_reset)


def unique_hex() -> str:
    """24 hexadecimal characters, never repeated by this process or another."""
    global _prefix
    if _prefix is None:
        _prefix = secrets.token_hex(6)
    return f"{_prefix}{next(_counter):012x}"
