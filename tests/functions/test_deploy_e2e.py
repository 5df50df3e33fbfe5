"""``knpy func`` against a real ``knpy serve``: every command as a process, as a developer runs it.

create (cloudevents) -> subscribe -> deploy (the URL printed) -> ``func invoke`` and a
request through the ingress at that URL -> an event sent to the Broker reaches the function
through its Trigger, and the function's reply reaches a second Trigger's sink -> describe,
list, logs -> delete (the Service and its Trigger gone, the URL answers 404). A function that
cannot import fails its deploy within seconds with the revision's reason, and its traceback
is in ``func logs``; a Service of the function's name that is not a function's is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from eventing.broker.metrics import delivery_names
from shared.cloudevent import parse_message
from shared.kube.resources import EVENTING_NAMESPACE
from tests.e2e.harness import REPO_ROOT, STEP_S, Serve, serving
from tests.eventing.harness import Sink

# Commands that take no --kubeconfig (invoke finds the API through .func/deploy.json).
NO_API = ("create", "subscribe", "invoke")
BROKER = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
"""


def reply_trigger(sink: str) -> str:
    return f"""
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: replies, namespace: default}}
spec:
  broker: default
  filter: {{attributes: {{type: function.response}}}}
  subscriber: {{uri: "{sink}"}}
"""


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Serve]]:
    async with serving(tmp_path) as start:
        yield start


async def func(
    serve: Serve, cwd: Path, *args: str, check: bool = True, kubeconfig: bool = True
) -> tuple[int, str, str]:
    """``knpy func ARGS`` in ``cwd`` with the platform's kubeconfig (``kubeconfig`` False:
    without, as commands in a deployed function's directory need none)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "func", *args,
        *(() if args[0] in NO_API or not kubeconfig else ("--kubeconfig", str(serve.kubeconfig))),
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "FROM_SHELL": "hello from the shell"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), STEP_S)
    code = proc.returncode if proc.returncode is not None else -1
    if check:
        assert code == 0, f"knpy func {' '.join(args)} exited {code}: {err.decode()}"
    return code, out.decode(), err.decode()


_DEPTH = re.compile(
    r'^knpy_eventing_trigger_queue_depth\{[^}]*messaging_destination_name="([^"]+)"', re.M
)


async def subscribed(serve: Serve, trigger: str, namespace: str = "default") -> None:
    """Until the broker's data plane has subscribed ``trigger`` (its queue depth is in the
    data plane's metrics): a new Trigger sees only the events stored from then on, as in
    Knative, and deploy returns once the Service is Ready, not its Triggers' subscriptions."""
    want = delivery_names(namespace, trigger)[1]

    async def check() -> bool:
        pods = await serve.kube(f"/api/v1/namespaces/{EVENTING_NAMESPACE}/pods")
        ports = [p["containerPort"] for pod in pods["items"] for c in pod["spec"]["containers"]
                 for p in c.get("ports") or () if p.get("name") == "http-metrics"]  # fmt: skip
        for port in ports:
            try:
                async with serve.client().get(f"http://127.0.0.1:{port}/metrics") as resp:
                    if want in _DEPTH.findall(await resp.text()):
                        return True
            except aiohttp.ClientError:  # a pod not serving yet
                continue
        return False

    await serve.until(check, f"the data plane to subscribe trigger {trigger}", STEP_S)


