"""Knative's SLO scenarios against a real ``knpy serve``, driven by k6 or locust, with plots.

Theory of operation. One ``knpy serve`` (fresh state dir under /tmp, free loopback ports; the
platform benchmark's ``Platform``) gets the scenario's services (``scenarios.py``) and, once
they are where the scenario starts (at zero pods, or serving), the load tool runs the plan.
Beside it, a sampler thread reads every revision's PodAutoscaler twice a second (desired and
ready pods, Knative's ``desiredScale`` and ``actualScale``); for rollout-probe another thread
moves the traffic. Afterwards every request, as the tool recorded it, is binned by the second
it started in: the request rate, p50/p99 latency and errors per second, plotted on one time
axis with the pods, and summed up per target in a table.

Run: .venv/bin/python benchmarks/load/run.py --tool k6|locust --scenario NAME [--duration S]
         [--out DIR]   (PNG and JSON there; default benchmarks/load/results)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    # Run as a script: make the repo's packages (benchmarks/ is not installed) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.load import scenarios as sc
from benchmarks.load.tools import TOOLS, Sample, Tool, ToolRun, plan_json, run_tool
from benchmarks.platform.run import Platform, until
from shared.apiclient import Api, apply_text
from shared.kube.resources import PODAUTOSCALERS, REVISIONS

HERE: Final = Path(__file__).resolve().parent
SAMPLE_EVERY_S: Final = 0.5
PROGRESS_EVERY_S: Final = 5.0
# rollout-probe's bar (Knative's rollout SLO): the rate received within 1 % of the rate sent.
ROLLOUT_RATE_TOLERANCE: Final = 0.01
# ... measured without the first and last seconds of the run, where the tools start and stop.
STEADY_MARGIN_S: Final = 2.0
# A scenario's services get this long to reach where the scenario starts.
SETUP_S: Final = 90.0

Json = dict[str, Any]


@dataclass
class PodSample:
    t_s: float  # unix time
    revision: str
    desired: int
    ready: int


@dataclass
class Sampler:
    """Polls the PodAutoscalers of the scenario's services' revisions until stopped."""

    api: Api
    services: tuple[str, ...]
    samples: list[PodSample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)  # (unix time, what)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            try:
                for svc in self.services:
                    revs = self.api.list(
                        REVISIONS, sc.NAMESPACE, f"serving.knative.dev/service={svc}"
                    )
                    for rev in revs:
                        name = rev["metadata"]["name"]
                        pa = self.api.get(PODAUTOSCALERS, sc.NAMESPACE, name) or {}
                        status = pa.get("status") or {}
                        desired = max(0, int(status.get("desiredScale", 0) or 0))
                        ready = int(status.get("actualScale", 0) or 0)
                        self.samples.append(PodSample(now, name, desired, ready))
            except Exception as err:  # the API may be busy; a gap in the plot, not a crash
                self.errors.append(f"{type(err).__name__}: {err}")
            self.stop.wait(SAMPLE_EVERY_S)

    def latest(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for s in self.samples[-8:]:
            out[s.revision] = (s.desired, s.ready)
        return out


# -- setting up ----------------------------------------------------------------------------------
def _ready(api: Api, revision: str) -> bool:
    rev = api.get(REVISIONS, sc.NAMESPACE, revision) or {}
    conditions = (rev.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _serving(p: Platform, revision: str) -> bool:
    return bool(p.revision(revision).get("actualReplicas", 0) >= 1)


def set_up(p: Platform, scenario: sc.Scenario) -> list[dict[str, str]]:
    """Deploy the scenario's services, wait until they are where it starts; the tool's targets."""
    # The config first: the webhook checks initial-scale 0 against it.
    p.apply(sc.AUTOSCALER_CONFIG)
    docs = []
    for name, notes in scenario.services.items():
        docs.append(sc.service_yaml(name, notes, cc=scenario.container_concurrency))
    p.apply(*docs)
    api = p.client()
    for name in scenario.services:
        rev = f"{name}-00001"
        until(functools.partial(_ready, api, rev), f"{rev} Ready", SETUP_S)
        if scenario.start_at_zero:
            until(functools.partial(p.at_zero, rev), f"{rev} at zero pods", SETUP_S)
        else:
            until(functools.partial(_serving, p, rev), f"{rev} serving", SETUP_S)
    targets = []
    for t in scenario.targets:
        if t.direct_to is not None:
            pods = [pod for pod in p.pods(f"{t.direct_to}-00001") if "port" in pod]
            url = f"http://127.0.0.1:{pods[0]['port']}{t.path}"
        else:
            url = f"http://127.0.0.1:{p.port}{t.path}"
        targets.append({"name": t.name, "url": url, "host": t.host})
    return targets


def roll_out(
    p: Platform, scenario: sc.Scenario, duration_s: float, sampler: Sampler, stop: threading.Event
) -> None:
    """rollout-probe: a new revision at 0 %, then the traffic moved to it in steps."""
    (name,) = scenario.services
    notes = scenario.services[name]
    old, new = f"{name}-00001", f"{name}-00002"
    started = time.monotonic()
    api = p.client()

    def at(fraction: float) -> bool:  # False: the run is over
        delay = started + fraction * duration_s - time.monotonic()
        return not stop.wait(max(0.0, delay))

    if not at(sc.ROLLOUT_CREATE_AT):
        return
    pinned: list[Json] = [
        {"revisionName": old, "percent": 100},
        {"latestRevision": True, "percent": 0},
    ]
    apply_text(api, sc.service_yaml(name, notes, version="2", traffic=pinned))
    sampler.events.append((time.time(), f"{new} created"))
    for fraction, percent in sc.ROLLOUT_STEPS:
        if not at(fraction):
            return
        # As Knative's Route, traffic moves only to a Ready revision: a late one delays the
        # step (and the later steps follow at their times or at once).
        while not _ready(api, new):
            if stop.wait(SAMPLE_EVERY_S):
                return
        traffic = [
            {"revisionName": old, "percent": 100 - percent},
            {"revisionName": new, "percent": percent},
        ]
        apply_text(api, sc.service_yaml(name, notes, version="2", traffic=traffic))
        sampler.events.append((time.time(), f"{percent} %"))


# -- figures -------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Series:
    """Per-second figures of one target, second 0 being the tool's start."""

    rate: list[int]
    p50_ms: list[float]
    p99_ms: list[float]
    errors: list[int]


