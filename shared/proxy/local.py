"""Small local endpoints (admin, metrics) served by the same raw protocol as the proxy.

Serving them with aiohttp would import it into every queue-proxy for three paths and cost about
10 MB of resident memory per pod; these endpoints need no more than a path table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared.proxy.exchange import Exchange
from shared.proxy.http1 import error_body, simple_response

# A route answers by calling ex.respond, now or later. Local endpoints keep no tag.
Route = Callable[[Exchange[None]], None]


class LocalHandler:
    """Routes ``GET``/``HEAD`` requests by path (query ignored) to local endpoints."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = {path.encode(): route for path, route in routes.items()}

    def __repr__(self) -> str:
        return f"<LocalHandler {sorted(p.decode() for p in self.routes)}>"

    def handle(self, ex: Exchange[None]) -> None:
        path = ex.target.split(b"?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            ex.respond(simple_response(404, error_body("404 page not found")), status=404)
        elif ex.method not in (b"GET", b"HEAD"):
            ex.respond(simple_response(405, error_body("method not allowed")), status=405)
        else:
            route(ex)

    def finished(self, ex: Exchange[None]) -> None:
        pass
