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

import aiohttp


async def _get(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    try:
        async with client.get(url, headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return 0


async def main(url: str, n: int, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
    ) as client:
        started = time.monotonic()
        first = asyncio.ensure_future(_get(client, url, headers))
        await asyncio.sleep(0.001)  # the first request leaves before the rest
        rest = [asyncio.ensure_future(_get(client, url, headers)) for _ in range(n - 1)]
        statuses = await asyncio.gather(first, *rest)
    print(json.dumps({"started": started, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    pairs = (h.split(":", 1) for h in sys.argv[3:])
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), {k: v for k, v in pairs}))
