"""Images benchmark: build time and sizes, and knpy serve with its components from images.

Theory of operation. Three figures of issue 11, each from real runs on this machine:

1. **Build.** ``bash images/build.sh --offline`` timed by the wall clock, with its own line per
   image (size, seconds). Warm by default: the debootstrap base, the wheels and buildah's
   layers are in the cache, nothing changed. ``--cold`` builds with an empty cache *and* an
   empty buildah storage of its own (``CONTAINERS_STORAGE_CONF`` pointing at a temporary graph
   root), so other builds on the machine keep their cache; it runs debootstrap (Debian's
   mirror) and takes about three minutes of both cores.
2. **Start to ready under chroot, inside knpy serve.** ``knpy serve --images`` runs the
   activator and the autoscaler from their images; the kubelet writes each pod's creation ->
   Ready time (``knpy.dev/ready-after-seconds``), which includes ``buildah from`` and the copy
   of the kubeconfig. knpy serve's own start (process start -> its "ingress" line, which waits
   for the activator to be Ready) is timed too. The same with plain processes beside it.
3. **What running from an image adds to a container's start**, stage by stage, ``--runs`` times
   each: ``buildah from``, ``buildah run`` of ``/bin/true``, ``buildah rm``, the whole wrapper
   (``python -m controlplane.containers ... -- /bin/true``), and importing the queue-proxy in
   the image against on the host.
4. **Scale from zero, images against processes.** benchmarks/platform's cold starts (zero pods
   -> the first response byte through the ingress, with its breakdown) on a ``knpy serve``
   without and with ``--images``, one after the other in one run, so that the ratio holds on a
   busy machine even where the absolute figures do not.

Run: .venv/bin/python benchmarks/images/run.py [--runs N] [--cold] [--skip build|stages|serve]
     [--tag TAG] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    # Run as a script: make the repo's packages (benchmarks/ is not installed) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import harness
from benchmarks.platform.run import Platform, measure_cold_starts
from controlplane.podspec import READY_AFTER_ANNOTATION as READY_AFTER
from shared.kube.resources import PODS, SYSTEM_NAMESPACE

REPO: Final = Path(__file__).resolve().parents[2]
BUILD: Final = REPO / "images" / "build.sh"
# A cold build here is about 3 min; far above it means something is stuck.
BUILD_TIMEOUT_S: Final = 1200.0
_LINE: Final = re.compile(r"^(?P<c>\S+)\s+(?P<image>\S+)\s+(?P<mb>[\d.]+) MB\s+(?P<s>[\d.]+)s$")

Json = dict[str, Any]


def measure_build(tag: str, cold: bool) -> Json:
    """One images/build.sh --offline run: wall seconds and each image's size and seconds."""
    env = dict(os.environ)
    scratch = None
    if cold:
        scratch = Path(tempfile.mkdtemp(prefix="knpy-bench-images-"))
        conf = scratch / "storage.conf"
        conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{scratch / "graph"}"\n'
            f'runroot = "{scratch / "run"}"\n'
        )
        env |= {"CONTAINERS_STORAGE_CONF": str(conf), "KNPY_IMAGES_CACHE": str(scratch / "cache")}
    cmd = ["bash", str(BUILD), "--offline", "--engine", "buildah", "--tag", tag]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            check=False,
        )  # fmt: skip
        wall_s = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"images/build.sh failed:\n{proc.stderr[-3000:]}")
    finally:
        if scratch is not None:
            # The scratch storage holds overlay mounts only while buildah runs; remove it all.
            subprocess.run(
                ["buildah", "rmi", "--all", "--force"], env=env, capture_output=True, check=False
            )
            shutil.rmtree(scratch, ignore_errors=True)
    images = {}
    for line in proc.stdout.splitlines():
        m = _LINE.match(line.strip())
        if m:
            images[m["c"]] = {"image": m["image"], "size_mb": float(m["mb"]), "s": float(m["s"])}
    return {"cold": cold, "wall_s": wall_s, "images": images}


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, timeout=BUILD_TIMEOUT_S)
    return time.perf_counter() - started


def measure_stages(tag: str, runs: int) -> Json:
    """Median seconds of each step a container from an image takes beyond a host process."""
    image = f"localhost/knpy/queue-proxy:{tag}"
    run = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    qp_import = ["/opt/knpy/bin/python", "-c", "import queueproxy.app"]
    times: dict[str, list[float]] = {}
    for i in range(runs):
        name = f"knpy-bench-{os.getpid()}-{i}"
        steps = {
            "buildah from": ["buildah", "from", "--quiet", "--pull-never", "--name", name, image],
            "buildah run /bin/true": [*run, name, "--", "/bin/true"],
            "queue-proxy import, in the image": [*run, name, "--", *qp_import],
            "buildah rm": ["buildah", "rm", name],
            "queue-proxy import, on the host": [sys.executable, "-c", "import queueproxy.app"],
            "the wrapper around /bin/true": [
                sys.executable, "-m", "controlplane.containers", "--image", image,
                "--name", name, "--", "/bin/true",
            ],
        }  # fmt: skip
        for step, cmd in steps.items():
            times.setdefault(step, []).append(_timed(cmd))
    return {step: statistics.median(values) for step, values in times.items()}


