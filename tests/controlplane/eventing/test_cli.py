"""``knpy send`` and ``knpy listen`` as processes: binary, structured and batched events, a
reply, a failing listener, bad input; ``knpy get`` of the eventing kinds against a real API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.eventing_cli import display, parse_event

KNPY = [sys.executable, "-m", "shared.cli"]


def knpy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KNPY, *args], capture_output=True, text=True, timeout=30)


class Listener:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / f"listen-{time.monotonic_ns()}.log"
        self.out = self.log.open("w")
        self.proc = subprocess.Popen([*KNPY, "listen", "--port", "0", *args],
                                     stdout=self.out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while "knpy listen: http://" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "knpy listen did not start"
            time.sleep(0.05)
        self.url = self.log.read_text().split("knpy listen: ", 1)[1].split()[0]

    def text(self) -> str:
        self.out.flush()
        return self.log.read_text()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.out.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lis = Listener(tmp_path)
    yield lis
    lis.close()


def test_send_binary_and_structured_to_a_listener(listener: Listener) -> None:
    out = knpy("send", "--to", listener.url, "--type", "order.created", "--source", "shop",
               "--id", "e1", "-d", '{"n": 1}', "-e", "team=a")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Event e1 sent to {listener.url}: 202 Accepted"
    out = knpy("send", "--to", listener.url, "--mode", "structured", "--id", "e2", "-d", "hi")
    assert out.returncode == 0, out.stderr
    text = listener.text()
    first, second = text.split("☁️  cloudevents.Event")[1:3]
    assert "  id: e1\n  type: order.created\n  source: shop\n" in first
    assert "  datacontenttype: application/json\nExtensions,\n  team: a\nData,\n" in first
    assert '    "n": 1' in first
    assert "  id: e2\n  type: dev.knpy.cli.event\n  source: knpy/send\n" in second
    assert "  datacontenttype: text/plain\nData,\n  hi" in second


def test_a_batch_and_bad_requests(listener: Listener) -> None:
    batch = json.dumps([{"specversion": "1.0", "id": f"b{i}", "type": "t", "source": "s"}
                        for i in range(2)]).encode()
    req = urllib.request.Request(listener.url, data=batch, method="POST",
                                 headers={"Content-Type": "application/cloudevents-batch+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
    req = urllib.request.Request(listener.url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    info.value.close()
    assert listener.text().count("cloudevents.Event") == 2
    bad = knpy("send", "--to", listener.url, "-e", "Bad-Name=1")
    assert bad.returncode == 1 and "bad extension 'Bad-Name=1'" in bad.stderr
    nowhere = knpy("send", "--to", "http://127.0.0.1:1/")
    assert nowhere.returncode == 1 and "cannot send to http://127.0.0.1:1/" in nowhere.stderr


def test_reply_and_failure_modes(tmp_path: Path) -> None:
    replier = Listener(tmp_path, "--reply-type", "order.done")
    failing = Listener(tmp_path, "--status", "500")
    try:
        req = urllib.request.Request(replier.url, data=b'{"n": 2}', method="POST", headers={
            "ce-specversion": "1.0", "ce-id": "r1", "ce-type": "order.created",
            "ce-source": "shop", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["ce-type"] == "order.done"
            assert resp.headers["ce-source"] == "knpy/listen"
            assert resp.read() == b'{"n": 2}'
        out = knpy("send", "--to", failing.url, "-d", "x")
        assert out.returncode == 1
        assert f"Error: {failing.url} answered 500" in out.stderr
        assert "cloudevents.Event" in failing.text()
    finally:
        replier.close()
        failing.close()


def test_parse_and_display_pure() -> None:
    [event] = parse_event({"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "t",
                           "Ce-Source": "s", "Ce-Knativearrivaltime": "now"}, b"\xff")
    assert event["data_base64"] == "/w=="
    assert display(event).splitlines() == [
        "☁️  cloudevents.Event", "Context Attributes,", "  specversion: 1.0", "  id: 1",
        "  type: t", "  source: s", "Extensions,", "  knativearrivaltime: now", "Data,",
        "  (base64) /w=="]
    with pytest.raises(ValueError, match="no ce-specversion"):
        parse_event({"Content-Type": "text/plain"}, b"x")


def test_send_uses_the_broker_codec(listener: Listener) -> None:
    """A non-ASCII extension is percent-encoded in binary mode (and decoded by the listener);
    an event the broker's ingress would reject is refused before sending."""
    out = knpy("send", "--to", listener.url, "--id", "u1", "-e", "note=☃ 100%")
    assert out.returncode == 0, out.stderr
    assert "  note: ☃ 100%\n" in listener.text()
    bad = knpy("send", "--to", listener.url, "--type", "")
    assert bad.returncode == 1 and "not a valid CloudEvent: type" in bad.stderr
