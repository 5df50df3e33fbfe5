"""The controllers' one frozen config: what Knative's controller reads from its ConfigMaps.

In a cluster these come from config-domain, config-deployment and config-network; ``knpy
serve`` fixes them once: routes are ``http://<name>.<namespace>.localhost`` (as knpy has always
served them), the queue-proxy sidecar is knpy's own. The ConfigMaps that users change at run
time (config-autoscaler for the initial scale, config-observability for the queue-proxy's
request log and tracing, config-defaults) are read from the informer cache on every reconcile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = ["DEFAULT_QUEUE_IMAGE", "ControllerConfig"]

# What the kubelet of ``knpy serve`` runs for the queue-proxy container; a cluster names its image.
DEFAULT_QUEUE_IMAGE: Final = "knpy/queueproxy"


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Settings of Knative's controller that ``knpy serve`` decides once.

    Args:
        domain: the route domain (config-domain); URLs are ``http://<route>.<ns>.<domain>``.
        cluster_domain: the cluster-local domain of ``status.address`` (``<route>.<ns>.svc.``).
        queue_sidecar_image: config-deployment's ``queue-sidecar-image``.
        queue_sidecar_command: the queue-proxy container's command (empty: the image's own).
        queue_env: extra environment for every queue-proxy container (e.g. knpy's
            QUEUE_DRAIN_PERIOD_SECONDS), after Knative's contract.
        progress_deadline_s: config-deployment's ``progress-deadline`` (Knative: 600 s).
        workers: concurrent reconciles per controller (different keys only).
        ingress_port: the port of the ingress every URL on this host goes through; added to
            the URLs eventing resolves (a Trigger's subscriberUri, a Broker's address) so a
            process here can dial them. 80 adds nothing.
        rabbitmq_url: the RabbitMQ of the RabbitMQBroker class's data plane (``knpy serve
            --rabbitmq``); empty when knpy serve runs none, which such brokers then say.
        clock: Unix time for condition transition times and routing-state stamps.
    """

    domain: str = "localhost"
    cluster_domain: str = "cluster.local"
    queue_sidecar_image: str = DEFAULT_QUEUE_IMAGE
    queue_sidecar_command: tuple[str, ...] = ()
    queue_env: Mapping[str, str] = field(default_factory=_no_env)
    progress_deadline_s: int = 600
    workers: int = 2
    ingress_port: int = 80
    rabbitmq_url: str = ""
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.domain:
            raise ValueError("domain must not be empty")
        if self.progress_deadline_s < 1:
            raise ValueError(
                f"progress_deadline_s must be positive, got {self.progress_deadline_s}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
