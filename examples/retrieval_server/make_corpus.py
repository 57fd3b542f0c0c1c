"""Write ``corpus.jsonl``: 320 short documents on 8 topics, deterministically.

    python examples/retrieval_server/make_corpus.py        # rewrites corpus.jsonl

Every document is a subject of its topic seen from one angle (``why X matters``, ``common
mistakes with X``, ...) plus one concrete advice sentence. Running it again gives the same
bytes, so the shipped file can always be checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

ANGLES = (
    ("Why {s} matter", "why {s} matter and when they are the first thing to look at"),
    ("Common mistakes with {s}", "the mistakes people make most often with {s}"),
    ("Tuning {s} step by step", "a step-by-step way to tune {s}"),
    ("Monitoring {s}", "which numbers to watch for {s} and what they tell you"),
)

TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "databases": (
        ("indexes", "query plans", "vacuum runs", "connection pools", "replicas",
         "write-ahead logs", "isolation levels", "deadlocks", "table partitions",
         "foreign keys"),
        ("Run EXPLAIN ANALYZE on the slow query before changing anything.",
         "Keep transactions short so locks are released quickly.",
         "Measure query latency percentiles, not only averages.",
         "Test a schema change on a copy of production data first.",
         "Batch small writes into one transaction to cut commit overhead."),
    ),
    "cooking": (
        ("sourdough starters", "knife skills", "stock pots", "spice blends", "braises",
         "pan sauces", "fermented vegetables", "pasta doughs", "cast iron pans",
         "kitchen thermometers"),
        ("Salt early and taste often while the dish cooks.",
         "Let meat rest before slicing so the juices stay inside.",
         "Weigh flour instead of using cups for repeatable bread.",
         "Preheat the pan until a drop of water dances on it.",
         "Keep a notebook of ratios that worked in your kitchen."),
    ),
    "astronomy": (
        ("telescope mounts", "eyepieces", "star charts", "planetary filters", "dark sites",
         "meteor showers", "variable stars", "lunar phases", "astrophotography cameras",
         "binocular sweeps"),
        ("Let the telescope cool to outside temperature before observing.",
         "Use a red light so your eyes stay adapted to the dark.",
         "Check the seeing forecast, not only the cloud cover.",
         "Start with the Moon and bright planets to learn the sky.",
         "Log every session with date, conditions and what you saw."),
    ),
    "gardening": (
        ("raised beds", "compost heaps", "tomato seedlings", "drip irrigation", "mulch layers",
         "pruning cuts", "soil tests", "cover crops", "perennial borders", "pest traps"),
        ("Water deeply and less often so roots grow down.",
         "Test the soil pH before adding any fertiliser.",
         "Rotate crops each year to keep soil diseases in check.",
         "Mulch after the soil warms up in spring.",
         "Prune on a dry day with clean, sharp tools."),
    ),
    "python": (
        ("type hints", "virtual environments", "async functions", "dataclasses",
         "context managers", "generators", "unit tests", "packaging metadata",
         "logging handlers", "profilers"),
        ("Pin dependencies in a lock file for reproducible installs.",
         "Run the linter and type checker in CI on every push.",
         "Profile before optimising; the slow part is rarely where you guess.",
         "Prefer small pure functions that are easy to test.",
         "Read the traceback from the bottom up."),
    ),
    "networking": (
        ("DNS records", "TLS certificates", "load balancers", "firewall rules", "VLANs",
         "MTU settings", "packet captures", "BGP sessions", "Wi-Fi channels", "VPN tunnels"),
        ("Capture packets on both ends before blaming the network.",
         "Lower DNS TTLs a day before a planned migration.",
         "Renew certificates automatically and alert well before expiry.",
         "Document every firewall rule with an owner and a reason.",
         "Measure latency and loss, not only bandwidth."),
    ),
    "running": (
        ("interval sessions", "long runs", "running shoes", "cadence drills", "tempo runs",
         "recovery weeks", "hill repeats", "race pacing", "strength routines",
         "heart rate zones"),
        ("Increase weekly distance by about ten percent at most.",
         "Run most of your miles at an easy conversational pace.",
         "Sleep is the cheapest recovery tool you have.",
         "Warm up for ten minutes before any fast session.",
         "Replace shoes when the cushioning feels flat."),
    ),
    "photography": (
        ("aperture settings", "shutter speeds", "ISO noise", "prime lenses", "tripods",
         "white balance", "raw files", "golden hour light", "composition grids",
         "flash diffusers"),
        ("Shoot raw so you can fix exposure and colour later.",
         "Use a fast shutter speed for moving subjects.",
         "Focus on the eyes in every portrait.",
         "Bracket exposures when the light is difficult.",
         "Back up your photos in two places before editing."),
    ),
}


def documents() -> list[dict[str, str]]:
    docs = []
    for topic, (subjects, advice) in TOPICS.items():
        for i, subject in enumerate(subjects):
            for a, (title, gist) in enumerate(ANGLES):
                tip = advice[(i + a) % len(advice)]
                docs.append({
                    "id": f"{topic}-{i * len(ANGLES) + a + 1:03d}",
                    "topic": topic,
                    "title": title.format(s=subject).capitalize(),
                    "text": f"A note on {topic}: {gist.format(s=subject)}. {tip}",
                })
    return docs


def main() -> None:
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for doc in documents():
            fh.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
