"""How many threads latency is timed on: a fixed count that does not oversubscribe the cores.

Timing on every core while another process computes on one of them makes torch's thread pool wait for its
slowest thread at every op, so a 2-thread timing on a busy 2-core machine swings by whole multiples. The default
is the physical cores this process may run on, minus one when other work runs (the 1-minute load average,
less this process's own share, is at least half a core), never more than torch's current setting (a worker of a
pool already has its share) and at least 1. The count and the reason travel in the Result's provenance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Other work counts as running when the load it adds is at least half a core on average over the last minute.
BUSY_LOAD = 0.5


@dataclass(frozen=True)
class TimingThreads:
    threads: int
    reason: str

    def to_dict(self) -> dict:
        return {"threads": self.threads, "reason": self.reason}


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            processor = physical = core = None
            for line in [*info, ""]:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    processor = int(value)
                elif key == "physical id":
                    physical = value
                elif key == "core id":
                    core = value
                elif not key:
                    if processor is not None and processor in allowed:
                        cores.add((physical or "0", core if core is not None else str(processor)))
                    processor = physical = core = None
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(allowed))


def other_load() -> float:
    """The 1-minute load average less this process's own share (one runnable thread), never below 0."""
    try:
        return max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):
        return 0.0


def timing_threads(requested: int | None = None, *, cores: int | None = None, load: float | None = None,
                   current: int | None = None) -> TimingThreads:
    """The thread count to time on now (``requested`` wins when given), and why."""
    if requested:
        return TimingThreads(int(requested), "requested")
    if current is None:
        import torch

        current = torch.get_num_threads()
    cores = physical_cores() if cores is None else cores
    load = other_load() if load is None else load
    if load >= BUSY_LOAD and cores > 1:
        threads, reason = cores - 1, f"{cores} physical cores minus one: other work runs (load {load:.2f})"
    else:
        threads, reason = cores, f"{cores} physical cores, no other work running (load {load:.2f})"
    if current < threads:
        threads, reason = current, f"torch's setting of {current} (this process's share of the cores)"
    return TimingThreads(max(1, threads), reason)
