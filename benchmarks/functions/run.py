"""Functions figures: create -> first response, edit -> reload served, and requests/s of the
http template behind its queue-proxy, beside Knative's func-python (Hypercorn) in the same run.

    python benchmarks/functions/run.py [--func-python VENV/bin/python] [--duration 5]

- create -> first response: ``knpy func create`` then ``knpy func run --port 0`` as a
  developer types them, timed to the first 200 through the queue-proxy (``--repeat`` times).
- edit -> reload served: func.py rewritten while ``knpy func run`` runs (``EDIT_GAP_S``
  after the previous edit was served), timed to the first response carrying the new body.
- requests/s: wrk (one thread, ``--connections``) on the load core, against the same
  function (the http template's func.py) served by knpy's host and by func-python, each
  alone and behind a queue-proxy; the servers and the queue-proxy share the test core.
  func-python is measured when ``--func-python`` names an interpreter that has it
  (``python -m venv V && V/bin/pip install func-python``), as Knative's scaffolding runs it
  (templates/python/scaffolding/instanced-http/service/main.py). The servers take turns,
  ``--rounds`` times, and the best round of each is shown.

Short by design (the machine is shared): figures are ratios of targets measured side by side.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import harness
from benchmarks.harness import Children, Harness, Unavailable
from shared.ports import LOOPBACK, free_port

KNPY = [sys.executable, "-c", "import sys; from shared.cli import main; sys.exit(main())"]
TEMPLATE_BODY = b"OK"
# Between two edits: a developer's saves are seconds apart; 1 s lets the spare host that
# knpy func run keeps (functions/run.py) finish its imports, as it would between saves.
EDIT_GAP_S = 1.0
FUNC_PYTHON_MAIN = """\
import sys
sys.path.insert(0, {root!r})
from func_python.http import serve
from function import new
serve(new)
"""


def _get(port: int, timeout_s: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _poll(port: int, body: bytes, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if _get(port) == (200, body):
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise Unavailable(f"no {body!r} on :{port} in {deadline_s} s")


def create_and_reload(workdir: Path, repeat: int) -> dict[str, Any]:
    """The developer's loop, timed: create -> first response, then edits -> served."""
    env = {**os.environ, "PYTHONPATH": str(harness.REPO)}
    first: list[float] = []
    reload: list[float] = []
    for i in range(repeat):
        root = workdir / f"loop-{i}"
        port = free_port()
        t0 = time.monotonic()
        subprocess.run([*KNPY, "func", "create", str(root)], check=True, env=env,
                       stdout=subprocess.DEVNULL, cwd=workdir)  # fmt: skip
        proc = subprocess.Popen(
            [*KNPY, "func", "run", "--port", str(port)], cwd=root, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _poll(port, TEMPLATE_BODY)
            first.append(time.monotonic() - t0)
            func_py = root / "function" / "func.py"
            text = func_py.read_text()
            for n in range(3):
                body = f"edit-{n}".encode()
                text = text.replace('b"OK"', repr(body)).replace(f"b'edit-{n - 1}'", repr(body))
                time.sleep(EDIT_GAP_S)
                t1 = time.monotonic()
                func_py.write_text(text)
                _poll(port, body)
                reload.append(time.monotonic() - t1)
        finally:
            proc.terminate()
            proc.wait(timeout=15)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "median_s": round(statistics.median(xs), 3),
                "max_s": round(max(xs), 3), "min_s": round(min(xs), 3)}  # fmt: skip

    return {"create_to_first_response": summary(first), "edit_to_served": summary(reload)}


def _start_queueproxy(h: Harness, app_port: int) -> tuple[int, int]:
    port, admin, metrics, user_metrics = (free_port() for _ in range(4))
    env = {
        "SERVING_NAMESPACE": "bench", "SERVING_CONFIGURATION": "fn", "SERVING_SERVICE": "fn",
        "SERVING_REVISION": "fn-00001", "SERVING_POD": "fn-pod", "SERVING_POD_IP": LOOPBACK,
        "QUEUE_SERVING_PORT": str(port), "QUEUE_ADMIN_PORT": str(admin),
        "QUEUE_METRICS_PORT": str(metrics), "USER_METRICS_PORT": str(user_metrics),
        "USER_PORT": str(app_port), "CONTAINER_CONCURRENCY": "0",
        "QUEUE_DRAIN_PERIOD_SECONDS": "0", "PYTHONPATH": str(harness.REPO),
    }  # fmt: skip
    proc = h.children.spawn("queue-proxy", [sys.executable, "-m", "queueproxy"],
                            core=h.test_core, env=env, cwd=harness.REPO)  # fmt: skip
    harness.wait_ready(proc, h.children, port, headers=harness.QUEUE_PROBE_HEADERS, body=b"queue")
    harness.wait_ready(proc, h.children, port, body=TEMPLATE_BODY)
    return port, proc.pid


