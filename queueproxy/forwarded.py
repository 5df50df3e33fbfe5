"""RFC 7239 ``Forwarded`` from the de-facto ``X-Forwarded-*`` headers.

Matches Knative's ForwardedShimHandler (pkg/queue/forwarded_shim.go): the first X-Forwarded-For
node is combined with X-Forwarded-Host and X-Forwarded-Proto in the first element, the other
nodes follow as ``for=`` elements; a node with a colon is taken for IPv6 and written as a quoted
``"[addr]"``; X-Forwarded-By is ignored. E.g. ``X-Forwarded-For: 1.1.1.1, ::1``,
``X-Forwarded-Host: a.com``, ``X-Forwarded-Proto: https`` give
``for=1.1.1.1;host=a.com;proto=https, for="[::1]"``.
"""

from __future__ import annotations


def _node(node: bytes) -> bytes:
    return b'"[' + node + b']"' if b":" in node else node


def generate_forwarded(xff: bytes | None, xfp: bytes | None, xfh: bytes | None) -> bytes:
    nodes = xff.split(b",") if xff else []
    if len(nodes) > 1 and not nodes[-1]:
        # Knative stops at the last comma when nothing follows it: "a," is one node.
        nodes.pop()
    nodes = [n.strip() for n in nodes]
    first: list[bytes] = []
    if nodes:
        first.append(b"for=" + _node(nodes[0]))
    if xfh:
        first.append(b"host=" + xfh)
    if xfp:
        first.append(b"proto=" + xfp)
    elements = [b";".join(first)]
    elements.extend(b"for=" + _node(n) for n in nodes[1:])
    return b", ".join(elements)
