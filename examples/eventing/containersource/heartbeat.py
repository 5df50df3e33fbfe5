"""A ContainerSource's program: a heartbeat event every PERIOD seconds to $K_SINK.

The platform injects K_SINK (where to send) and K_CE_OVERRIDES (the source's ceOverrides as
JSON, "" when none); this program adds the overrides' extensions to every event, as Knative's
adapters do. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def main() -> int:
    sink = os.environ.get("K_SINK", "")
    if not sink:
        print("heartbeat: K_SINK is not set (run me as a ContainerSource)", file=sys.stderr)
        return 2
    overrides = json.loads(os.environ.get("K_CE_OVERRIDES") or "{}")
    extensions = overrides.get("extensions") or {}
    period = float(os.environ.get("PERIOD", "1"))
    # *.localhost is 127.0.0.1 (RFC 6761); keep the Host the ingress routes by.
    parts = urllib.parse.urlsplit(sink)
    url = sink
    if parts.hostname and parts.hostname.endswith(".localhost"):
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port or 80}"))
    beat = 0
    while True:
        beat += 1
        headers = {
            "Host": parts.netloc,
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": str(uuid.uuid4()),
            "ce-type": "dev.knpy.samples.heartbeat",
            "ce-source": "examples/eventing/containersource",
            **{f"ce-{k}": str(v) for k, v in extensions.items()},
        }
        body = json.dumps({"beat": beat}).encode()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=10
            ) as resp:
                print(f"beat {beat}: {resp.status}", flush=True)
        except (urllib.error.URLError, OSError) as err:
            print(f"beat {beat}: {err}", flush=True)
        time.sleep(period)


if __name__ == "__main__":
    sys.exit(main())
