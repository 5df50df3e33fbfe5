"""A real Prometheus (Debian's package; ``.ci/run`` installs it) on the ``prometheus.yml`` that
``knpy serve`` writes, while a known load runs through the ingress.

The load is open-loop: 20 requests a second for 24 s, each holding its pod for 200 ms, so about
4 requests are in flight; the revision's target of 1 concurrent request per pod, all of it
used (target-utilization-percentage 100), makes the autoscaler want ~4 pods, capped at 2 by
max-scale. At Knative's default of 70 % the warm-up's one request held at zero pods already
asked for ceil(1 / 0.7) = 2, which the 60 s stable window kept until the load: the "desired
pods rise with the load" check then failed whenever the warm-up was seen whole. The test then asks
Prometheus, over its HTTP API, what a user would: are all targets up; is the request rate the
queue-proxies report the rate that was sent; did the autoscaler's desired pods rise, and the
ready pods follow; does ``promtool check metrics`` pass on every endpoint; and does every query
of the Grafana dashboards in deploy/grafana return series.

Default autoscaler windows (60 s stable) keep the revision at its peak while the test reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from shared.ports import free_port

from .harness import REPO_ROOT, STEP_S, WAIT_S, Serve, hello_yaml

Json = dict[str, Any]

HOST: Final = "hello.default.localhost"
REVISION: Final = "hello-00001"
RATE_PER_S: Final = 20
LOAD_S: Final = 24
SLEEP_PATH: Final = "/sleep?ms=200"
MAX_SCALE: Final = 2
# The rate window must hold several 2 s scrapes of every pod; shorter means a scale-up so slow
# that the test says so rather than judging a rate from two samples.
MIN_RATE_WINDOW_S: Final = 6
RATE_TOLERANCE: Final = 0.05
DASHBOARDS: Final = sorted((REPO_ROOT / "deploy" / "grafana").glob("*.json"))
# What the dashboards' template variables take in this test; $__rate_interval as Grafana
# computes it for a 2 s scrape interval (4 x scrape, at least 8 s) with some room.
VARIABLES: Final = {
    "namespace": "default",
    "configuration": "hello",
    "revision": REVISION,
    "__rate_interval": "10s",
}


class Prometheus:
    """One Prometheus process on a free port, and the few API calls the test makes."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_S))

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            doc = await resp.json()
            assert resp.status == 200 and doc["status"] == "success", (path, params, doc)
            return doc["data"]

    async def query(self, expr: str, at: float) -> list[Json]:
        result: list[Json] = (await self.api("query", query=expr, time=f"{at:.3f}"))["result"]
        return result

    async def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[Json]:
        data = await self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        result: list[Json] = data["result"]
        return result

    async def targets(self) -> list[Json]:
        active: list[Json] = (await self.api("targets", state="active"))["activeTargets"]
        return active


@asynccontextmanager
async def prometheus(config: Path, tmp: Path) -> AsyncIterator[Prometheus]:
    """Prometheus on ``config`` with its storage under ``tmp`` (1 h retention), until exit."""
    proc, url, log = _start_prometheus(config, tmp)
    prom = Prometheus(proc, url, log)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                async with prom.session.get(f"{url}/-/ready") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert proc.poll() is None, f"prometheus exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"prometheus not ready: {log.read_text()}"
            await asyncio.sleep(0.1)
        yield prom
    finally:
        await prom.session.close()
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_prometheus(config: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Started on a free port; tried again on another if that one was taken meanwhile."""
    for attempt in range(3):
        port = free_port()
        log = tmp / f"prometheus-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / f'prometheus-data-{attempt}'}",
                    "--storage.tsdb.retention.time=1h",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        time.sleep(0.3)
        if proc.poll() is None or "address already in use" not in log.read_text():
            return proc, f"http://127.0.0.1:{port}", log
    raise AssertionError(f"prometheus did not start: {log.read_text()}")


def _promtool_check(text: bytes) -> str:
    """promtool's complaints about one exposition ("" when clean)."""
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=STEP_S
    )
    out = (done.stdout + done.stderr).decode().strip()
    return out if done.returncode != 0 or out else ""


