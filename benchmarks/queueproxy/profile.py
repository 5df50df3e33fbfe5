"""Instructions and syscalls per request of the queue-proxy: the noise-free measures.

Why: on a shared 2-core machine wall-clock figures move by several per cent between runs of the
same code; the instructions the queue-proxy executes per request (valgrind's callgrind) and its
syscalls per request (strace) do not, so optimisations are decided with these, and run.py
confirms them side by side with nginx.

Method: the benchmark app and ``python -m queueproxy`` (every feature on: stats, metrics,
timeouts; ``--cc N`` for the breaker) on 127.0.0.1; the queue-proxy under
``valgrind --tool=callgrind`` (or ``strace -f -c``). After a warm-up, the counters are zeroed
(``callgrind_control -z``), ``--requests`` requests are sent over ``--connections`` kept-alive
connections by a plain socket client (one request in flight per connection, wrk's head:
``GET /`` with a Host), and the counters dumped; instructions / requests is the figure, also
grouped by where they run (the bytecode loop, the rest of CPython, httptools, uvloop). With
``--connections 1`` each request is alone in its event-loop turn (the 5,000 req/s case: every
request pays its own wake-ups); with 32 they share turns (saturation). ``--top N`` prints the
functions with the most own instructions, from callgrind_annotate. strace is attached after
the warm-up (``strace -f`` from the start stalled uvloop's start-up here).

``--tool cpu`` runs no tool: the proxy pinned to core 1, the app and the client to core 0, and
the proxy's user and system CPU time per request (psutil, 10 ms ticks: use 20,000 requests or
more). ``--target nginx`` puts Debian's nginx (benchmarks/harness.py's configuration) in the
queue-proxy's place, so that the two are compared under the same load, one after the other.

Run: .venv/bin/python benchmarks/queueproxy/profile.py [--tool callgrind|strace|cpu]
         [--target queue-proxy|nginx] [--cc 0] [--connections 1] [--requests 5000]
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import APP, NGINX_CONF  # noqa: E402
from shared.ports import free_port  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def wait_port(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"port {port} not listening after {timeout_s:g} s")


def load(port: int, requests: int, connections: int) -> float:
    """Send ``requests`` GETs over ``connections`` kept-alive connections; returns seconds.

    Every response of the app is the same size; the first one read whole gives that size.
    """
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    sel = selectors.DefaultSelector()
    size = 0
    probe = socks[0]
    probe.sendall(REQUEST)
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf) < size or not size:
        buf += probe.recv(65536)
        if b"\r\n\r\n" in buf and not size:
            head, _, _ = buf.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            assert m, head
            size = len(head) + 4 + int(m.group(1))
    started = time.monotonic()
    sent = 0
    pending: dict[socket.socket, int] = {}
    for s in socks:
        if sent < requests:
            s.sendall(REQUEST)
            sent += 1
            pending[s] = 0
            sel.register(s, selectors.EVENT_READ)
    done = 0
    while done < requests:
        for key, _ in sel.select():
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            got = len(conn.recv(65536))
            if not got:
                raise RuntimeError("connection closed by the proxy")
            pending[conn] += got
            while pending[conn] >= size:
                pending[conn] -= size
                done += 1
                if sent < requests:
                    conn.sendall(REQUEST)
                    sent += 1
    elapsed = time.monotonic() - started
    for s in socks:
        s.close()
    return elapsed


# Where an instruction runs, by callgrind's file name (the first group that matches).
GROUPS = (
    ("Python bytecode (ceval)", ("ceval.c:_PyEval_EvalFrameDefault", "EvalFrameDefault")),
    ("knpy compiled by mypyc (--native)", ("__mypyc", "__native_", "/mypyc/lib-rt/")),
    ("httptools and llhttp", ("llhttp", "/httptools/")),
    ("uvloop and libuv", ("/uvloop/", "libuv")),
    ("CPython runtime (calls, objects, allocation)", ("python-build", "/cpython-")),
    ("libc", ("libc", "nptl", "sysdeps", "malloc")),
)


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its children (nginx's worker)."""
    root = psutil.Process(pid)
    times = [p.cpu_times() for p in (root, *root.children(recursive=True))]
    return sum(t.user for t in times), sum(t.system for t in times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=("callgrind", "strace", "cpu"), default="callgrind")
    p.add_argument("--native", action="store_true",
                   help="the queue-proxy of the KNPY_NATIVE=1 build (setup.py)")  # fmt: skip
    p.add_argument("--target", choices=("queue-proxy", "nginx"), default="queue-proxy",
                   help="nginx: the same load through nginx (--tool cpu or strace)")  # fmt: skip
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--cc", type=int, default=0, help="CONTAINER_CONCURRENCY (0: no breaker)")
    p.add_argument("--top", type=int, default=30, help="functions listed (callgrind)")
    p.add_argument("--out", type=Path, default=None, help="keep the callgrind file here")
    args = p.parse_args()
    if args.target == "nginx" and args.tool == "callgrind":
        p.error("--target nginx goes with --tool cpu or strace")
    tool = {"callgrind": "valgrind", "strace": "strace", "cpu": "taskset"}[args.tool]
    if shutil.which(tool) is None:
        print(f"{tool} is required (apt-get install -y {tool})", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="knpy-qp-profile-"))
    root = harness.native_tree() if args.native else REPO
    app_port, port = free_port(), free_port()
    ports = [free_port() for _ in range(3)]
    env = dict(
        os.environ,
        SERVING_NAMESPACE="bench",
        SERVING_CONFIGURATION="bench",
        SERVING_REVISION="bench-00001",
        SERVING_POD="bench-pod",
        SERVING_POD_IP="127.0.0.1",
        QUEUE_SERVING_PORT=str(port),
        QUEUE_ADMIN_PORT=str(ports[0]),
        QUEUE_METRICS_PORT=str(ports[1]),
        USER_METRICS_PORT=str(ports[2]),
        USER_PORT=str(app_port),
        CONTAINER_CONCURRENCY=str(args.cc),
        PYTHONPATH=str(root),
        PYTHONMALLOC="malloc" if args.tool == "callgrind" else "pymalloc",
    )
    out_file = work / "callgrind.out"
    if args.tool == "callgrind":
        env["PYTHONMALLOC"] = "pymalloc"  # what production runs
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    elif args.tool == "cpu":
        prefix = ["taskset", "-c", "1"]  # the client and the app on core 0
    else:
        prefix = []
    on_core0 = ["taskset", "-c", "0"] if args.tool == "cpu" else []
    app = subprocess.Popen([*on_core0, sys.executable, str(APP), "--port", str(app_port)],
                           env=env)  # fmt: skip
    if args.target == "nginx":
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, dir=work, app_port=app_port, port=port))
        argv = ["nginx", "-e", str(work / "error.log"), "-c", str(conf), "-p", str(work),
                "-g", "daemon off;"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "queueproxy"]
    qp = subprocess.Popen([*prefix, *argv], env=env, cwd=root, stdout=subprocess.DEVNULL)
    try:
        wait_port(app_port)
        wait_port(port)
        load(port, 200, args.connections)  # warm-up: imports done, pools filled
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-z", str(qp.pid)], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        elif args.tool == "cpu":
            os.sched_setaffinity(0, {0})
            before = cpu_times(qp.pid)
        else:
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(qp.pid),
                                       "-o", str(work / "strace.txt")])  # fmt: skip
            time.sleep(1.5)  # attached to every thread
        elapsed = load(port, args.requests, args.connections)
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-d", str(qp.pid)], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        elif args.tool == "cpu":
            after = cpu_times(qp.pid)
        else:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
    finally:
        if args.target == "nginx":
            qp.send_signal(signal.SIGTERM)  # nginx's fast shutdown also ends its worker
        else:
            qp.kill()  # no drain wanted (SIGTERM would wait out the drain period); dumped
        qp.wait(30)
        app.terminate()
        app.wait(10)
    print(f"{args.requests} requests, {args.connections} connections, CC={args.cc}, "
          f"{elapsed:.1f} s under {args.tool}")  # fmt: skip
    if args.tool == "cpu":
        user, system = (1e6 * (a - b) / args.requests for a, b in zip(after, before, strict=True))
        print(f"{args.target} CPU per request: {user + system:.1f} µs ({user:.1f} user, "
              f"{system:.1f} system)")  # fmt: skip
        return 0
    if args.tool == "strace":
        text = (work / "strace.txt").read_text()
        print(text)
        total = re.search(r"^100\.00\s+\S+\s+\S+\s+\S+\s+(\d+)", text, re.M)
        if total:
            print(f"syscalls per request: {int(total.group(1)) / args.requests:.2f}")
        return 0
    dumps = sorted(work.glob("callgrind.out.*"), key=lambda f: f.stat().st_mtime)
    dump = dumps[-1] if dumps else out_file
    totals = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
    assert totals, dump
    ir = int(totals.group(1))
    print(f"instructions per request: {ir / args.requests:,.0f}")
    if args.out:
        shutil.copy(dump, args.out)
    # --auto=no: no source annotation, whose call lines ("=> f") carry inclusive costs; it
    # appears where callgrind finds the sources, as the native build's generated C.
    annotate = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no",
                               "--threshold=100", str(dump)],
                              capture_output=True, text=True, check=False)  # fmt: skip
    own: list[tuple[int, str]] = []
    for line in annotate.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        # Lines at >= 50 % are callgrind's recursion cycles (main, the loop), not own cost.
        if m and float(m.group(2)) < 50:
            own.append((int(m.group(1).replace(",", "")), m.group(3)))
    groups: dict[str, int] = {}
    for ir_own, where in own:
        group = next((g for g, keys in GROUPS if any(k in where for k in keys)), "other")
        groups[group] = groups.get(group, 0) + ir_own
    for group, ir_own in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{ir_own / args.requests:10,.0f}  {group}")
    for ir_own, where in own[: args.top]:
        print(f"{ir_own / args.requests:10,.0f}  {where[:140]}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
