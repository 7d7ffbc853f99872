"""Helpers the bench scripts share: the billing questions, a free loopback port, a nearest-rank percentile.

Standard library only, so that every bench can import it before anything heavy is loaded.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Billing questions the benches ask, in a fixed order (the example's help center answers all of them).
QUESTIONS = [
    "How long does a refund take to show up on my card?",
    "Can I get a refund on my annual plan?",
    "What happens if my card payment fails?",
    "How do I change my billing currency?",
    "Where can I download my invoices?",
    "How much does the Business plan cost per seat?",
    "Can I pay by bank transfer?",
    "How do I add my VAT ID to an invoice?",
    "How do I cancel my subscription?",
    "I was charged twice this month, what should I do?",
]


def spinner() -> subprocess.Popen[bytes]:
    """A separate process that keeps one core busy until it is killed (background load for ``--busy``)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


@contextmanager
def spinners(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` busy cores (:func:`spinner`) for the duration of the block; killed and reaped on exit."""
    procs = [spinner() for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..1 (``nan`` for no values)."""
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")
