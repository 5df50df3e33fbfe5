"""The proxy core shared by the queue-proxy and the activator.

A raw ``asyncio.Protocol`` HTTP/1.1 proxy on httptools: measured on this machine's kind, an
aiohttp server plus ClientSession reaches about 14 % of nginx's throughput while a bare Protocol
pass-through reaches about 95 %, so the hot path stays below aiohttp. Policy (probes, breaker,
stats, routing) lives in a component's ``RequestHandler``; this package only moves bytes.
"""