def _start_knpy(h: Harness, root: Path) -> tuple[int, int]:
    port = free_port()
    env = {"LISTEN_ADDRESS": f"{LOOPBACK}:{port}", "PYTHONPATH": str(harness.REPO)}
    proc = h.children.spawn("knpy-host", [sys.executable, "-m", "functions.host", str(root)],
                            core=h.test_core, env=env, cwd=harness.REPO)  # fmt: skip
    harness.wait_ready(proc, h.children, port, body=TEMPLATE_BODY)
    return port, proc.pid


def _start_func_python(h: Harness, root: Path, python: str) -> tuple[int, int]:
    port = free_port()
    main = h.workdir / "func_python_main.py"
    main.write_text(FUNC_PYTHON_MAIN.format(root=str(root)))
    proc = h.children.spawn("func-python", [python, str(main)], core=h.test_core,
                            env={"LISTEN_ADDRESS": f"{LOOPBACK}:{port}"}, cwd=root)  # fmt: skip
    harness.wait_ready(proc, h.children, port, body=TEMPLATE_BODY)
    return port, proc.pid


def _measured(h: Harness, port: int, pids: dict[str, int]) -> dict[str, Any]:
    """wrk's figures, and each process's CPU microseconds per request over the run: the
    figure a shared machine disturbs least (req/s moves with the neighbours' load)."""
    before = {name: harness.cpu_seconds(pid) for name, pid in pids.items()}
    result = h.wrk(f"http://{LOOPBACK}:{port}/")
    for name, pid in pids.items():
        used = harness.cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_us_per_request"] = round(used / max(1, result["requests"]) * 1e6, 1)
    return result


def throughput(
    h: Harness, root: Path, func_python: str | None, rounds: int
) -> list[dict[str, Any]]:
    """Each server alone and behind a queue-proxy, the servers interleaved ``rounds`` times
    (a shared machine's load shifts; interleaving spreads it over both); the best round of
    each is kept, all rounds are in the JSON."""
    servers: list[tuple[str, Any]] = [("knpy host (functions/server.py)", _start_knpy)]
    if func_python:
        servers.append(
            ("func-python 0.8.1 (Hypercorn)", lambda h, r: _start_func_python(h, r, func_python))
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in servers}
    errors: dict[str, str] = {}
    for _ in range(rounds):
        for name, start in servers:
            if name in errors:
                continue
            mark = h.children.mark()
            try:
                app_port, app_pid = start(h, root)
                direct = _measured(h, app_port, {"server": app_pid})
                qp, qp_pid = _start_queueproxy(h, app_port)
                behind = _measured(h, qp, {"server": app_pid, "queue_proxy": qp_pid})
                runs[name].append({"direct": direct, "queue_proxy": behind})
            except Unavailable as err:
                errors[name] = str(err)
            finally:
                h.children.stop_since(mark)
    rows: list[dict[str, Any]] = []
    for name, _ in servers:
        if name in errors:
            rows.append({"server": name, "error": errors[name]})
            continue
        # The best round by req/s; its CPU per request too (the least disturbed round).
        best_direct = max((r["direct"] for r in runs[name]), key=lambda w: w["rps"])
        best_qp = max((r["queue_proxy"] for r in runs[name]), key=lambda w: w["rps"])
        rows.append({"server": name, "direct": best_direct, "queue_proxy": best_qp,
                     "rounds": runs[name]})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--func-python", default=None, help="a python with func-python")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="create/reload loops")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    cores, load_core, test_core = harness.pin_cores()
    with tempfile.TemporaryDirectory(prefix="knpy-bench-fn-") as tmp:
        workdir = Path(tmp)
        children = Children(workdir)
        h = Harness(workdir, children, args.duration, args.connections, load_core, test_core,
                    k6=harness.find_k6() or "k6")  # fmt: skip
        try:
            loop = create_and_reload(workdir, args.repeat)
            root = workdir / "bench-fn"
            subprocess.run([*KNPY, "func", "create", str(root)], check=True,
                           stdout=subprocess.DEVNULL, cwd=workdir,
                           env={**os.environ, "PYTHONPATH": str(harness.REPO)})  # fmt: skip
            rows = throughput(h, root, args.func_python, args.rounds)
        finally:
            children.kill_all()
    result = {"environment": harness.environment(cores), "loop": loop, "throughput": rows}
    harness.save_json(args.out, result)
    print(json.dumps(loop, indent=2))
    table = []
    base = next((r for r in rows if "direct" in r), None)
    for r in rows:
        if "error" in r:
            table.append([r["server"], "-", "-", "-", "-", r["error"][:60]])
            continue
        d, q = r["direct"], r["queue_proxy"]
        ratio = q["rps"] / base["queue_proxy"]["rps"] if base else 1.0
        table.append([
            r["server"], f"{d['rps']:,.0f}", f"{d['server_cpu_us_per_request']:.0f}",
            f"{q['rps']:,.0f}", f"{q['p50_ms']:.2f} / {q['p99_ms']:.2f}", f"{ratio:.2f}x",
        ])  # fmt: skip
    print(harness.markdown_table(
        [("server", "l"), ("alone req/s", "r"), ("alone CPU us/req", "r"),
         ("behind qp req/s", "r"), ("behind qp p50 / p99 ms", "r"),
         ("behind qp vs knpy", "r")], table))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
