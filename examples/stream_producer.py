"""An application outside MCP reporting outcomes through a Redis stream (or NATS).

    python examples/stream_producer.py [--redis redis://127.0.0.1:6379/0] [--stream feedback]
    python examples/stream_producer.py --nats nats://127.0.0.1:4222 --subject feedback

and, anywhere that can reach the broker and the store, a consumer:

    qortex-mcp ingest redis://127.0.0.1:6379/0 --stream feedback --group qortex \\
        --create-learners
    qortex-mcp ingest nats://127.0.0.1:4222 --subject feedback --durable qortex \\
        --create-learners

Each message is what ``qortex_feedback`` takes. This one reports, for a batch job's
results, whether each ranking model's output was accepted: bare feedback with an
idempotency key, so a retried publish counts once.
"""

from __future__ import annotations

import argparse
import asyncio
import random


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--stream", default="feedback")
    ap.add_argument("--nats", help="publish to NATS JetStream instead")
    ap.add_argument("--subject", default="feedback")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--run-id", default="run-1", help="part of each idempotency key")
    args = ap.parse_args()
    rng = random.Random(7)
    hidden = {"model-a": 0.4, "model-b": 0.7}  # what the application observes over time
    messages = []
    for i in range(args.count):
        model = rng.choice(sorted(hidden))
        messages.append({
            "learner": "ranking-model", "arm_id": model,
            "outcome": "accepted" if rng.random() < hidden[model] else "rejected",
            "context": {"job": "nightly"}, "idempotency_key": f"{args.run_id}-{i}",
        })
    if args.nats:
        import nats

        from qortex_mcp.ingest.nats import ensure_stream
        from qortex_mcp.ingest.publish import publish_feedback_nats

        nc = await nats.connect(args.nats)
        try:
            js = nc.jetstream()
            await ensure_stream(js, args.subject)  # the consumer would create it too
            for m in messages:
                await publish_feedback_nats(js, args.subject, m, msg_id=m["idempotency_key"])
        finally:
            await nc.close()
    else:
        import redis.asyncio as aioredis

        from qortex_mcp.ingest.publish import publish_feedback_redis

        client = aioredis.Redis.from_url(args.redis)
        try:
            for m in messages:
                await publish_feedback_redis(client, args.stream, m)
        finally:
            await client.aclose()
    print(f"published {len(messages)} feedback message(s)")


if __name__ == "__main__":
    asyncio.run(main())