def per_second(samples: list[Sample], t0: float, seconds: int) -> dict[str, Series]:
    by_target: dict[str, list[list[Sample]]] = {}
    for s in samples:
        bins = by_target.setdefault(s.target, [[] for _ in range(seconds)])
        i = int(s.start_s - t0)
        if 0 <= i < seconds:
            bins[i].append(s)
    out = {}
    for target, bins in by_target.items():
        lat = [[s.latency_ms for s in b if s.ok] for b in bins]
        out[target] = Series(
            rate=[len(b) for b in bins],
            p50_ms=[percentile(v, 0.5) for v in lat],
            p99_ms=[percentile(v, 0.99) for v in lat],
            errors=[sum(not s.ok for s in b) for b in bins],
        )
    return out


def summarize(scenario: sc.Scenario, tool: Tool, run: ToolRun, duration_s: float) -> dict[str, Any]:
    """Per target: requests, rate (planned and achieved), latency, errors; and the verdict."""
    rows: list[Json] = []
    planned_per_target = scenario.expected_requests(duration_s) / len(scenario.targets)
    for t in scenario.targets:
        mine = [s for s in run.samples if s.target == t.name]
        ok = [s.latency_ms for s in mine if s.ok]
        errors = len(mine) - len(ok)
        rows.append(
            {
                "target": t.name,
                "requests": len(mine),
                "planned": round(planned_per_target),
                "rate_rps": len(mine) / duration_s,
                "planned_rps": planned_per_target / duration_s,
                "p50_ms": percentile(ok, 0.5),
                "p99_ms": percentile(ok, 0.99),
                "max_ms": max(ok, default=math.nan),
                "errors": errors,
                "statuses": sorted({s.status for s in mine if not s.ok}),
            }
        )
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "tool": tool,
        "duration_s": duration_s,
        "targets": rows,
        "dropped": run.dropped,
    }
    if scenario.rollout:
        # The rate received in the steady part of the run (the tools take a second or two to
        # reach it and to stop) against the one sent.
        (stage,) = scenario.stages
        t0 = min((s.start_s for s in run.samples), default=0.0)
        lo, hi = t0 + STEADY_MARGIN_S, t0 + duration_s - STEADY_MARGIN_S
        steady = sum(lo <= s.start_s < hi for s in run.samples) / (hi - lo)
        off = abs(steady - stage.rate_rps) / stage.rate_rps
        result["steady_rps"] = steady
        result["rate_off"] = off
        result["pass"] = off <= ROLLOUT_RATE_TOLERANCE and rows[0]["errors"] == 0
    return result


