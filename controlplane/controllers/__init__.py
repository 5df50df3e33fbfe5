"""Knative's controller for ``knpy serve``: reconcilers over the Kubernetes API seam.

``Controllers(factory, client, ControllerConfig(...))`` runs the Service, Configuration, Route,
Revision and ServerlessService reconcilers and Kubernetes' endpoints controller, each an
ordinary API client (informers to read, ``KubeClient`` to write), one concept per module.
The reconciler modules import no asyncio (their cores are pure; only ``controllers`` runs the
loop, with shared/kube/workqueue.py), so both names are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ControllerConfig
    from .controllers import Controllers

__all__ = ["ControllerConfig", "Controllers"]


def __getattr__(name: str) -> Any:
    if name == "Controllers":
        from .controllers import Controllers

        return Controllers
    if name == "ControllerConfig":
        from .config import ControllerConfig

        return ControllerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
