"""One PNG per run: request rate, p50/p99 latency, errors and pods on one time axis.

Matplotlib (the ``bench`` extra) with the Agg backend: no display needed. Small on purpose
(about 60 KB) so that the README can carry one per scenario.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.load.run import PodSample, Series

SIZE_IN = (8.0, 7.5)
DPI = 80


def plot(
    path: Path,
    result: Mapping[str, Any],
    series: Mapping[str, Series],
    pods: Sequence[PodSample],
    events: Sequence[tuple[float, str]],
    t0: float,
    seconds: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax_rate, ax_lat, ax_err, ax_pods) = plt.subplots(
        4, 1, sharex=True, figsize=SIZE_IN, dpi=DPI, height_ratios=(3, 3, 1.5, 2.5)
    )
    xs = list(range(seconds))
    for target, s in sorted(series.items()):
        ax_rate.step(xs, s.rate, where="post", label=target)
        line = ax_lat.plot(xs, s.p50_ms, label=f"{target} p50")[0]
        ax_lat.plot(xs, s.p99_ms, linestyle="--", color=line.get_color(), label=f"{target} p99")
        ax_err.step(xs, s.errors, where="post", label=target)
    ax_rate.set_ylabel("requests/s")
    ax_rate.legend(loc="lower right", fontsize="small")
    ax_lat.set_ylabel("latency ms")
    if any(v > 0 and not math.isnan(v) for s in series.values() for v in s.p99_ms):
        ax_lat.set_yscale("log")
        # Plain numbers at 1, 2 and 5 of each decade (5, 20, 2000), not powers of ten.
        ax_lat.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_lat.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_lat.yaxis.set_minor_formatter(NullFormatter())
    ax_lat.legend(loc="upper right", fontsize="x-small", ncol=2)
    ax_err.set_ylabel("errors/s")
    ax_err.set_ylim(bottom=0, top=max(1, *(max(s.errors, default=0) for s in series.values())))

    by_rev: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for p in pods:
        t, d, r = by_rev.setdefault(p.revision, ([], [], []))
        t.append(p.t_s - t0)
        d.append(p.desired)
        r.append(p.ready)
    for rev, (t, d, r) in sorted(by_rev.items()):
        line = ax_pods.step(t, d, where="post", linestyle="--", label=f"{rev} desired")[0]
        ax_pods.step(t, r, where="post", color=line.get_color(), label=f"{rev} ready")
    top = max([1, *(max(d + r) for _, d, r in by_rev.values())])
    ax_pods.set_ylim(-0.2, top + 0.8)
    ax_pods.yaxis.get_major_locator().set_params(integer=True)
    ax_pods.set_ylabel("pods")
    ax_pods.legend(loc="lower right", fontsize="x-small", ncol=2)
    ax_pods.set_xlabel("seconds since the load started")
    ax_pods.set_xlim(0, seconds)
    for when, what in events:
        for ax in (ax_rate, ax_lat, ax_err, ax_pods):
            ax.axvline(when - t0, color="grey", linewidth=0.6, linestyle=":")
        # Above the rate panel, in its x data and axes-fraction y.
        ax_rate.text(
            when - t0, 1.02, what, transform=ax_rate.get_xaxis_transform(),
            fontsize="x-small", ha="left", va="bottom",
        )  # fmt: skip
    for ax in (ax_rate, ax_lat, ax_err, ax_pods):
        ax.grid(True, linewidth=0.3)
    fig.suptitle(f"{result['scenario']} ({result['tool']}, {result['duration_s']:g} s)", y=0.995)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