def _panel_queries(dashboard: Json) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                yield nested["title"], target["expr"]


def _substitute(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in VARIABLES, f"unknown dashboard variable ${name} in {expr}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


async def _send_load(s: Serve, started: float) -> tuple[list[float], list[str], float]:
    """RATE_PER_S requests a second for LOAD_S, each at its scheduled time whatever the
    answers before it do; returns the send times, the failures, and the worst lateness."""
    sent: list[float] = []
    failures: list[str] = []
    late = 0.0

    async def one() -> None:
        try:
            status, body = await s.request(HOST, SLEEP_PATH)
        except (aiohttp.ClientError, TimeoutError) as err:
            failures.append(f"{type(err).__name__}: {err}")
            return
        if status != 200:
            failures.append(f"{status}: {body[:200]}")

    tasks = []
    for i in range(RATE_PER_S * LOAD_S):
        due = started + i / RATE_PER_S
        await asyncio.sleep(max(0.0, due - time.time()))
        now = time.time()
        late = max(late, now - due)
        sent.append(now)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return sent, failures, late


async def _all_up(prom: Prometheus, want: int) -> list[Json]:
    """Wait until Prometheus has at least ``want`` targets and every one is up."""
    deadline = time.monotonic() + WAIT_S
    while True:
        targets = await prom.targets()
        if len(targets) >= want and all(t["health"] == "up" for t in targets):
            return targets
        if time.monotonic() > deadline:
            raise AssertionError(
                "targets not all up: "
                + json.dumps([(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets])
            )
        await asyncio.sleep(0.5)


def _values(series: Json) -> list[tuple[float, float]]:
    return [(float(t), float(v)) for t, v in series["values"]]


@pytest.mark.timeout(150)
async def test_prometheus_scrapes_everything_and_sees_the_load(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    for tool in ("prometheus", "promtool"):
        assert shutil.which(tool), f"no {tool}: .ci/run installs Debian's prometheus package"
    s = serve()
    annotations = (
        f"autoscaling.knative.dev/target: '1', autoscaling.knative.dev/max-scale: '{MAX_SCALE}',"
        " autoscaling.knative.dev/target-utilization-percentage: '100'"
    )
    await s.apply(hello_yaml(annotations=annotations))
    await s.answers(HOST, REVISION)
    config = s.state / "prometheus.yml"
    assert config.exists(), "knpy serve wrote no prometheus.yml"

    async with prometheus(config, tmp_path) as prom:
        # The platform, the activator, the autoscaler and the pod's two queue-proxy ports.
        await _all_up(prom, 5)
        counted = (
            f'sum(kn_serving_invocation_duration_seconds_count{{kn_revision_name="{REVISION}"}})'
        )

        async def counted_now() -> float:
            result = await prom.query(counted, time.time())
            return float(result[0]["value"][1]) if result else -1.0

        # The warm-up requests counted and scraped: the count stands still over a scrape.
        before = await counted_now()
        while True:
            await asyncio.sleep(2.2)
            now_counted = await counted_now()
            if now_counted == before:
                break
            before = now_counted

        started = time.time()
        sent, failures, late = await _send_load(s, started)
        ended = sent[-1]
        assert failures == [], failures[:5]
        assert late < 1.0, f"the load client fell {late:.2f} s behind its schedule"
        # The last answers scraped (the count is exact: checked below).
        deadline = time.monotonic() + WAIT_S
        while await counted_now() < before + len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

        # -- every target is up, and they are what knpy serve lists --------------------------
        targets = await _all_up(prom, 5)
        async with s.client().get(f"{s.api}/knpy/v1/targets", headers=s.auth()) as resp:
            listed = {t for group in await resp.json() for t in group["targets"]}
        assert {t["labels"]["instance"] for t in targets} == listed
        pods = {
            t["labels"].get("pod") for t in targets if t["labels"]["component"] == "queue-proxy"
        }
        assert len(pods) >= 2, f"expected the scale-up's pods among the targets: {pods}"

        # -- every request the queue-proxies answered, once ------------------------------------
        after = await counted_now()
        assert after - before == len(sent), (before, after, len(sent))

        # -- the request rate, over the part of the load where every pod was scraped ----------
        first_seen = [
            _values(series)[0][0]
            for series in await prom.query_range(
                f'kn_serving_invocation_duration_seconds_count{{kn_revision_name="{REVISION}"}}',
                started - 10,
                ended,
            )
        ]
        window_start = max([started, *first_seen]) + 2  # a scrape of each pod inside the window
        window_s = int(ended - window_start)
        assert window_s >= MIN_RATE_WINDOW_S, (
            f"the last pod was first scraped {window_start - started:.1f} s into a {LOAD_S} s load"
        )
        rate_expr = (
            f"sum(rate(kn_serving_invocation_duration_seconds_count"
            f'{{kn_revision_name="{REVISION}"}}[{window_s}s]))'
        )
        rate = float((await prom.query(rate_expr, ended))[0]["value"][1])
        assert abs(rate - RATE_PER_S) <= RATE_TOLERANCE * RATE_PER_S, (rate, window_s)

        # -- the autoscaler's desired pods follow the scale-up, ready pods follow them ---------
        selector = f'{{kn_revision_name="{REVISION}"}}'
        (desired,) = await prom.query_range(
            f"kn_revision_pods_desired{selector}", started - 6, ended
        )
        (actual,) = await prom.query_range(f"kn_revision_pods_actual{selector}", started - 6, ended)
        before_load = [v for t, v in _values(desired) if t < started]
        assert before_load and max(before_load) <= 1, _values(desired)
        rose_at = next((t for t, v in _values(desired) if v >= 2), None)
        assert rose_at is not None, f"desired pods never rose: {_values(desired)}"
        ready_at = next((t for t, v in _values(actual) if v >= 2), None)
        assert ready_at is not None, f"ready pods never reached 2: {_values(actual)}"
        assert ready_at >= rose_at, (rose_at, ready_at)
        print(
            f"prometheus: {len(targets)} targets up; {len(sent)} requests sent, "
            f"{after - before:g} counted; rate {rate:.2f}/s over {window_s} s "
            f"(sent {RATE_PER_S}/s); desired >= 2 at +{rose_at - started:.1f} s, "
            f"2 ready at +{ready_at - started:.1f} s"
        )

        # -- promtool is content with every endpoint -------------------------------------------
        complaints = {}
        for target in targets:
            url = target["scrapeUrl"]
            headers = s.auth() if target["labels"]["component"] == "platform" else {}
            async with s.client().get(url, headers=headers) as resp:
                assert resp.status == 200, (url, resp.status)
                body = await resp.read()
            complaint = await asyncio.to_thread(_promtool_check, body)
            if complaint:
                complaints[f"{target['labels']['component']} {url}"] = complaint
        assert complaints == {}, complaints

        # -- every dashboard query returns series for this load --------------------------------
        assert len(DASHBOARDS) >= 2, DASHBOARDS
        empty = []
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            for variable in dashboard["templating"]["list"]:
                if variable["type"] != "query":
                    continue
                match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
                assert match, variable["query"]
                values = await prom.api(
                    f"label/{match.group(2)}/values",
                    **{"match[]": _substitute(match.group(1))},
                    start=f"{started:.3f}",
                    end=f"{ended:.3f}",
                )
                assert VARIABLES[variable["name"]] in values, (path.name, variable["name"], values)
            for title, expr in _panel_queries(dashboard):
                if not await prom.query_range(_substitute(expr), started, ended + 4, step=2):
                    empty.append(f"{path.name}: {title}: {expr}")
        assert empty == [], "queries with no series:\n" + "\n".join(empty)
