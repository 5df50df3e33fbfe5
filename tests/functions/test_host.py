"""The function host as a real process: Knative's contract over real HTTP, the cloudevents
middleware's answers (knpy's ValueError and non-event-reply rules), and load failures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from functions.create import create
from shared.ports import LOOPBACK, free_port
from tests.functions.harness import ROOT, host, knpy_env, request, wait_status

BINARY_EVENT = {
    "ce-specversion": "1.0",
    "ce-id": "e-42",
    "ce-source": "/tests",
    "ce-type": "com.example.test",
    "content-type": "application/json",
}


def function_dir(tmp: Path, func_py: str, *, invoke: str = "http", init: str | None = None) -> Path:
    """A function directory with ``func_py`` as function/func.py."""
    root = tmp / "fn"
    create(root, template="cloudevents" if invoke == "cloudevent" else "http")
    (root / "function" / "func.py").write_text(textwrap.dedent(func_py))
    if init is not None:
        (root / "function" / "__init__.py").write_text(init)
    return root


def test_http_template(tmp_path: Path) -> None:
    create(tmp_path / "fn")
    with host(tmp_path / "fn") as (_, port):
        wait_status(port, "/health/readiness")
        reply = request(port, "/anything?x=1", method="POST", body=b"hi")
        assert (reply.status, reply.body) == (200, b"OK")
        assert reply.headers["content-type"] == "text/plain"
        assert request(port, "/health/liveness").body == b"Alive"
        assert request(port, "/health/readiness").body == b"Ready"


ECHO = """
    import os

    def new():
        return Echo()

    class Echo:
        def start(self, cfg):
            self.greeting = cfg.get("GREETING", "none")

        def stop(self):
            with open(os.environ["STOP_FILE"], "w") as f:
                f.write("stopped")

        def ready(self):
            return False, "warming up"

        def alive(self):
            return True  # a bare bool, message "OK"

        async def handle(self, scope, receive, send):
            body = b""
            chunks = 0
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                chunks += 1
                if not msg.get("more_body"):
                    break
            if scope["path"] == "/stream":
                await send({"type": "http.response.start", "status": 201,
                            "headers": [(b"x-parts", b"3")]})
                for part in (b"a", b"b"):
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                await send({"type": "http.response.body", "body": b"c"})
                return
            head = {k.decode(): v.decode() for k, v in scope["headers"]}
            doc = {
                "method": scope["method"], "path": scope["path"],
                "query": scope["query_string"].decode(), "len": len(body),
                "chunks": chunks, "x": head.get("x-test"), "greeting": self.greeting,
            }
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(doc).encode()})

    import json
"""


def test_the_asgi_contract(tmp_path: Path) -> None:
    root = function_dir(tmp_path, ECHO)
    stop_file = tmp_path / "stopped"
    with host(root, GREETING="hello", STOP_FILE=str(stop_file)) as (proc, port):
        wait_status(port, "/health/liveness")
        assert request(port, "/health/liveness").body == b"OK"
        not_ready = request(port, "/health/readiness")
        assert (not_ready.status, not_ready.body) == (500, b"warming up")
        big = b"x" * (1 << 20)
        reply = request(port, "/p/q?a=1&b=2", method="PUT", body=big, headers={"X-Test": "t"})
        doc = json.loads(reply.body)
        assert doc["method"] == "PUT"
        assert doc["path"] == "/p/q"
        assert doc["query"] == "a=1&b=2"
        assert doc["len"] == len(big)
        assert doc["chunks"] > 1  # streamed in, not one buffer
        assert doc["x"] == "t"
        assert doc["greeting"] == "hello"  # start(cfg) got the environment
        streamed = request(port, "/stream")
        assert (streamed.status, streamed.body, streamed.headers["x-parts"]) == (201, b"abc", "3")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert stop_file.read_text() == "stopped"


def test_a_module_level_handle(tmp_path: Path) -> None:
    root = function_dir(
        tmp_path,
        """
        async def handle(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"module"})
        """,
        init="from .func import handle\n",
    )
    with host(root) as (_, port):
        assert wait_status(port, "/").body == b"module"


def test_an_exception_is_a_500_and_the_host_lives_on(tmp_path: Path) -> None:
    root = function_dir(
        tmp_path,
        """
        def new():
            return F()

        class F:
            async def handle(self, scope, receive, send):
                if scope["path"] == "/boom":
                    raise RuntimeError("boom")
                if scope["path"] == "/silent":
                    return
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"fine"})
        """,
    )
    with host(root) as (_, port):
        wait_status(port, "/")
        boom = request(port, "/boom")
        assert (boom.status, boom.body) == (500, b"Error: boom")
        silent = request(port, "/silent")
        assert silent.status == 500
        assert b"without a response" in silent.body
        assert request(port, "/").body == b"fine"


# -- the cloudevents middleware ------------------------------------------------------------------
CE_FUNC = """
    from cloudevents.core.v1.event import CloudEvent

    def new():
        return F()

    class F:
        async def handle(self, scope, receive, send):
            event = scope["event"]
            kind = event.get_type()
            if kind == "value-error":
                raise ValueError("a transient failure")
            if kind == "text-reply":
                await send.http({"type": "http.response.start", "status": 200,
                                 "headers": [(b"content-type", b"text/plain")]})
                await send.http({"type": "http.response.body", "body": b"done"})
                return
            if kind == "send-str":
                await send("done")
                return
            if kind == "ack":
                return
            if kind == "empty-200":
                await send.http({"type": "http.response.start", "status": 200, "headers": []})
                await send.http({"type": "http.response.body", "body": b""})
                return
            reply = CloudEvent(
                attributes={"type": "reply", "source": "fn", "id": "r-" + event.get_id()},
                data={"got": event.get_data()},
            )
            if kind == "binary":
                await send.binary(reply)
            else:
                await send(reply)
