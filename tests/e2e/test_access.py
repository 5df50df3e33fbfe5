"""Access to the platform (issue 10): what a web page in a local browser, or a local process
without the kubeconfig's token, can make ``knpy serve`` do: nothing.

The issue's attack: a ``text/plain`` POST, which a page may send cross-site without a
preflight, created a Service whose command (``sh -c "id > FILE"``) then ran as the user of
``knpy serve``. Here that POST goes to both API listeners (plain HTTP, and the HTTPS one the
kubeconfig names) in every browser-simple form, with and without the token, and from a
DNS-rebound name; nothing is created and the command never runs. And every listening socket of
the whole process tree is on loopback, as docs/access.md lists them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
import pytest
import yaml

from .harness import EXAMPLES, Serve

pytestmark = pytest.mark.timeout(90)

SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"
# What a browser may send cross-site without a CORS preflight (the Fetch standard's
# CORS-safelisted request-header Content-Types).
SIMPLE_TYPES = (
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
)
LOOPBACK = ("127.0.0.1", "::1")


def evil_service(marker: Path) -> str:
    return json.dumps(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "evil", "namespace": "default"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"image": "x", "command": ["sh", "-c", f"id > {marker}"]}
                        ]
                    }
                }
            },
        }
    )


async def test_browser_simple_posts_create_nothing(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    s = serve()
    marker = tmp_path / "pwned"
    body = evil_service(marker)
    config = yaml.safe_load(s.kubeconfig.read_text())
    tls_url = config["clusters"][0]["cluster"]["server"]
    assert tls_url.startswith("https://127.0.0.1:")
    token = s.auth()
    seen = []
    async with aiohttp.ClientSession() as session:
        for base in (s.api, tls_url):
            for content_type in SIMPLE_TYPES:
                for auth, want in (({}, 401), (token, 415)):
                    headers = {
                        "Content-Type": content_type,
                        "Origin": "http://evil.example",
                        **auth,
                    }
                    async with session.post(
                        f"{base}{SERVICES}", data=body, headers=headers, ssl=False
                    ) as resp:
                        seen.append((base, content_type, bool(auth), resp.status))
                        assert resp.status == want, (base, content_type, await resp.text())
            # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
            headers = {"Host": "evil.example", "Content-Type": "application/json", **token}
            async with session.post(
                f"{base}{SERVICES}", data=body, headers=headers, ssl=False
            ) as resp:
                assert resp.status == 403, await resp.text()
    assert len(seen) == 12
    await asyncio.sleep(1.0)  # what a created Service would need to start its command: ~0.5 s
    assert (await s.get("services"))["items"] == []
    assert (await s.get("revisions"))["items"] == []
    assert not marker.exists()


def _listeners(serve: Serve) -> dict[str, list[tuple[str, int]]]:
    """Every listening TCP socket of knpy serve's process tree, by command."""
    found: dict[str, list[tuple[str, int]]] = {}
    root = psutil.Process(serve.proc.pid)
    for p in (root, *root.children(recursive=True)):
        try:
            name = " ".join(p.cmdline())
            for conn in p.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.setdefault(name, []).append((conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return found


async def test_every_listener_is_on_loopback(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "hello" / "service.yaml")
    await s.answers("hello.default.localhost", "hello-00001")
    listeners = _listeners(s)
    commands = " | ".join(listeners)
    # The ingress and both API listeners, the activator's 2, the autoscaler's 2, the
    # queue-proxy's 4 and the app's 1.
    for who in ("-m activator", "-m autoscaler", "-m queueproxy", "sampleapp/app.py"):
        assert who in commands, listeners
    assert sum(len(v) for v in listeners.values()) >= 12, listeners
    exposed = {who: [a for a in addrs if a[0] not in LOOPBACK] for who, addrs in listeners.items()}
    assert not any(exposed.values()), exposed
