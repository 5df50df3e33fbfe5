"""Knative Functions in knpy: the runtime, the templates and ``knpy func`` (docs/functions.md).

A function's code may import the plain-function form from here::

    from functions import Request, Response, cloudevent, http
"""

from __future__ import annotations

from functions.decorators import Request, Response, cloudevent, http

__all__ = ["Request", "Response", "cloudevent", "http"]
