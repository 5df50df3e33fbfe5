"""The service shell in-process: fake pods, a fake clock, the in-memory cluster; no sleeps."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from autoscaler.config import AutoscalerConfig
from autoscaler.kpa import ActiveState
from autoscaler.scraper import ScrapeError
from autoscaler.service import AutoscalerService, ServiceConfig, parse_configmap, resolve_scaling
from shared.envconfig import ConfigError
from shared.seams import (
    Endpoint,
    InMemoryCluster,
    Mode,
    RevisionKey,
    RevisionSpec,
    ScaleDecision,
    Scaler,
)
from shared.stat import StatData

pytestmark = pytest.mark.timeout(10)

KEY = RevisionKey("default", "hello-00001")
T0 = 1_700_000_000.0
# Short windows, as the integration tests use: stable 6 s, grace 6 s.
CONFIG = {"stable-window": "6s", "scale-to-zero-grace-period": "6s"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakePods:
    """Every pod reports ``concurrency``; pods named in ``failing`` refuse."""

    def __init__(self) -> None:
        self.concurrency = 0.0
        self.failing: set[str] = set()

    async def scrape(self, endpoint: Endpoint) -> StatData:
        if endpoint.pod_name in self.failing:
            raise ScrapeError(f"{endpoint.pod_name}: connection refused")
        return StatData(endpoint.pod_name, self.concurrency, 0.0, self.concurrency, 0.0)


def pods(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"p{i}", "127.0.0.1", 8012 + i, 9090 + i) for i in range(n))


class Harness:
    def __init__(self, config: dict[str, str] = CONFIG, scaler: Scaler | None = None) -> None:
        self.cluster = InMemoryCluster()
        self.clock = Clock()
        self.pods = FakePods()
        cfg = ServiceConfig(
            autoscaler=AutoscalerConfig.from_configmap(config), stat_port=0, metrics_port=0
        )
        self.svc = AutoscalerService(
            cfg,
            self.cluster,
            self.cluster,
            scaler or self.cluster,
            self.clock,
            scrape_client=self.pods,
            rng=random.Random(1),
        )

    def add(self, cc: int = 10, annotations: dict[str, str] | None = None, n: int = 1) -> None:
        self.cluster.set_endpoints(KEY, pods(n))
        spec = RevisionSpec(KEY, cc, annotations=MappingProxyType(annotations or {}))
        self.cluster.put_revision(spec)
        self.svc.sync_revisions({KEY: spec})

    async def second(self, seconds: int = 1) -> None:
        """Advance the fake clock second by second, scraping each, deciding every 2 s."""
        for _ in range(seconds):
            self.clock.now += 1
            await self.svc.scrape_all()
            if int(self.clock.now - T0) % 2 == 0:
                await self.svc.tick_all(self.clock.now)

    def latest(self) -> tuple[int, Mode]:
        d = self.cluster.latest(KEY)
        assert d is not None
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
    h.cluster.set_endpoints(KEY, ())  # both pods gone
    await h.second(2)
    h.cluster.delete_revision(KEY)
    h.svc.sync_revisions({})
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
            h.cluster.set_endpoints(KEY, ())  # the platform removes the pod
        elif first_zero is None and t > 2:
            assert h.latest()[0] == 1
    assert (first_inactive, first_zero) == (inactive_at, zero_at)
    assert h.latest() == (0, Mode.PROXY)
    await h.svc.stop()


async def test_activator_stat_pokes_a_revision_at_zero(h: Harness) -> None:
    """At zero, the activator's first report decides at once, not at the next 2-s tick."""
    h.add(cc=10)
    await h.second(14)
    h.cluster.set_endpoints(KEY, ())
    await h.second(2)
    assert h.latest() == (0, Mode.PROXY)
    activator = StatData("activator", 1.0, 0.0, 1.0, 0.0, 0.0, int(h.clock.now))
    h.svc._on_stat(KEY, activator)
    decision = await h.cluster.next_decision(timeout_s=2)
    assert (decision.desired_scale, decision.mode) == (1, Mode.PROXY)


