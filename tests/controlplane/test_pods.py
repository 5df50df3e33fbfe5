"""The pod manager: the pure scale plan as a table, then real pods (sample app + queue-proxy)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from controlplane.pods import (
    CRASH_LOOP_FAILURES,
    ContainerFailure,
    PodManager,
    PodPorts,
    PodStatus,
    PodTemplate,
    ProbeSettings,
    ScalePlan,
    crash_backoff_s,
    exit_code,
    last_log_line,
    local_readiness_probe,
    plan_scale,
    queue_env,
    user_env,
)
from shared.seams import Endpoint, RevisionKey

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = str(REPO_ROOT / "examples" / "sampleapp" / "app.py")
KEY = RevisionKey("default", "hello-00001")
STEP_TIMEOUT_S = 20.0


def _pod(name: str, ready: bool, started_at: float, terminating: bool = False) -> PodStatus:
    return PodStatus(name, ready, started_at, terminating=terminating)


@pytest.mark.parametrize(
    ("pods", "desired", "want"),
    [
        pytest.param([], 2, ScalePlan(start=2), id="from-zero"),
        pytest.param([_pod("a", True, 1)], 1, ScalePlan(), id="steady"),
        pytest.param([_pod("a", True, 1)], -1, ScalePlan(), id="no-decision-keeps-pods"),
        pytest.param([_pod("a", True, 1)], 0, ScalePlan(stop=("a",)), id="to-zero"),
        pytest.param(
            [_pod("a", True, 1), _pod("b", True, 3), _pod("c", False, 4)],
            1,
            ScalePlan(stop=("c", "b")),
            id="not-ready-then-newest",
        ),
        pytest.param(
            [_pod("a", False, 1), _pod("b", True, 3)],
            1,
            ScalePlan(stop=("a",)),
            id="old-not-ready-before-new-ready",
        ),
        pytest.param(
            [_pod("a", True, 1), _pod("b", True, 2, terminating=True)],
            2,
            ScalePlan(start=1),
            id="terminating-do-not-count",
        ),
        pytest.param(
            [_pod("b", True, 5), _pod("a", True, 5)], 1, ScalePlan(stop=("a",)), id="tie-by-name"
        ),
    ],
)
def test_plan_scale(pods: list[PodStatus], desired: int, want: ScalePlan) -> None:
    assert plan_scale(pods, desired) == want


@pytest.mark.parametrize(
    ("crashes", "want"),
    [
        pytest.param(0, 0.0, id="none"),
        pytest.param(1, 0.5, id="first"),
        pytest.param(3, 2.0, id="doubles"),
        pytest.param(20, 30.0, id="capped"),
    ],
)
def test_crash_backoff(crashes: int, want: float) -> None:
    assert crash_backoff_s(crashes) == want


NO_ERROR = "Container failed with: container exited with no error"  # Knative's fallback


@pytest.mark.parametrize(
    ("failure", "reason", "message"),
    [
        pytest.param(
            ContainerFailure(1, "KeyError: 'DATABASE_URL'"),
            "ExitCode1",
            "Container failed with: KeyError: 'DATABASE_URL'",
            id="exit-1-last-line",
        ),
        pytest.param(ContainerFailure(0), "ExitCode0", NO_ERROR, id="exit-0-no-log"),
        pytest.param(ContainerFailure(137), "ExitCode137", NO_ERROR, id="killed-no-log"),
    ],
)
def test_container_failure_speaks_knative(
    failure: ContainerFailure, reason: str, message: str
) -> None:
    assert (failure.reason, failure.message) == (reason, message)


@pytest.mark.parametrize(
    ("returncode", "want"),
    [
        pytest.param(0, 0, id="clean"),
        pytest.param(1, 1, id="error"),
        pytest.param(-signal.SIGKILL, 137, id="sigkill-is-128-plus-9"),
        pytest.param(-signal.SIGTERM, 143, id="sigterm"),
    ],
)
def test_exit_code(returncode: int, want: int) -> None:
    assert exit_code(returncode) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param(None, "", id="no-log"),
        pytest.param("", "", id="empty"),
        pytest.param("starting\nboom\n\n  \n", "boom", id="last-non-blank"),
        pytest.param("x" * 5000 + "\ntail line", "tail line", id="long-log-tail-only"),
    ],
)
def test_last_log_line(tmp_path: Path, text: str | None, want: str) -> None:
    log = tmp_path / "user.log"
    if text is not None:
        log.write_text(text)
    assert last_log_line(log) == want


PORTS = PodPorts(user=40001, serving=40002, admin=40003, metrics=40004, user_metrics=40005)


@pytest.mark.parametrize(
    ("probe", "want"),
    [
        pytest.param(None, "", id="none-is-knative-default"),
        pytest.param(
            {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            {
                "httpGet": {"path": "/healthz", "port": 40001, "host": "127.0.0.1"},
                "periodSeconds": 1,
            },
            id="declared-port-moves",
        ),
        pytest.param(
            {"tcpSocket": {}},
            {"tcpSocket": {"port": 40001, "host": "127.0.0.1"}},
            id="no-port-is-user-port",
        ),
        pytest.param(
            {"httpGet": {"path": "/", "port": 9999}},
            {"httpGet": {"path": "/", "port": 9999, "host": "127.0.0.1"}},
            id="other-port-kept",
        ),
    ],
)
def test_local_readiness_probe(probe: dict[str, object] | None, want: object) -> None:
    got = local_readiness_probe(probe, PORTS, 8080)
    assert (json.loads(got) if got else got) == want


def test_envs_follow_knative_contract() -> None:
    template = PodTemplate(
        key=KEY,
        command=("python", "app.py"),
        env={"GREETING": "hi", "PORT": "1"},
        service="hello",
        configuration="hello",
        container_concurrency=5,
        timeout_s=60,
        readiness_probe={"httpGet": {"path": "/healthz"}},
    )
    user = user_env(template, PORTS, {"PATH": "/bin"})
    assert user == {
        "PATH": "/bin",
        "GREETING": "hi",
        "PORT": "40001",
        "K_SERVICE": "hello",
        "K_CONFIGURATION": "hello",
        "K_REVISION": "hello-00001",
    }
    queue = queue_env(template, "hello-00001-pod-1", PORTS, {}, 2.0)
    assert queue["SERVING_POD"] == "hello-00001-pod-1"
    assert queue["USER_PORT"] == "40001"
    assert queue["QUEUE_SERVING_PORT"] == "40002"
    assert queue["QUEUE_BIND_HOST"] == "127.0.0.1"
    assert queue["CONTAINER_CONCURRENCY"] == "5"
    assert queue["REVISION_TIMEOUT_SECONDS"] == "60"
    assert json.loads(queue["SERVING_READINESS_PROBE"])["httpGet"]["port"] == 40001


def test_probe_settings_defaults() -> None:
    assert ProbeSettings.from_probe(None) == ProbeSettings()
    got = ProbeSettings.from_probe({"periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 0})
    assert (got.period_s, got.failure_threshold, got.timeout_s) == (2.0, 1, 1.0)


def test_template_needs_a_command() -> None:
    with pytest.raises(ValueError, match="command"):
        PodTemplate(key=KEY, command=())


# -- real pods ----------------------------------------------------------------------------------
class Published:
    """The endpoints the manager published, with a wait for a condition on them."""

    def __init__(self) -> None:
        self.latest: dict[RevisionKey, tuple[Endpoint, ...]] = {}
        self.history: list[tuple[Endpoint, ...]] = []
        self._changed = asyncio.Event()

    def __call__(self, key: RevisionKey, endpoints: tuple[Endpoint, ...]) -> None:
        self.latest[key] = endpoints
        self.history.append(endpoints)
        self._changed.set()

    async def until(
        self, check: Callable[[tuple[Endpoint, ...]], bool], key: RevisionKey = KEY
    ) -> tuple[Endpoint, ...]:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while not check(self.latest.get(key, ())):
                self._changed.clear()
                await self._changed.wait()
        return self.latest[key]


def _ready(n: int) -> Callable[[tuple[Endpoint, ...]], bool]:
    return lambda eps: len(eps) == n and all(e.ready for e in eps)


def _template(**kw: object) -> PodTemplate:
    args: dict[str, object] = {
        "key": KEY,
        "command": ("python", SAMPLE_APP),
        "service": "hello",
        "configuration": "hello",
        "working_dir": str(REPO_ROOT),
        "queue_env": {"QUEUE_STATS_PERIOD_SECONDS": "1"},
    }
    args.update(kw)
    return PodTemplate(**args)  # type: ignore[arg-type]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[tuple[PodManager, Published]]:
    published = Published()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    pods = PodManager(tmp_path, published, drain_period_s=0.5, base_env=env)
    try:
        yield pods, published
    finally:
        await asyncio.wait_for(pods.close(), STEP_TIMEOUT_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_pod_starts_serves_and_stops_cleanly(
    manager: tuple[PodManager, Published], tmp_path: Path
) -> None:
    pods, published = manager
    pods.set_template(_template())
    pods.scale(KEY, 1)
    (ep,) = await published.until(_ready(1))
    assert published.history[0][0].ready is False  # published before it was ready
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{ep.address}/") as resp:
            assert resp.status == 200
            assert "hello" in (await resp.text()).lower()
        async with client.get(f"http://127.0.0.1:{ep.metrics_port}/metrics") as resp:
            assert resp.status == 200
    (status,) = pods.pods(KEY)
    assert status.ready and status.ready_after_s is not None
    log_dir = tmp_path / "pods" / "default" / ep.pod_name
    assert (log_dir / "user.log").exists() and (log_dir / "queue-proxy.log").exists()
    pids = _pids(pods)
    await pods.close()
    assert published.latest[KEY] == ()
    assert not any(_alive(pid) for pid in pids)


def _pids(pods: PodManager) -> list[int]:
    rev = pods._revisions[KEY]
    return [
        proc.pid for pod in rev.pods.values() for proc in (pod.user, pod.queue) if proc is not None
    ]


async def test_scale_down_loses_no_request(manager: tuple[PodManager, Published]) -> None:
    pods, published = manager
    pods.set_template(_template())
    pods.scale(KEY, 2)
    eps = await published.until(_ready(2))
    victim = max(eps, key=lambda e: (e.started_at, e.pod_name))
    async with aiohttp.ClientSession() as client:
        # Requests in flight on both pods while one is removed.
        slow = [asyncio.create_task(client.get(f"http://{ep.address}/sleep?ms=800")) for ep in eps]
        await asyncio.sleep(0.2)
        pods.scale(KEY, 1)
        left = await published.until(lambda e: len(e) == 1)
        assert victim.pod_name not in {e.pod_name for e in left}
        # The removed pod still serves what reaches it during its drain period.
        async with client.get(f"http://{victim.address}/") as resp:
            assert resp.status == 200
        for task in slow:
            resp = await task
            assert resp.status == 200
            resp.release()


async def test_crashed_pod_is_replaced(manager: tuple[PodManager, Published]) -> None:
    pods, published = manager
    pods.set_template(_template())
    pods.scale(KEY, 1)
    (ep,) = await published.until(_ready(1))
    user = pods._revisions[KEY].pods[ep.pod_name].user
    assert user is not None
    os.kill(user.pid, signal.SIGKILL)
    (new,) = await published.until(lambda e: _ready(1)(e) and e[0].pod_name != ep.pod_name)
    assert new.port != ep.port


async def test_not_ready_app_is_published_not_ready(manager: tuple[PodManager, Published]) -> None:
    pods, published = manager
    pods.set_template(
        _template(
            env={"READY_DELAY_MS": "800"},
            readiness_probe={"httpGet": {"path": "/healthz", "port": 8080}},
        )
    )
    pods.scale(KEY, 1)
    (ep,) = await published.until(lambda e: len(e) == 1)
    assert not ep.ready
    await published.until(_ready(1))


async def test_bad_command_backs_off(manager: tuple[PodManager, Published]) -> None:
    pods, published = manager
    pods.set_template(_template(command=(sys.executable, "-c", "raise SystemExit(3)")))
    pods.scale(KEY, 1)
    await asyncio.sleep(1.5)
    # Crashes are replaced with a growing delay, not in a tight loop.
    started = {e.pod_name for eps in published.history for e in eps}
    assert 1 <= len(started) <= 4
    assert pods._revisions[KEY].crashes >= 1


async def test_crash_loop_is_reported_with_exit_code_and_last_line(tmp_path: Path) -> None:
    published = Published()
    failures: list[tuple[RevisionKey, ContainerFailure]] = []
    reported = asyncio.Event()

    def on_failure(key: RevisionKey, failure: ContainerFailure) -> None:
        failures.append((key, failure))
        reported.set()

    pods = PodManager(tmp_path, published, drain_period_s=0.5, on_container_failure=on_failure)
    crash = "import sys; print('starting'); sys.exit('no DATABASE_URL')"
    try:
        pods.set_template(_template(command=(sys.executable, "-c", crash)))
        pods.scale(KEY, 1)
        # Crashes 1-3 with 0.5 s and 1 s of back-off between them: reported after ~2 s.
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await reported.wait()
        assert pods._revisions[KEY].crashes >= CRASH_LOOP_FAILURES
        assert failures[0] == (KEY, ContainerFailure(1, "no DATABASE_URL"))
        started = {e.pod_name for eps in published.history for e in eps}
        assert len(started) >= CRASH_LOOP_FAILURES
    finally:
        await asyncio.wait_for(pods.close(), STEP_TIMEOUT_S)


async def test_queue_proxy_crash_is_not_a_container_failure(tmp_path: Path) -> None:
    failures: list[ContainerFailure] = []
    published = Published()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    pods = PodManager(
        tmp_path, published, drain_period_s=0.5, base_env=env,
        on_container_failure=lambda _, failure: failures.append(failure),
    )  # fmt: skip
    try:
        pods.set_template(_template(queue_env={"QUEUE_SERVING_PORT": "not-a-port"}))
        pods.scale(KEY, 1)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while pods._revisions[KEY].crashes < CRASH_LOOP_FAILURES + 1:
                await asyncio.sleep(0.05)
        assert failures == []
    finally:
        await asyncio.wait_for(pods.close(), STEP_TIMEOUT_S)
