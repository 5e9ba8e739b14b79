"""The serving benchmark's report: its rows, the headline against the goals, the doc block it fills.

`bench/serve.py` measures; this module only formats. A row carries its rates and latencies, the
CPU each process group spent per image, the resident memory and start-to-ready time of the
processes that serve (each DermaScan worker; a peer's server processes) and the machine's load
average when it ended: this machine is shared, so only ratios within one run compare.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

BLOCK_START, BLOCK_END = "<!-- serving-benchmark:start -->", "<!-- serving-benchmark:end -->"
#: Where `bench/serve.py` writes its report unless told otherwise.
DEFAULT_DOC = Path("docs") / "serving.md"
#: The one-client latency goal: at most the model's batch-1 time on all cores plus this.
P50_MARGIN_MS = 3.0
#: The goals at many clients: this share of the raw limit, this multiple of the best BentoML.
LIMIT_SHARE, PEER_MULTIPLE = 0.85, 1.3


@dataclass
class Row:
    """One line of the results table."""

    system: str
    clients: int
    rate: float
    p50: float
    p90: float
    p99: float
    errors: int = 0
    rejected: int = 0
    mean_batch: float = float("nan")
    cpu_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: Resident memory (MB) of each serving process when the row's window ended.
    rss_mb: list[float] = field(default_factory=list)
    #: Seconds from exec to serving, per serving process (or for the whole server).
    ready_s: list[float] = field(default_factory=list)
    #: The machine's 1-minute load average when the row's window ended.
    load: float = float("nan")


def _joined(values: list[float], digits: int) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def format_row(row: Row, limit: float) -> str:
    cpu = row.cpu_ms
    cpu_text = (f"{cpu.get('gateway', 0):.1f} / {cpu.get('workers', 0):.1f} / {cpu.get('loadgen', 0):.1f} / "
                f"{cpu.get('rabbitmq', 0):.1f} / {cpu.get('other', 0):.1f}" if cpu else "")
    ratio = row.rate / limit if limit and not math.isnan(limit) else float("nan")
    load = "" if math.isnan(row.load) else f"{row.load:.1f}"
    return (f"| {row.system} | {row.clients} | {row.rate:.1f} | {row.p50:.1f} | {row.p90:.1f} "
            f"| {row.p99:.1f} | {row.errors} | {row.rejected} | {row.mean_batch:.2f} | {ratio:.2f} "
            f"| {cpu_text} | {_joined(row.rss_mb, 0)} | {_joined(row.ready_s, 1)} | {load} | {row.note} |")


HEADER = ("| system | clients | img/s | p50 ms | p90 ms | p99 ms | errors | 429s | mean batch "
          "| x raw limit | CPU ms/img server / workers / loadgen / rabbit / other "
          "| RSS MB (each serving process) | start to ready s | load | notes |\n|" + "---|" * 15)


def headline(rows: list[Row], batch1_rate: float, batch1_p50: float, limit: float, many: int) -> list[str]:
    """The issue's summary: each served system at 1 and `many` clients beside the raw figures
    (the model alone on every core for one image; the raw limit), then the goals judged on this
    run's figures. Systems without both rows are left out."""
    systems = [s for s in dict.fromkeys(r.system for r in rows if not r.system.startswith("raw"))
               if any(r.system == s and r.clients == 1 for r in rows)
               and any(r.system == s and r.clients == many for r in rows)]
    lines = [f"| system | 1 client img/s | 1 client p50 ms | {many} clients img/s | x raw limit "
             f"| RSS MB (each serving process) | start to ready s |", "|" + "---|" * 7,
             f"| the model alone on LiteRT, one image on every core | {batch1_rate:.1f} | {batch1_p50:.1f} "
             f"| | | | |", f"| the raw limit (best in-process rate) | | | {limit:.1f} | 1.00 | | |"]
    at: dict[tuple[str, int], Row] = {(r.system, r.clients): r for r in rows}
    for system in systems:
        one, crowd = at[(system, 1)], at[(system, many)]
        lines.append(f"| {system} | {one.rate:.1f} | {one.p50:.1f} | {crowd.rate:.1f} "
                     f"| {crowd.rate / limit:.2f} | {_joined(crowd.rss_mb, 0)} | {_joined(one.ready_s, 1)} |")
    ours = [s for s in systems if s.startswith("DermaScan")]
    peers = [at[(s, many)].rate for s in systems if s.startswith("BentoML")]
    lines.append("")
    for system in ours:
        p50, rate = at[(system, 1)].p50, at[(system, many)].rate
        goals = [f"1-client p50 {p50:.1f} ms {'<=' if p50 <= batch1_p50 + P50_MARGIN_MS else '>'} "
                 f"{batch1_p50:.1f} + {P50_MARGIN_MS:g} ms",
                 f"{many} clients {rate / limit:.2f} x the raw limit (goal >= {LIMIT_SHARE})"]
        if peers:
            goals.append(f"{rate / max(peers):.2f} x BentoML's best (goal >= {PEER_MULTIPLE})")
        lines.append(f"- {system}: " + "; ".join(goals) + ".")
    return lines


@dataclass
class Pair:
    """One back-to-back measurement of the raw limit, DermaScan and the naive servers."""

    raw: float
    dermascan: float
    naive: float  # FastAPI, the reference
    naive_aiohttp: float

    @property
    def ratio(self) -> float:
        return self.dermascan / self.raw

    @property
    def speedup(self) -> float:
        return self.dermascan / self.naive

    @property
    def speedup_aiohttp(self) -> float:
        return self.dermascan / self.naive_aiohttp

    def figures(self) -> list[float]:
        """The table's columns after the run's name."""
        return [self.raw, self.dermascan, self.naive, self.naive_aiohttp, self.ratio, self.speedup,
                self.speedup_aiohttp]


PAIR_HEADER = ("| run | raw limit img/s | DermaScan img/s | naive FastAPI img/s | naive aiohttp img/s | "
               "DermaScan / raw | DermaScan / naive FastAPI | DermaScan / naive aiohttp |\n|" + "---|" * 8)


def _pair_row(name: object, figures: list[float]) -> str:
    rates, ratio, speedups = figures[:4], figures[4], figures[5:]
    return (f"| {name} | " + " | ".join(f"{v:.1f}" for v in rates) + f" | {ratio:.2f} | "
            + " | ".join(f"{v:.1f}" for v in speedups) + " |")


def format_pair(name: object, pair: Pair) -> str:
    return _pair_row(name, pair.figures())


def format_median(pairs: list[Pair]) -> str:
    """Each column's median over the runs (ratios included: the median of the ratios)."""
    columns = zip(*(p.figures() for p in pairs), strict=True)
    return _pair_row("median", [statistics.median(column) for column in columns])


def check_block(doc: Path) -> None:
    """Refuse (SystemExit, saying why) a `doc` without the benchmark's block, before a run."""
    text = doc.read_text() if doc.is_file() else ""
    start, end = text.find(BLOCK_START), text.find(BLOCK_END)
    if start < 0 or end < start:
        raise SystemExit(f"{doc} has no {BLOCK_START} ... {BLOCK_END} block to write the results into")


def write_block(doc: Path, report: str) -> None:
    """Replace what lies between `doc`'s serving-benchmark markers with `report`; raises
    SystemExit when it has none (see `check_block`)."""
    check_block(doc)
    text = doc.read_text()
    start, end = text.find(BLOCK_START), text.find(BLOCK_END)
    doc.write_text(f"{text[:start]}{BLOCK_START}\n{report}\n{text[end:]}")