"""


def event_headers(kind: str) -> dict[str, str]:
    return {**BINARY_EVENT, "ce-type": kind}


def test_cloudevents_template(tmp_path: Path) -> None:
    create(tmp_path / "fn", template="cloudevents")
    with host(tmp_path / "fn") as (_, port):
        wait_status(port, "/health/readiness")
        reply = request(port, "/", method="POST", body=b'{"a":1}', headers=BINARY_EVENT)
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/cloudevents+json"
        doc = json.loads(reply.body)
        assert (doc["type"], doc["id"], doc["data"]) == (
            "function.response",
            "response-e-42",
            {"message": "OK"},
        )


@pytest.mark.parametrize(
    ("kind", "status", "check"),
    [
        pytest.param("echo", 200, "structured", id="structured-reply"),
        pytest.param("binary", 200, "binary", id="binary-reply"),
        pytest.param("value-error", 500, "error-event", id="value-error-is-500"),
        pytest.param("text-reply", 500, "not-an-event", id="text-200-is-500"),
        pytest.param("send-str", 500, "error-event", id="send-str-is-500"),
        pytest.param("ack", 202, "empty", id="no-reply-is-202"),
        pytest.param("empty-200", 200, "empty", id="empty-200-passes"),
    ],
)
def test_cloudevent_answers(tmp_path: Path, kind: str, status: int, check: str) -> None:
    root = function_dir(tmp_path, CE_FUNC, invoke="cloudevent")
    with host(root) as (_, port):
        wait_status(port, "/health/readiness")
        reply = request(port, "/", method="POST", body=b'{"n":1}', headers=event_headers(kind))
        assert reply.status == status, reply.body
        if check == "structured":
            doc = json.loads(reply.body)
            assert reply.headers["content-type"] == "application/cloudevents+json"
            assert (doc["id"], doc["data"]) == ("r-e-42", {"got": {"n": 1}})
        elif check == "binary":
            assert reply.headers["ce-id"] == "r-e-42"
            assert json.loads(reply.body) == {"got": {"n": 1}}
        elif check == "error-event":
            doc = json.loads(reply.body)
            assert doc["type"] == "dev.functions.error"
            assert doc["source"] == "/cloudevent/error"
        elif check == "not-an-event":
            assert b"not a CloudEvent" in reply.body
        else:
            assert reply.body == b""


def test_a_structured_event_and_a_request_that_is_not_one(tmp_path: Path) -> None:
    root = function_dir(tmp_path, CE_FUNC, invoke="cloudevent")
    with host(root) as (_, port):
        wait_status(port, "/health/readiness")
        structured = json.dumps(
            {"specversion": "1.0", "id": "s-1", "source": "/t", "type": "echo", "data": "hi",
             "datacontenttype": "text/plain"}
        ).encode()  # fmt: skip
        reply = request(
            port, "/", method="POST", body=structured,
            headers={"content-type": "application/cloudevents+json"},
        )  # fmt: skip
        assert json.loads(reply.body)["data"] == {"got": "hi"}
        plain = request(port, "/", method="GET")
        assert plain.status == 400
        assert b"expects CloudEvent" in plain.body


# -- functions that do not load ------------------------------------------------------------------
def run_host(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    port = env.pop("PORT", str(free_port()))
    return subprocess.run(
        [sys.executable, "-m", "functions.host", str(root)],
        env=knpy_env(LISTEN_ADDRESS=f"{LOOPBACK}:{port}", **env),
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("func_py", "init", "expected"),
    [
        pytest.param(
            "def new():\n    return F(\n\nclass F:\n    pass\n",
            None,
            ["does not compile", "func.py, line 2", "^"],
            id="syntax-error",
        ),
        pytest.param(
            "import json\nimport no_such_module_here\n\ndef new():\n    pass\n",
            None,
            ["failed to import", 'func.py", line 2', "No module named 'no_such_module_here'"],
            id="import-error",
        ),
        pytest.param(
            "def helper():\n    pass\n",
            "from .func import helper\n",
            ["exports neither new nor handle", "def new()"],
            id="handle-missing",
        ),
        pytest.param(
            "def new():\n    return object()\n",
            None,
            ["new() returned object, which has no handle method"],
            id="instance-without-handle",
        ),
        pytest.param(
            "def new():\n    return {}['x']\n",
            None,
            ["new() failed", 'func.py", line 2', "KeyError"],
            id="new-fails",
        ),
        pytest.param(
            "def new():\n    return F()\n\nclass F:\n    def start(self, cfg):\n"
            "        raise RuntimeError('no database')\n\n"
            "    async def handle(self, scope, receive, send):\n        pass\n",
            None,
            ["start failed", 'func.py", line 6', "RuntimeError: no database"],
            id="start-fails",
        ),
    ],
)
def test_a_function_that_does_not_load(
    tmp_path: Path, func_py: str, init: str | None, expected: list[str]
) -> None:
    root = function_dir(tmp_path, func_py, init=init)
    done = run_host(root)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: ")
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "importlib" not in done.stderr  # the developer's frames only


def test_a_port_in_use(tmp_path: Path) -> None:
    create(tmp_path / "fn")
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_host(tmp_path / "fn", PORT=str(port))
    assert done.returncode == 1
    assert f"port {port} on {LOOPBACK} is in use" in done.stderr


def test_outside_a_function_directory(tmp_path: Path) -> None:
    done = run_host(tmp_path)
    assert done.returncode == 1
    assert "is not a function directory (no func.yaml)" in done.stderr


# -- the plain-function form ---------------------------------------------------------------------
DECORATED = """
    from functions import Response, cloudevent, http
    from cloudevents.core.v1.event import CloudEvent

    @http
    async def hello(request):
        if request.path == "/json":
            return {"name": request.query.get("name"), "body": request.text()}
        if request.path == "/none":
            return None
        if request.path == "/teapot":
            return Response("short and stout", status=418, headers={"X-Pot": "1"})
        return "hello " + request.headers.get("x-who", "?")

    @cloudevent
    async def on_event(event):
        if event.get_type() == "quiet":
            return None
        if event.get_type() == "wrong":
            return {"not": "an event"}
        return CloudEvent(attributes={"type": "pong", "source": "fn"}, data=event.get_data())
