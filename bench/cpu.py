"""Where the CPU went during a benchmark window: per process and in total, read from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK


def find_pids(command_name: str) -> list[int]:
    """PIDs whose executable name is `command_name` (read only; used to find the broker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command_name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def descendants(pid: int) -> list[int]:
    """`pid` and every living process under it (a server that forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def load_average() -> float:
    """The machine's 1-minute load average (what `uptime` prints first)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass
class CpuSnapshot:
    """CPU seconds of named groups of processes, plus the machine's total."""

    groups: dict[str, float]
    total: float

    @classmethod
    def take(cls, groups: dict[str, list[int]]) -> CpuSnapshot:
        return cls({name: sum(process_seconds(p) for p in pids) for name, pids in groups.items()},
                   busy_seconds())

    def until(self, later: CpuSnapshot) -> dict[str, float]:
        """CPU seconds used per group between this snapshot and `later`, with `other` and `total`."""
        used = {name: later.groups[name] - self.groups[name] for name in self.groups}
        total = later.total - self.total
        used["other"] = max(0.0, total - sum(used.values()))
        used["total"] = total
        return used


def wait_idle(*, busy_below: float = 0.15, window_s: float = 2.0, timeout_s: float = 600.0) -> float:
    """Block until the machine's busy fraction over `window_s` is below `busy_below` (other
    people's jobs would make a benchmark meaningless); returns the seconds waited."""
    import time

    cores = os.cpu_count() or 1
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        before = busy_seconds()
        time.sleep(window_s)
        if (busy_seconds() - before) / (window_s * cores) < busy_below:
            break
    return time.monotonic() - began
