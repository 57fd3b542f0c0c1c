"""``python -m tests.reliability.flood URL COUNT WORKERS``: POST COUNT ``initialize`` requests
over WORKERS keep-alive connections and abandon every session they open; prints one JSON line
(``statuses``, ``sessions``: answers that carried an ``mcp-session-id``).

Run as its own process so that the flood does not share an event loop with the client whose
latency the test measures.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import anyio
import httpx2 as httpx

INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "abandoner", "version": "1"}}})
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def flood(url: str, count: int, workers: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    sessions = 0
    async with httpx.AsyncClient(timeout=10) as http:

        async def worker(first: int) -> None:
            nonlocal sessions
            for _ in range(first, count, workers):  # never DELETEd, never used again
                response = await http.post(url, content=INIT, headers=HEADERS)
                statuses[response.status_code] += 1
                sessions += "mcp-session-id" in response.headers

        async with anyio.create_task_group() as tg:
            for first in range(workers):
                tg.start_soon(worker, first)
    return {"statuses": dict(statuses), "sessions": sessions}


if __name__ == "__main__":
    url, count, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(anyio.run(flood, url, count, workers)))