async def post(serve: Serve, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """POST to a Service URL as a client on this machine does: 127.0.0.1, Host from the URL."""
    parts = urlsplit(url)
    async with serve.client().post(
        f"http://127.0.0.1:{parts.port}{parts.path or '/'}",
        headers={"Host": parts.netloc, **headers},
        data=body,
    ) as resp:
        return resp.status, await resp.text()


async def test_create_deploy_invoke_subscribe_delete(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    platform = serve()
    sink = await Sink().start()
    try:
        await platform.apply(BROKER + "---" + reply_trigger(sink.url))
        await func(platform, tmp_path, "create", "-t", "cloudevents", "echo")
        fn = tmp_path / "echo"
        _, out, _ = await func(
            platform, fn, "subscribe", "--filter", "type=com.example.in", "--source", "default"
        )
        assert "broker 'default'" in out
        doc = yaml.safe_load((fn / "func.yaml").read_text())
        assert doc["deploy"]["subscriptions"] == [
            {"source": "default", "filters": {"type": "com.example.in"}}
        ]
        # Scale options, annotations and an env, as a developer writes them in func.yaml.
        doc["deploy"]["options"] = {"scale": {"min": 1, "max": 2, "target": 10}}
        doc["deploy"]["annotations"] = {"team": "blue"}
        doc["run"] = {"envs": [{"name": "GREETING", "value": "{{ env:FROM_SHELL }}"}]}
        (fn / "func.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

        _, out, err = await func(platform, fn, "deploy")
        url = out.strip().splitlines()[-1].strip()
        assert url == f"http://echo.default.localhost:{platform.port}", out
        assert "Trigger 'echo-function-trigger-0' created" in err
        ksvc = await platform.kube("/apis/serving.knative.dev/v1/namespaces/default/services/echo")
        template = ksvc["spec"]["template"]
        assert {
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/max-scale": "2",
            "autoscaling.knative.dev/target": "10.000000",
            "team": "blue",
        }.items() <= template["metadata"]["annotations"].items()
        assert template["spec"]["containers"][0]["env"] == [
            {"name": "GREETING", "value": "hello from the shell"}
        ]

        # knpy func invoke finds the deployed function (no local instance runs) and sends
        # Knative's default CloudEvent through the ingress; the reply event is printed.
        _, out, _ = await func(platform, fn, "invoke", "--id", "direct-1")
        assert "id: response-direct-1" in out and "type: function.response" in out, out
        # The printed URL itself, as any client on this machine dials it.
        ce = {"ce-specversion": "1.0", "ce-id": "direct-2", "ce-source": "/test",
              "ce-type": "com.example.in", "content-type": "application/json"}  # fmt: skip
        status, body = await post(platform, url, ce, b'{"n": 1}')
        assert status == 200, body
        assert json.loads(body)["id"] == "response-direct-2"

        # Broker -> Trigger -> function -> reply -> Broker -> second Trigger -> sink.
        await subscribed(platform, "echo-function-trigger-0")
        await subscribed(platform, "replies")
        code, out, err = await platform.knpy(
            "send", "--to", "default", "--type", "com.example.in", "--id", "via-broker",
            "-d", '{"n": 2}',
        )  # fmt: skip
        assert code == 0, err
        got = await sink.wait_for(1, timeout_s=15.0)
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in got[0].headers.items()]
        (reply,) = parse_message(pairs, got[0].body)
        assert reply.attrs["id"] == "response-via-broker"
        assert reply.attrs["type"] == "function.response"
        assert json.loads(reply.data or b"") == {"message": "OK"}

        # A redeploy follows func.yaml: a filter added to the subscription replaces the
        # Trigger's; a subscription removed deletes its Trigger. It takes the edited code too
        # (the function runs from its source directory: a new revision, not the old pod).
        func_py = fn / "function" / "func.py"
        func_py.write_text(func_py.read_text().replace('{"message": "OK"}', '{"message": "v2"}'))
        await func(platform, fn, "subscribe", "--filter", "source=/test")
        _, _, err = await func(platform, fn, "deploy")
        assert "Trigger 'echo-function-trigger-0' updated" in err, err
        status, body = await post(platform, url, ce, b"{}")
        assert (status, json.loads(body)["data"]) == (200, {"message": "v2"}), body
        path = "/apis/eventing.knative.dev/v1/namespaces/default/triggers/echo-function-trigger-0"
        trigger = await platform.kube(path)
        assert trigger["spec"]["filter"]["attributes"] == {
            "type": "com.example.in", "source": "/test"
        }  # fmt: skip
        # Another Broker for the same subscription: a Trigger's broker cannot change, so the
        # Trigger is made anew.
        doc = yaml.safe_load((fn / "func.yaml").read_text())
        doc["deploy"]["subscriptions"][0]["source"] = "other"
        (fn / "func.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        _, _, err = await func(platform, fn, "deploy")
        assert "Trigger 'echo-function-trigger-0' created: broker 'other'" in err, err
        assert "no Broker 'other'" in err
        doc["deploy"]["subscriptions"] = []
        (fn / "func.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        _, _, err = await func(platform, fn, "deploy")
        assert "Trigger 'echo-function-trigger-0' deleted" in err, err
        await func(platform, fn, "subscribe", "--filter", "type=com.example.in")
        await func(platform, fn, "deploy")

        _, out, _ = await func(platform, fn, "describe", "-o", "json")
        described = json.loads(out)
        assert described["route"] == url and described["ready"] == "True"
        assert described["subscriptions"] == [
            {"source": "", "type": "com.example.in", "broker": "default"}
        ]
        _, out, _ = await func(platform, tmp_path, "list")
        # In the function's directory, list needs no --kubeconfig either (its last deploy's).
        code, here, err = await func(platform, fn, "list", check=False, kubeconfig=False)
        assert (code, here) == (0, out), err
        assert out.splitlines()[0].split() == [
            "NAME", "NAMESPACE", "RUNTIME", "DEPLOYER", "URL", "READY"
        ]  # fmt: skip
        assert out.splitlines()[1].split() == ["echo", "default", "python", "knative", url, "True"]
        _, out, _ = await func(platform, fn, "logs")
        assert "event: com.example.in from /test" in out, out

        _, out, _ = await func(platform, fn, "delete")
        assert "Removed function 'echo' (its Service and 1 Trigger)" in out
        triggers = await platform.kube("/apis/eventing.knative.dev/v1/namespaces/default/triggers")
        assert [t["metadata"]["name"] for t in triggers["items"]] == ["replies"]
        status, _ = await post(platform, url, ce, b"{}")
        assert status == 404
        assert not (fn / ".func" / "deploy.json").exists()
        code, _, err = await func(platform, fn, "describe", check=False)
        assert code == 1 and "there is no function named 'echo'" in err
        code, _, err = await func(platform, fn, "invoke", check=False)
        assert code == 1 and "not running locally or deployed" in err, err
    finally:
        await sink.stop()


async def test_a_function_that_cannot_import_fails_its_deploy_with_the_reason(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    platform = serve()
    await func(platform, tmp_path, "create", "broken")
    fn = tmp_path / "broken"
    with (fn / "function" / "func.py").open("a") as f:
        f.write("\nimport no_such_module_anywhere\n")
    code, out, err = await func(platform, fn, "deploy", "--timeout", "20", check=False)
    assert code == 1, out
    assert "Error: function 'broken' is not ready" in err
    assert "No module named 'no_such_module_anywhere'" in err
    assert not (fn / ".func" / "deploy.json").exists()
    _, out, _ = await func(platform, fn, "logs")
    assert "func.py" in out and "no_such_module_anywhere" in out

    # A Service of the same name that is not a function's is not overwritten.
    await platform.apply(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: taken}\n"
        "spec: {template: {spec: {containers: [{image: x, command: [python, -c, 'pass']}]}}}"
    )
    await func(platform, tmp_path, "create", "taken")
    code, _, err = await func(platform, tmp_path / "taken", "deploy", check=False)
    assert code == 1 and "is not this function's" in err, err
    # list shows the functions' Services only, ready or not.
    _, out, _ = await func(platform, tmp_path, "list")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [("broken", "False")], out