def system_ready(p: Platform) -> Json:
    """Creation -> Ready of the activator and autoscaler pods, as the kubelet wrote it."""
    out: Json = {}
    for pod in p.client().list(PODS, SYSTEM_NAMESPACE):
        app = (pod["metadata"].get("labels") or {}).get("app", "")
        ready = (pod["metadata"].get("annotations") or {}).get(READY_AFTER)
        if app and ready is not None:
            out[app] = float(ready)
    return out


def measure_serve(args: list[str], runs: int, services: int) -> Json:
    """knpy serve's start, its system pods' start to ready, and ``runs`` cold starts."""
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-images-serve-"))
    started = time.perf_counter()
    p = Platform(workdir, args)
    try:
        result: Json = {"args": args, "serve_ready_s": time.perf_counter() - started}
        result["system_ready_s"] = system_ready(p)
        result["cold_start"] = measure_cold_starts(p, runs, min(services, runs))
    finally:
        p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def report(result: Json) -> str:
    lines = []
    for key in ("build_cold", "build_warm"):
        b = result.get(key)
        if b:
            sizes = ", ".join(f"{c} {i['size_mb']:.0f} MB ({i['s']:.1f} s)" for c, i in
                              b["images"].items())  # fmt: skip
            lines.append(f"{key.replace('_', ' ')}: {b['wall_s']:.1f} s; {sizes}")
    stages = result.get("stages") or {}
    if stages:
        lines += ["", "| step (median) | seconds |", "|---|---:|"]
        lines += [f"| {step} | {s:.2f} |" for step, s in stages.items()]
    serve = result.get("serve") or {}
    if serve:
        lines += ["", "| figure | processes | images | images / processes |"]
        lines += ["|---|---:|---:|---:|"]

        def row(name: str, a: float | None, b: float | None) -> None:
            ratio = f"{b / a:.2f}x" if a and b else "-"
            lines.append(f"| {name} | {_ms(a)} ms | {_ms(b)} ms | {ratio} |")

        procs, imgs = serve["processes"], serve["images"]
        row("knpy serve start -> ingress up", procs["serve_ready_s"], imgs["serve_ready_s"])
        for app in ("autoscaler", "activator"):
            row(f"{app} pod created -> Ready", procs["system_ready_s"].get(app),
                imgs["system_ready_s"].get(app))  # fmt: skip
        ps, ims = procs["cold_start"]["summary"], imgs["cold_start"]["summary"]
        for key, name in (
            ("total_s", "scale from zero -> first byte"),
            ("decision_s", "request -> pod created"),
            ("pod_ready_s", "pod created -> ready"),
            ("release_s", "pod ready -> first byte"),
        ):
            for q in ("p50", "p99"):
                row(f"{name}, {q}", ps.get(key, {}).get(q), ims.get(key, {}).get(q))
        runs = len(procs["cold_start"]["runs"])
        lines.append(f"\n{runs} cold starts each; the app alone starts in "
                     f"{_ms(procs['cold_start']['app_alone']['p50_s'])} ms (p50).")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="cold starts per mode (10)")
    parser.add_argument("--services", type=int, default=5, help="hello copies per round")
    parser.add_argument("--cold", action="store_true", help="also a cold build (~3 min)")
    parser.add_argument("--tag", default=None, help="image tag (default: a fresh bench tag)")
    parser.add_argument(
        "--skip", choices=("build", "stages", "serve"), action="append", default=[]
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if shutil.which("buildah") is None:
        print("buildah is required: bash images/ci-deps.sh", file=sys.stderr)
        return 2
    tag = args.tag or f"bench-{os.getpid()}"
    result: Json = {"benchmark": "images", "when": time.strftime("%Y-%m-%dT%H:%M"),
                    "cpus": os.cpu_count(), "tag": tag}  # fmt: skip
    built_here = False
    try:
        if "build" not in args.skip:
            if args.cold:
                print("cold build (own storage) ...", file=sys.stderr)
                result["build_cold"] = measure_build(tag, cold=True)
            print("build ...", file=sys.stderr)
            measure_build(tag, cold=False)  # the images to run, and a warm cache
            built_here = True
            print("warm build ...", file=sys.stderr)
            result["build_warm"] = measure_build(tag, cold=False)
        if "stages" not in args.skip:
            print("stages ...", file=sys.stderr)
            result["stages"] = measure_stages(tag, args.runs)
        if "serve" not in args.skip:
            serve: Json = {}
            for mode, extra in (("processes", []), ("images", ["--images", "--image-tag", tag])):
                print(f"knpy serve, {mode} ...", file=sys.stderr)
                serve[mode] = measure_serve(extra, args.runs, args.services)
            result["serve"] = serve
    finally:
        if built_here and args.tag is None:
            for c in ("queue-proxy", "activator", "autoscaler"):
                subprocess.run(["buildah", "rmi", f"localhost/knpy/{c}:{tag}"],
                               capture_output=True, check=False)  # fmt: skip
    harness.save_json(args.out, result)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
