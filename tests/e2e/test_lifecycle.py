"""The platform's life: a refused document changes nothing, and a restart brings it all back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from shared.ports import free_port

from .harness import EXAMPLES, REPO_ROOT, STEP_S, Json, Serve, hello_yaml

# SIGTERM from the parent-death signal, then each pod's drain (2 s quiet period locally) and the
# activator's (1 s): well inside this.
ORPHAN_EXIT_S = 15.0

pytestmark = pytest.mark.timeout(90)

# A good Service, then a bad one with two faults: the traffic sums to 101, and a readiness
# probe with a negative period. Knative's webhook refuses the lot and names each field.
BAD_SPLIT = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: split, namespace: default}
spec:
  template:
    spec:
      containers:
        - image: knpy/sampleapp
          command: [python, examples/sampleapp/app.py]
          readinessProbe: {periodSeconds: -1}
  traffic:
    - {latestRevision: true, percent: 80}
    - {revisionName: split-00001, percent: 21}
"""
BAD_PATHS = ("spec.traffic", "spec.template.spec.containers[0].readinessProbe.periodSeconds")


async def test_bad_yaml_is_refused_with_field_paths_and_nothing_applied(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    s = serve()
    code, out, err = await s.apply(hello_yaml("good") + "---" + BAD_SPLIT, check=False)
    assert code == 1 and out == ""
    for path in BAD_PATHS:
        assert path in err, err
    assert "sum to 101" in err, err
    # Nothing of the file was applied: not the good Service before the bad one either.
    assert (await s.get("services"))["items"] == []
    assert (await s.get("revisions"))["items"] == []
    status, body = await s.request("good.default.localhost")
    assert status == 404 and "good.default.localhost" in body
    # Not YAML at all: refused with where the parser stopped.
    code, _, err = await s.apply("kind: Service\nmetadata: {name: x\n", check=False)
    assert code == 1 and "not YAML or JSON" in err and "line" in err, err
    # The same file given to knpy serve -f stops it before anything runs.
    bad = tmp_path / "bad.yaml"
    bad.write_text(hello_yaml("good") + "---" + BAD_SPLIT)
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.cli", "serve", "-f", str(bad),
         "--port", str(free_port()), "--api-port", str(free_port()),
         "--state-dir", str(tmp_path / "other")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=STEP_S,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    for path in BAD_PATHS:
        assert path in refused.stderr, refused.stderr
    assert "knpy serve: ingress" not in refused.stderr


async def test_restart_restores_the_services(serve: Callable[..., Serve]) -> None:
    first = serve(EXAMPLES / "hello" / "service.yaml", EXAMPLES / "traffic-split" / "service.yaml")
    await first.answers("hello.default.localhost", "hello-00001")
    await first.answers("split.default.localhost", "split-v2")
    await first.apply(hello_yaml(env="2"))
    await first.answers("hello.default.localhost", "hello-00002")
    before = {
        kind: _names_and_generations((await first.get(kind))["items"])
        for kind in ("services", "revisions", "routes")
    }
    split_before = (await first.get("services", "split"))["status"]["traffic"]
    assert await first.stop(signal.SIGTERM) == 0

    again = serve()  # the same state dir, no -f: everything comes from the store
    await again.answers("hello.default.localhost", "hello-00002")
    await again.answers("split.default.localhost", "split-v2")
    after = {
        kind: _names_and_generations((await again.get(kind))["items"])
        for kind in ("services", "revisions", "routes")
    }
    assert after == before  # no revision made anew, no generation bumped
    assert (await again.get("services", "split"))["status"]["traffic"] == split_before
    result = await again.load("split.default.localhost", clients=8, requests=500)
    assert result.failures == [] and set(result.revisions) == {"split-v1", "split-v2"}
    assert await again.stop(signal.SIGINT) == 0


async def test_sigkill_of_serve_leaves_no_process_behind(serve: Callable[..., Serve]) -> None:
    """Issue 10: pods run in sessions of their own, so only the parent-death signal the kubelet
    sets ends them when knpy serve dies without its drain."""
    s = serve(EXAMPLES / "hello" / "service.yaml")
    await s.answers("hello.default.localhost", "hello-00001")
    tree = psutil.Process(s.proc.pid).children(recursive=True)
    commands = {" ".join(p.cmdline()) for p in tree}
    assert any("-m activator" in c for c in commands), commands
    assert any("-m queueproxy" in c for c in commands), commands
    s.proc.kill()
    await asyncio.to_thread(s.proc.wait, STEP_S)
    _, alive = await asyncio.to_thread(psutil.wait_procs, tree, ORPHAN_EXIT_S)
    assert not alive, [p.cmdline() for p in alive]


def crashing_yaml(marker: Path) -> str:
    """A Service whose app exits 1 ("config missing") until ``marker`` exists."""
    app = EXAMPLES / "sampleapp" / "app.py"
    script = (
        f"import os, runpy, sys; os.path.exists('{marker}') or sys.exit('config missing');"
        f" runpy.run_path('{app}', run_name='__main__')"
    )
    return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: crashy, namespace: default}}
spec:
  template:
    spec:
      containers:
        - image: knpy/crashy
          command: [python, -c, "{script}"]
"""


async def test_crash_looping_revision_fails_then_recovers(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    s = serve()
    marker = tmp_path / "config-present"
    await s.apply(crashing_yaml(marker))

    async def conditions() -> dict[str, Json]:
        rev = await s.revision("crashy-00001")
        return {c["type"]: c for c in rev["status"].get("conditions", [])}

    async def failed() -> bool:
        return (await conditions())["Ready"]["status"] == "False"

    # Three crashes with 0.5 s and 1 s of back-off between them: failed after ~2-3 s.
    await s.until(failed, "crashy-00001 to be marked failed")
    cond = await conditions()
    for kind in ("Ready", "ContainerHealthy"):
        assert cond[kind]["status"] == "False"
        assert cond[kind]["reason"] == "ExitCode1"
        assert cond[kind]["message"] == "Container failed with: config missing"
    _, table, _ = await s.knpy("get", "revisions")
    header, row = table.splitlines()
    assert row.split()[:2] == ["default", "crashy-00001"]
    assert row[header.index("READY") :].split()[0] == "False", table
    svc = await s.get("services", "crashy")
    assert {c["type"]: c["status"] for c in svc["status"]["conditions"]}["Ready"] == "False"

    # Fixed: the next replacement (still retried with the back-off) turns ready.
    marker.touch()
    await s.answers("crashy.default.localhost", "crashy-00001")
    cond = await conditions()
    assert cond["Ready"]["status"] == cond["ContainerHealthy"]["status"] == "True"


def _names_and_generations(items: list[Json]) -> dict[str, int | None]:
    return {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["metadata"].get("generation")
        for i in items
    }