def table(result: dict[str, Any], pods: list[PodSample]) -> str:
    head = ["target", "requests", "planned", "req/s", "p50 ms", "p99 ms", "max ms", "errors"]
    lines = [
        f"{result['scenario']} with {result['tool']}, {result['duration_s']:g} s",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["targets"]:
        cells = [
            r["target"], str(r["requests"]), str(r["planned"]), f"{r['rate_rps']:.1f}",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}",
            f"{r['errors']}" + (f" {r['statuses']}" if r["statuses"] else ""),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    peaks: dict[str, tuple[int, int]] = {}
    for s in pods:
        d, r = peaks.get(s.revision, (0, 0))
        peaks[s.revision] = (max(d, s.desired), max(r, s.ready))
    for rev, (d, r) in sorted(peaks.items()):
        lines.append(f"{rev}: peak desired {d} pods, peak ready {r}")
    if result["dropped"]:
        lines.append(f"k6 could not start {result['dropped']} planned requests (no free VU)")
    if "pass" in result:
        verdict = "PASS" if result["pass"] else "FAIL"
        lines.append(
            f"rollout: {result['steady_rps']:.2f} req/s received in the steady part, "
            f"{result['rate_off']:.2%} off the sent rate "
            f"(bar {ROLLOUT_RATE_TOLERANCE:.0%}), errors {result['targets'][0]['errors']}: "
            f"{verdict}"
        )
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------
def run(tool: Tool, scenario: sc.Scenario, duration_s: float, out: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"knpy-load-{scenario.name}-"))
    log = functools.partial(print, file=sys.stderr, flush=True)
    log(f"{scenario.name}: starting knpy serve in {workdir}")
    p = Platform(workdir)  # on failure the workdir (serve.log, the tool's log) is kept
    try:
        targets = set_up(p, scenario)
        log(f"{scenario.name}: {scenario.summary}; {tool} for {duration_s:g} s")
        sampler = Sampler(p.client(), tuple(scenario.services))
        threads = [threading.Thread(target=sampler.run, daemon=True)]
        stop_rollout = threading.Event()
        if scenario.rollout:
            rollout = functools.partial(roll_out, p, scenario, duration_s, sampler, stop_rollout)
            threads.append(threading.Thread(target=rollout, daemon=True))
        for th in threads:
            th.start()
        last = [0.0]

        def progress(elapsed: float) -> None:
            if elapsed - last[0] < PROGRESS_EVERY_S:
                return
            last[0] = elapsed
            pods = ", ".join(f"{r} {d}/{n}" for r, (d, n) in sorted(sampler.latest().items()))
            log(f"  {min(elapsed, duration_s):4.0f}/{duration_s:g} s   pods desired/ready: {pods}")

        plan = plan_json(targets, scenario.stages_s(duration_s))
        try:
            result_run = run_tool(tool, plan, workdir, duration_s=duration_s, tick=progress)
        finally:
            time.sleep(2 * SAMPLE_EVERY_S)
            stop_rollout.set()
            sampler.stop.set()
            for th in threads:
                th.join(30)
    finally:
        p.stop()
    result = summarize(scenario, tool, result_run, duration_s)
    result["pod_samples"] = len(sampler.samples)
    result["sampler_errors"] = sampler.errors[:5]
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{scenario.name}-{tool}"
    seconds = math.ceil(duration_s) + 1
    # Second 0 is the first request's: the tools take a second or so to start sending.
    t0 = min((s.start_s for s in result_run.samples), default=result_run.started_s)
    series = per_second(result_run.samples, t0, seconds)
    from benchmarks.load.plot import plot

    png = out / f"{stem}.png"
    plot(png, result, series, sampler.samples, sampler.events, t0, seconds)
    result["plot"] = str(png)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    print(table(result, sampler.samples))
    print(f"plot: {png}")
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("--scenario", choices=sorted(sc.SCENARIOS), required=True)
    parser.add_argument(
        "--duration", type=float, default=sc.DEFAULT_DURATION_S, help="seconds (default 60)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="PNG and JSON here")
    args = parser.parse_args(argv)
    if args.duration < 5:
        parser.error("--duration: at least 5 s (each rate step needs a second to ramp)")
    result = run(args.tool, sc.SCENARIOS[args.scenario], args.duration, args.out)
    return 1 if result.get("pass") is False else 0


if __name__ == "__main__":
    sys.exit(main())
