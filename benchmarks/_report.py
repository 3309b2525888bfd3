"""Report helpers shared by the benchmark scripts: host facts and plain-text tables."""

import os
import platform
from pathlib import Path


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Plain-text table: the first column left-aligned, numeric columns right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def isnum(s: str) -> bool:
        s = s.replace(",", "").replace(".", "").replace("-", "").replace("%", "").strip()
        return s.isdigit() or s == ""

    numeric = [i > 0 and all(isnum(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells):
        return (indent + "  ".join(c.rjust(w) if num else c.ljust(w)
                                   for c, w, num in zip(cells, widths, numeric))).rstrip()

    return "\n".join([line(headers), indent + "  ".join("-" * w for w in widths)]
                     + [line(r) for r in rows])


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.1 else f"{x * 1e3:.1f} ms"


def dispatcher_counts(disp) -> tuple[int, int]:
    st = disp.stats
    return sum(st.cache_hits.values()), sum(st.cache_misses.values())
