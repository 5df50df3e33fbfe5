"""The engine in-process: fake pods, a fake clock, a pod table; no sleeps, no cluster."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from autoscaler.config import EngineConfig
from autoscaler.configmap import AutoscalerConfig
from autoscaler.engine import AutoscalerEngine
from autoscaler.kpa import ActiveState
from shared.envconfig import ConfigError
from shared.seams import Endpoint, Mode, RevisionKey, RevisionSpec
from shared.stat_proto import StatData
from tests.autoscaler.kubeharness import T0, Clock, FakePods

pytestmark = pytest.mark.timeout(10)

KEY = RevisionKey("default", "hello-00001")
# Short windows, as the integration tests use: stable 6 s, grace 6 s.
CONFIG = {"stable-window": "6s", "scale-to-zero-grace-period": "6s"}


def pods(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"p{i}", "127.0.0.1", 8012 + i, 9090 + i) for i in range(n))


class PodTable:
    """The engine's PodSource: each revision's ready pods, as the test sets them."""

    def __init__(self) -> None:
        self.pods: dict[RevisionKey, tuple[Endpoint, ...]] = {}

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        return self.pods.get(key, ())


class Harness:
    def __init__(self, config: dict[str, str] = CONFIG) -> None:
        self.table = PodTable()
        self.clock = Clock()
        self.pods = FakePods()
        self.ticked: list[RevisionKey] = []
        self.forwarded: list[RevisionKey] = []
        self.foreign: set[RevisionKey] = set()
        cfg = EngineConfig(
            autoscaler=AutoscalerConfig.from_configmap(config), stat_port=0, metrics_port=0
        )
        self.svc = AutoscalerEngine(
            cfg,
            self.table,
            self.clock,
            on_tick=self.ticked.append,
            forward=self.forward,
            scrape_client=self.pods,
            rng=random.Random(1),
        )

    def forward(self, key: RevisionKey, _stat: StatData) -> bool:
        if key in self.foreign:
            self.forwarded.append(key)
            return True
        return False

    def add(self, cc: int = 10, annotations: dict[str, str] | None = None, n: int = 1) -> None:
        self.table.pods[KEY] = pods(n)
        spec = RevisionSpec(KEY, cc, annotations=MappingProxyType(annotations or {}))
        assert self.svc.upsert(spec) is not None

    async def second(self, seconds: int = 1) -> None:
        """Advance the fake clock second by second, scraping each, deciding every 2 s."""
        for _ in range(seconds):
            self.clock.now += 1
            await self.svc.scrape_all()
            if int(self.clock.now - T0) % 2 == 0:
                await self.svc.tick_all(self.clock.now)

    def latest(self) -> tuple[int, Mode]:
        tick = self.svc.latest(KEY)
        assert tick is not None
        d = tick.decision
        return d.desired_scale, d.mode


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.svc.stop()


async def test_steady_load_scales_to_target(h: Harness) -> None:
    """20 in flight, cc 10 at 70 %: target 7 per pod, ceil(20 / 7) = 3."""
    h.add(cc=10)
    h.pods.concurrency = 20.0
    await h.second(4)
    assert h.latest() == (3, Mode.PROXY)  # one ready pod holds 10 - 211 - 20 < 0: proxy


async def test_failing_scrapes_never_scale_a_busy_revision_down(h: Harness) -> None:
    """The only pod stops answering: no data, so the decision stays at 3 for a minute."""
    h.add(cc=10)
    h.pods.concurrency = 20.0
    await h.second(4)
    h.pods.failing = {"p0"}
    await h.second(60)
    assert h.latest()[0] == 3
    assert h.svc.collector.last_error(KEY) is not None
    assert h.svc.metrics.scrape_failed.value >= 60


async def test_vanished_pod_and_revision_do_not_break_the_loop(h: Harness) -> None:
    h.add(cc=10, n=2)
    h.pods.concurrency = 5.0
    await h.second(2)
    h.table.pods[KEY] = ()  # both pods gone
    await h.second(2)
    h.svc.delete(KEY)
    await h.second(2)
    assert KEY not in h.svc.multiscaler
    assert KEY not in h.svc.collector


@pytest.mark.parametrize(
    ("tbc", "inactive_at", "zero_at"),
    [
        # Serve mode while active: proxy mode starts at inactive (t=8), zero a grace later.
        pytest.param("0", 8, 14, id="serve-mode-waits-grace"),
        # TBC 211 > one pod's 10: the activator was in the path all along, so the grace
        # period is already served when the revision turns inactive (Knative's fast path).
        pytest.param("211", 8, 10, id="proxied-all-along-fast-path"),
    ],
)
async def test_idle_revision_goes_to_zero_after_window_and_grace(
    tbc: str, inactive_at: int, zero_at: int
) -> None:
    """Stable window 6 s, grace 6 s, no requests: active at t=2, one pod until inactive."""
    h = Harness({**CONFIG, "target-burst-capacity": tbc})
    h.add(cc=10)
    first_inactive = first_zero = None
    for t in range(2, 20, 2):
        await h.second(2)
        status = h.svc.multiscaler.status(KEY)
        assert status is not None
        if status.active is ActiveState.INACTIVE and first_inactive is None:
            first_inactive = t
        if h.latest()[0] == 0 and first_zero is None:
            first_zero = t
            h.table.pods[KEY] = ()  # the platform removes the pod
        elif first_zero is None and t > 2:
            assert h.latest()[0] == 1
    assert (first_inactive, first_zero) == (inactive_at, zero_at)
    assert h.latest() == (0, Mode.PROXY)
    await h.svc.stop()


async def test_activator_stat_pokes_a_revision_at_zero(h: Harness) -> None:
    """At zero, the activator's first report decides at once, not at the next 2-s tick."""
    h.add(cc=10)
    await h.second(14)
    h.table.pods[KEY] = ()
    await h.second(2)
    assert h.latest() == (0, Mode.PROXY)
    h.ticked.clear()
    activator = StatData("activator", 1.0, 0.0, 1.0, 0.0, 0.0, int(h.clock.now))
    h.svc._on_stat(KEY, activator)
    for _ in range(100):  # the poke runs as a task: no clock advance, no 2-s tick
        if h.ticked:
            break
        await asyncio.sleep(0)
    assert h.ticked == [KEY]
    assert h.latest() == (1, Mode.PROXY)


