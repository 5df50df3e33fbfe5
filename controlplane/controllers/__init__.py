"""Knative's controller for ``knpy serve``: reconcilers over the Kubernetes API seam.

``Controllers(factory, client, ControllerConfig(...))`` runs the Service, Configuration, Route,
Revision and ServerlessService reconcilers and Kubernetes' endpoints controller, each an
ordinary API client (informers to read, ``KubeClient`` to write), one concept per module.
"""

from __future__ import annotations

from .config import ControllerConfig
from .controllers import Controllers

__all__ = ["ControllerConfig", "Controllers"]