async def test_invalid_and_hpa_revisions_are_left_alone(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bad = RevisionSpec(
        RevisionKey("default", "bad"), annotations={"autoscaling.knative.dev/min-scale": "x"}
    )
    hpa = RevisionSpec(
        RevisionKey("default", "hpa"),
        annotations={"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
    )
    with caplog.at_level(logging.ERROR):
        h.svc.sync_revisions({bad.key: bad, hpa.key: hpa})
    assert "default/bad: not scaled" in caplog.text
    assert "min-scale" in caplog.text
    assert len(h.svc.multiscaler) == 0


def test_resolve_scaling_short_windows_and_tbc() -> None:
    cfg = AutoscalerConfig.from_configmap({**CONFIG, "target-burst-capacity": "-1"})
    scaling = resolve_scaling(RevisionSpec(KEY, 10), cfg)
    assert scaling is not None
    assert (scaling.decider.target_value, scaling.decider.total_value) == (7.0, 10.0)
    assert (scaling.metric.stable_window_s, scaling.metric.panic_window_s) == (6.0, 1.0)
    assert not scaling.metric.scraped  # TBC -1: the activator's stats only
    assert scaling.kpa.scale_to_zero_grace_period_s == 6.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param('{"stable-window": "6s"}', {"stable-window": "6s"}, id="json"),
        pytest.param("enable-scale-to-zero: true\nmax-scale: 3\n", {
            "enable-scale-to-zero": "true", "max-scale": "3"}, id="yaml-scalars"),
        pytest.param(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler}\n"
            "data:\n  stable-window: 6s\n",
            {"stable-window": "6s"},
            id="configmap-manifest",
        ),
    ],
)  # fmt: skip
def test_parse_configmap(text: str, want: dict[str, str]) -> None:
    assert parse_configmap(text) == want


@pytest.mark.parametrize(
    "text", [pytest.param("[1, 2]", id="list"), pytest.param("a: {b: 1}", id="nested")]
)
def test_parse_configmap_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_configmap(text)


def test_service_config_from_env_names_the_variable() -> None:
    cfg = ServiceConfig.from_env({"AUTOSCALER_STAT_PORT": "18080"}, {"stable-window": "6s"})
    assert cfg.stat_port == 18080 and cfg.metrics_port == 9090
    assert cfg.autoscaler.stable_window == 6.0
    with pytest.raises(ConfigError, match="AUTOSCALER_METRICS_PORT"):
        ServiceConfig.from_env({"AUTOSCALER_METRICS_PORT": "x"})
    with pytest.raises(ConfigError, match="stable-window"):
        ServiceConfig.from_env({}, {"stable-window": "1s"})


class FlakyScaler:
    """The platform refuses the first decision, then takes them into the cluster."""

    def __init__(self) -> None:
        self.cluster = InMemoryCluster()
        self.calls = 0

    async def apply(self, decision: ScaleDecision) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("platform down")
        await self.cluster.apply(decision)


async def test_publish_failure_is_retried_next_tick() -> None:
    scaler = FlakyScaler()
    h = Harness(scaler=scaler)
    scaler.cluster = h.cluster
    h.add(cc=10)
    h.pods.concurrency = 20.0
    await h.second(6)
    assert scaler.calls >= 2
    assert h.latest()[0] == 3
    await h.svc.stop()


@pytest.mark.parametrize(
    ("reachable", "want_min", "want_reachable"),
    [
        pytest.param(True, 2, True, id="routed: min-scale holds"),
        pytest.param(False, 0, False, id="unreachable: min-scale ignored, no rate limit"),
    ],
)
def test_resolve_scaling_follows_reachability(
    reachable: bool, want_min: int, want_reachable: bool
) -> None:
    """Knative's PodAutoscaler reachability: only a routed revision keeps its min-scale."""
    spec = RevisionSpec(
        RevisionKey("default", "old-00001"),
        annotations=MappingProxyType({"autoscaling.knative.dev/min-scale": "2"}),
        reachable=reachable,
    )
    scaling = resolve_scaling(spec, AutoscalerConfig())
    assert scaling is not None
    assert scaling.kpa.min_scale == want_min
    assert scaling.decider.reachable is want_reachable
