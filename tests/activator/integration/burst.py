"""A burst of concurrent GETs from a process of its own: ``python burst.py URL N [H:V ...]``.

Run apart from the test's event loop so that opening 500 client connections does not delay the
activator that runs in it (the clients of a real activator are other machines). Prints one JSON
line: the time.monotonic() the first request was sent (CLOCK_MONOTONIC is system-wide on Linux,
so the test can compare it with its own clock) and every status, 0 for a failed connection.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import aiohttp


async def _get(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    try:
        async with client.get(url, headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return 0


async def _first(url: str, headers: dict[str, str]) -> tuple[float, asyncio.Task[int]]:
    """Send the first request by hand, so that its send time is known to the microsecond."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    path = parts.path + ("?" + parts.query if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{lines}\r\n".encode()
    # Read the clock before the write: the activator can answer (and the autoscaler stand-in
    # record its cold stat) before this process runs again after the write, and a time taken
    # after it would then come later than the stat. Before, the bound only gets stricter.
    sent = time.monotonic()
    writer.write(request)
    await writer.drain()

    async def status() -> int:
        line = await reader.readline()
        writer.close()
        return int(line.split()[1]) if line else 0

    return sent, asyncio.ensure_future(status())


async def main(url: str, n: int, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
    ) as client:
        started, first = await _first(url, headers)
        rest = [asyncio.ensure_future(_get(client, url, headers)) for _ in range(n - 1)]
        statuses = await asyncio.gather(first, *rest)
    print(json.dumps({"started": started, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    pairs = (h.split(":", 1) for h in sys.argv[3:])
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), {k: v for k, v in pairs}))