"""


def test_decorated_http(tmp_path: Path) -> None:
    root = function_dir(tmp_path, DECORATED, init="from .func import hello as handle\n")
    with host(root) as (_, port):
        assert wait_status(port, "/", 200).body == b"hello ?"
        assert request(port, "/", headers={"X-Who": "me"}).body == b"hello me"
        reply = request(port, "/json?name=n", method="POST", body=b"b")
        assert json.loads(reply.body) == {"name": "n", "body": "b"}
        assert reply.headers["content-type"] == "application/json"
        assert request(port, "/none").status == 204
        teapot = request(port, "/teapot")
        assert (teapot.status, teapot.headers["x-pot"]) == (418, "1")
        assert teapot.body == b"short and stout"


def test_decorated_cloudevent_whatever_func_yaml_says(tmp_path: Path) -> None:
    # func.yaml says http (the http template); the decorator picks the cloudevents middleware.
    root = function_dir(tmp_path, DECORATED, init="from .func import on_event as handle\n")
    with host(root) as (_, port):
        wait_status(port, "/health/readiness")
        pong = request(port, "/", method="POST", body=b'{"n":2}', headers=event_headers("ping"))
        assert pong.status == 200
        assert (json.loads(pong.body)["type"], json.loads(pong.body)["data"]) == ("pong", {"n": 2})
        quiet = request(port, "/", method="POST", body=b"{}", headers=event_headers("quiet"))
        assert (quiet.status, quiet.body) == (202, b"")
        wrong = request(port, "/", method="POST", body=b"{}", headers=event_headers("wrong"))
        assert wrong.status == 500
        assert "not a CloudEvent" in json.loads(wrong.body)["data"]["message"]
