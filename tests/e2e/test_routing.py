"""Routing end to end: the examples applied to a real ``knpy serve``, reached through its ingress.

Each test starts the platform, applies Knative YAML as a person would (the files under
``examples/`` where one fits) and checks what comes back through the ingress by Host: the
sample app names the revision that answered, so the route taken is visible in each answer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import EXAMPLES, Serve, hello_yaml

pytestmark = pytest.mark.timeout(90)

HELLO = "hello.default.localhost"
SPLIT_REQUESTS = 5_000
# The ingress draws each request's revision at random: 5,000 draws at p = 0.2 have a standard
# deviation of sqrt(5000 * 0.2 * 0.8) / 5000 = 0.57 %, so +-3 % is more than five of them.
SPLIT_TOLERANCE = 0.03


async def test_hello_example_answers_through_the_ingress(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "hello" / "service.yaml")
    await s.answers(HELLO, "hello-00001")
    status, body = await s.request(HELLO)
    assert status == 200 and body.startswith("Hello from knpy sample app")
    status, body = await s.request("nobody.default.localhost")
    assert status == 404 and "nobody.default.localhost" in body
    service = await s.get("services", "hello")
    assert service["status"]["url"] == "http://hello.default.localhost"
    assert service["status"]["traffic"] == [
        {"revisionName": "hello-00001", "percent": 100, "latestRevision": True}
    ]
    revision = await s.revision("hello-00001")
    assert revision["status"]["actualReplicas"] == 1
    assert await s.stop() == 0


async def test_template_change_makes_revision_2_and_moves_traffic(
    serve: Callable[..., Serve],
) -> None:
    s = serve()
    await s.apply(hello_yaml())
    await s.answers(HELLO, "hello-00001")
    _, out, _ = await s.apply(hello_yaml(env="2"))
    assert out.strip() == "service.serving.knative.dev/hello configured"
    await s.answers(HELLO, "hello-00002")
    # Once moved, every answer is from revision 2: latestRevision follows the newest ready one.
    result = await s.load(HELLO, clients=4, requests=200)
    assert result.failures == [] and set(result.revisions) == {"hello-00002"}
    assert await s.revision_names("hello") == ["hello-00001", "hello-00002"]
    service = await s.get("services", "hello")
    assert service["status"]["latestReadyRevisionName"] == "hello-00002"
    assert [(t["revisionName"], t["percent"]) for t in service["status"]["traffic"]] == [
        ("hello-00002", 100)
    ]
    # Applying the same template again changes nothing: no revision 3.
    _, out, _ = await s.apply(hello_yaml(env="2"))
    assert out.strip() == "service.serving.knative.dev/hello unchanged"
    assert await s.revision_names("hello") == ["hello-00001", "hello-00002"]


async def test_split_80_20_holds_over_5000_requests(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "traffic-split" / "service.yaml")
    host = "split.default.localhost"
    await s.until(lambda: _routed(s, "split", {"split-v1": 20, "split-v2": 80}), "the 80/20 route")
    result = await s.load(host, clients=32, requests=SPLIT_REQUESTS)
    assert result.failures == [], result.failures[:5]
    assert result.total == SPLIT_REQUESTS
    share_v1 = result.revisions["split-v1"] / SPLIT_REQUESTS
    share_v2 = result.revisions["split-v2"] / SPLIT_REQUESTS
    assert abs(share_v1 - 0.2) <= SPLIT_TOLERANCE, result.revisions
    assert abs(share_v2 - 0.8) <= SPLIT_TOLERANCE, result.revisions
    by_name = {r["metadata"]["name"]: r for r in (await s.get("revisions"))["items"]}
    assert by_name["split-v1"]["status"]["trafficPercent"] == 20
    assert by_name["split-v2"]["status"]["trafficPercent"] == 80


async def test_tag_url_reaches_its_revision(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "tag" / "service.yaml")
    await s.answers("candidate-tagged.default.localhost", "tagged-v2")
    # The tag's revision has 0 % of the default route, and the pinned one all of it.
    default = await s.load("tagged.default.localhost", clients=4, requests=200)
    assert default.failures == [] and set(default.revisions) == {"tagged-v1"}
    current = await s.load("current-tagged.default.localhost", clients=4, requests=50)
    assert current.failures == [] and set(current.revisions) == {"tagged-v1"}
    candidate = await s.load("candidate-tagged.default.localhost", clients=4, requests=50)
    assert candidate.failures == [] and set(candidate.revisions) == {"tagged-v2"}
    service = await s.get("services", "tagged")
    urls = {t.get("tag"): t.get("url") for t in service["status"]["traffic"]}
    assert urls == {
        "current": "http://current-tagged.default.localhost",
        "candidate": "http://candidate-tagged.default.localhost",
    }
    # Tag hosts are Hosts like any other: unknown tags are unknown hosts.
    status, body = await s.request("nope-tagged.default.localhost")
    assert status == 404 and "nope-tagged.default.localhost" in body


async def _routed(s: Serve, service: str, want: dict[str, int]) -> bool:
    """Whether the service's status.traffic is ``want`` (revision -> percent), all ready."""
    doc = await s.get("services", service)
    traffic = doc.get("status", {}).get("traffic", [])
    got = {t["revisionName"]: t["percent"] for t in traffic if t.get("percent")}
    ready = [c for c in doc["status"].get("conditions", []) if c["type"] == "Ready"]
    return got == want and bool(ready) and ready[0]["status"] == "True"
