from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queueproxy.metrics import UserMetrics, render_stat_prometheus

Key = tuple[str, tuple[tuple[str, str], ...]]

REVISION = {
    "k8s_namespace_name": "default",
    "kn_service_name": "hello",
    "kn_configuration_name": "hello",
    "kn_revision_name": "hello-00001",
    "k8s_pod_name": "hello-00001-deployment-abc",
}


def _parse(text: bytes) -> tuple[dict[str, str], dict[Key, float]]:
    types: dict[str, str] = {}
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def _labels(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**REVISION, **extra}.items()))


def _user_metrics(
    depth: list[int] | None = None, in_flight: list[int] | None = None
) -> UserMetrics:
    flight = in_flight if in_flight is not None else [0]
    return UserMetrics(
        namespace="default",
        service="hello",
        configuration="hello",
        revision="hello-00001",
        pod="hello-00001-deployment-abc",
        in_flight=lambda: flight[0],
        queue_depth=None if depth is None else (lambda: depth[0]),
    )


def test_user_metrics_names_types_and_labels() -> None:
    depth, in_flight = [4], [1]
    m = _user_metrics(depth, in_flight)
    m.request_finished(200, 1.0)
    m.request_finished(503, 0.003)
    types, samples = _parse(m.render())

    assert types == {
        "kn_serving_invocation_duration_seconds": "histogram",
        "http_server_active_requests": "gauge",
        "kn_serving_queue_depth": "gauge",
    }
    ok = {"http_response_status_code": "200", "response_code_class": "2xx"}
    unavailable = {"http_response_status_code": "503", "response_code_class": "5xx"}
    name = "kn_serving_invocation_duration_seconds"
    assert samples[(f"{name}_count", _labels(**ok))] == 1
    assert samples[(f"{name}_sum", _labels(**ok))] == 1.0
    # Knative's one-second bucket: the tenth bound (index 9) of latencyBounds.
    assert samples[(f"{name}_bucket", _labels(**ok, le="1.0"))] == 1
    assert samples[(f"{name}_bucket", _labels(**ok, le="0.75"))] == 0
    assert samples[(f"{name}_count", _labels(**unavailable))] == 1
    assert samples[(f"{name}_bucket", _labels(**unavailable, le="0.005"))] == 1
    assert samples[("http_server_active_requests", _labels())] == 1
    assert samples[("kn_serving_queue_depth", _labels())] == 4
    depth[0] = in_flight[0] = 0
    _, samples = _parse(m.render())
    assert samples[("kn_serving_queue_depth", _labels())] == 0
    assert samples[("http_server_active_requests", _labels())] == 0


def test_user_metrics_without_queue_depth_source_omit_the_gauge() -> None:
    types, _ = _parse(_user_metrics().render())
    assert "kn_serving_queue_depth" not in types


def test_user_metrics_hot_path_reuses_children() -> None:
    m = _user_metrics()
    for _ in range(3):
        m.request_finished(200, 0.01)
    _, samples = _parse(m.render())
    ok = _labels(http_response_status_code="200", response_code_class="2xx")
    assert samples[("kn_serving_invocation_duration_seconds_count", ok)] == 3
    assert repr(m) == (
        "UserMetrics(revision='hello-00001', pod='hello-00001-deployment-abc', in_flight=0)"
    )


@dataclass(frozen=True)
class Report:
    avg_concurrency: float
    avg_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


STAT_LABELS = (
    ("destination_configuration", "helloworld-go"),
    ("destination_namespace", "default"),
    ("destination_pod", "helloworld-go-00001-deployment-8ff587cc9-7g9gc"),
    ("destination_revision", "helloworld-go-00001"),
)


# The cases of Knative's prometheus_stats_reporter_test.go (before #12961).
@pytest.mark.parametrize(
    ("period_s", "report", "want"),
    [
        pytest.param(1.0, Report(3, 0, 39, 0), (39, 0, 3, 0), id="no-proxy-requests"),
        pytest.param(10.0, Report(3, 2, 39, 15), (3.9, 1.5, 3, 2), id="period-10s"),
        pytest.param(2.0, Report(3, 2, 39, 15), (19.5, 7.5, 3, 2), id="period-2s"),
        pytest.param(1.0, Report(3, 2, 39, 15), (39, 15, 3, 2), id="period-1s"),
    ],
)
def test_render_stat_prometheus(
    period_s: float, report: Report, want: tuple[float, float, float, float]
) -> None:
    text = render_stat_prometheus(
        report,
        5.25,
        namespace="default",
        configuration="helloworld-go",
        revision="helloworld-go-00001",
        pod="helloworld-go-00001-deployment-8ff587cc9-7g9gc",
        reporting_period_s=period_s,
    )
    types, samples = _parse(text)
    names = (
        "queue_requests_per_second",
        "queue_proxied_operations_per_second",
        "queue_average_concurrent_requests",
        "queue_average_proxied_concurrent_requests",
        "process_uptime",
    )
    assert types == dict.fromkeys(names, "gauge")
    got = tuple(samples[(n, STAT_LABELS)] for n in names)
    assert all(math.isclose(g, w) for g, w in zip(got, (*want, 5.25), strict=True))


@pytest.mark.parametrize(
    ("field", "message"),
    [
        pytest.param("namespace", "namespace must not be empty", id="empty-namespace"),
        pytest.param("configuration", "config must not be empty", id="empty-config"),
        pytest.param("revision", "revision must not be empty", id="empty-revision"),
        pytest.param("pod", "pod must not be empty", id="empty-pod"),
    ],
)
def test_render_stat_prometheus_rejects_empty_labels(field: str, message: str) -> None:
    names = {"namespace": "ns", "configuration": "c", "revision": "r", "pod": "p"}
    names[field] = ""
    with pytest.raises(ValueError, match=message):
        render_stat_prometheus(
            Report(0, 0, 0, 0),
            1.0,
            namespace=names["namespace"],
            configuration=names["configuration"],
            revision=names["revision"],
            pod=names["pod"],
        )


def test_render_stat_prometheus_rejects_bad_period() -> None:
    with pytest.raises(ValueError, match="period"):
        render_stat_prometheus(
            Report(0, 0, 0, 0),
            1.0,
            namespace="n",
            configuration="c",
            revision="r",
            pod="p",
            reporting_period_s=0,
        )


def test_render_stat_prometheus_takes_the_stats_report() -> None:
    from shared.request_stats import StatReport

    text = render_stat_prometheus(
        StatReport(1.5, 0.5, 10, 4), 2.0, namespace="n", configuration="c", revision="r", pod="p"
    )
    _, samples = _parse(text)
    labels = (
        ("destination_configuration", "c"),
        ("destination_namespace", "n"),
        ("destination_pod", "p"),
        ("destination_revision", "r"),
    )
    assert samples[("queue_proxied_operations_per_second", labels)] == 4