@pytest.mark.parametrize(
    ("key", "foreign", "recorded", "forwarded"),
    [
        pytest.param(KEY, False, True, False, id="decided-here-recorded"),
        pytest.param(KEY, True, False, True, id="other-bucket-forwarded"),
        pytest.param(RevisionKey("default", "no-metric"), False, False, False,
                     id="no-metric-dropped"),
    ],
)  # fmt: skip
async def test_stat_routing(
    h: Harness, key: RevisionKey, foreign: bool, recorded: bool, forwarded: bool
) -> None:
    """Knative's stat path: forward another bucket's, record only revisions with a Metric."""
    h.add(cc=10)
    if foreign:
        h.foreign.add(key)
    h.svc._on_stat(key, StatData("activator", 5.0, 0.0, 5.0, 0.0, 0.0, int(h.clock.now)))
    stable = h.svc.collector.stable_and_panic_concurrency(KEY, h.clock.now + 1)
    assert (stable is not None) is recorded
    assert (h.forwarded == [key]) is forwarded


async def test_every_tick_reaches_the_reconciler(h: Harness) -> None:
    """Level-based: on_tick runs on every decision, also when nothing changed."""
    h.add(cc=10)
    h.pods.concurrency = 5.0
    await h.second(8)
    assert h.ticked == [KEY] * 4


async def test_reconfigure_resolves_again(h: Harness) -> None:
    h.add(cc=10)
    scaling = h.svc.multiscaler.scaling(KEY)
    assert scaling is not None and scaling.metric.stable_window_s == 6.0
    h.svc.reconfigure(AutoscalerConfig.from_configmap({"stable-window": "12s"}))
    h.add(cc=10)  # the same spec: resolved again under the new config
    scaling = h.svc.multiscaler.scaling(KEY)
    assert scaling is not None and scaling.metric.stable_window_s == 12.0


async def test_invalid_and_hpa_revisions_are_left_alone(h: Harness) -> None:
    bad = RevisionSpec(
        RevisionKey("default", "bad"), annotations={"autoscaling.knative.dev/min-scale": "x"}
    )
    hpa = RevisionSpec(
        RevisionKey("default", "hpa"),
        annotations={"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
    )
    with pytest.raises(ConfigError, match="min-scale"):
        h.svc.upsert(bad)
    assert h.svc.upsert(hpa) is None
    assert len(h.svc.multiscaler) == 0
