"""The vectorised replay fold against event-by-event folding, and the streamed log scans.

``EventFold`` folds a run of feedback events in one numpy step; the oracle here is the plain
loop it replaced (``stores.base.fold`` per event, decay and reset in log order). Random logs
mix contexts, out-of-order times under a half-life, whole-learner and per-arm decays, and
resets by arm and context, fed in pages of random sizes.
"""

from __future__ import annotations

import random

import pytest

from qortex_mcp.learning import Arm, ArmOutcome, Learner, LearnerConfig, LearningStore
from qortex_mcp.learning.replay import EventFold, fold_events
from qortex_mcp.learning.stores.base import event_pages, fold
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.transfer import export_chunks, export_jsonl
from qortex_mcp.learning.types import GLOBAL_CONTEXT, Event, EventKind

pytestmark = pytest.mark.anyio


def sequential(events: list[Event], half_life_s: float | None
               ) -> dict[tuple[str, str], tuple[float, float, int]]:
    """The oracle: one ``fold`` per event, in log order."""
    rows: dict[tuple[str, str], list[float]] = {}
    for ev in events:
        if ev.kind == "feedback":
            assert ev.reward is not None
            assert ev.weight is not None
            ws, wf = ev.weight * ev.reward, ev.weight * (1.0 - ev.reward)
            for ctx in {GLOBAL_CONTEXT, ev.ctx or GLOBAL_CONTEXT}:
                cur = rows.setdefault((ctx, ev.arm), [0.0, 0.0, 0, ev.at])
                cur[0], cur[1], cur[3] = fold(cur[0], cur[1], cur[3], ev.at, ws, wf,
                                              half_life_s)
                cur[2] += 1
        else:
            for (ctx, arm), cur in rows.items():
                if ev.arm and arm != ev.arm:
                    continue
                if ev.kind == "decay":
                    assert ev.factor is not None
                    cur[0] *= ev.factor
                    cur[1] *= ev.factor
                elif ev.ctx is None or ctx == ev.ctx:
                    cur[0] = cur[1] = 0.0
                    cur[2] = 0
    return {k: (v[0], v[1], int(v[2])) for k, v in rows.items()}


def random_log(rnd: random.Random, size: int) -> list[Event]:
    arms = [f"arm-{i}" for i in range(7)]
    ctxs = ["", "", "c1", "c2", "c3"]
    out: list[Event] = []
    at = 1_000.0
    for seq in range(1, size + 1):
        at += rnd.uniform(-50.0, 200.0)  # some events older than the row's latest
        roll = rnd.random()
        kind: EventKind = "feedback" if roll < 0.93 else "decay" if roll < 0.97 else "reset"
        arm = rnd.choice(arms)
        if kind == "feedback":
            out.append(Event(seq, kind, f"k{seq}", arm, rnd.choice(ctxs),
                             rnd.choice([0.0, 1.0, rnd.random()]), rnd.choice([1.0, 0.5, 3.0]),
                             None, at))
        elif kind == "decay":
            out.append(Event(seq, kind, None, rnd.choice(["", arm]), None, None, None, None,
                             at, rnd.uniform(0.1, 0.9)))
        else:
            out.append(Event(seq, kind, None, rnd.choice(["", arm]),
                             rnd.choice([None, "", "c1"]), None, None, None, at))
    return out


@pytest.mark.parametrize("half_life_s", [None, 300.0, 5_000.0])
@pytest.mark.parametrize("seed", range(6))
def test_the_vectorised_fold_equals_folding_event_by_event(
        seed: int, half_life_s: float | None) -> None:
    rnd = random.Random(seed)
    log = random_log(rnd, 800)
    want = sequential(log, half_life_s)
    got = EventFold(half_life_s)
    start = 0
    while start < len(log):  # pages of random sizes, as a store hands them over
        size = rnd.randint(1, 120)
        got.add([ev.row() for ev in log[start:start + size]])
        start += size
    rows = got.rows()
    assert got.events == len(log)
    assert set(rows) == set(want)
    for key, (s, f, n) in want.items():
        assert rows[key][0] == pytest.approx(s, rel=1e-9, abs=1e-9), key
        assert rows[key][1] == pytest.approx(f, rel=1e-9, abs=1e-9), key
        assert rows[key][2] == n, key
    # the public helper sorts by seq first
    shuffled = list(log)
    rnd.shuffle(shuffled)
    assert {k: v[2] for k, v in fold_events(shuffled, half_life_s).items()} == {
        k: v[2] for k, v in want.items()}


async def history(store: LearningStore, half_life_s: float | None) -> None:
    cfg = LearnerConfig(name="prompts", seed=3, half_life_s=half_life_s)
    async with await Learner.create(cfg, store) as learner:
        for i in range(60):
            sel = await learner.select([Arm("a"), Arm("b"), Arm("c")], k=1,
                                       context={"task": "x" if i % 2 else "y"})
            await learner.observe(ArmOutcome(sel.selected[0].id, reward=(i % 3) / 2,
                                             selection_id=sel.selection_id))
        await learner.decay_arm("a", 0.5)
        await learner.observe(ArmOutcome("b", reward=0.0, weight=0.5))
        await learner.reset(["c"], {"task": "y"})
        await learner.observe(ArmOutcome("c", reward=1.0, context={"task": "y"}))


@pytest.mark.parametrize("half_life_s", [None, 3600.0])
async def test_replay_of_a_real_store_matches_and_catches_another_fold(
        store: LearningStore, half_life_s: float | None) -> None:
    await history(store, half_life_s)
    cfg = LearnerConfig(name="prompts", half_life_s=half_life_s)
    async with await Learner.create(cfg, store) as learner:
        report = await learner.replay()
        assert report.ok, report.mismatches
        assert report.events == 64
        assert report.rows == len(await store.evidence("prompts"))
    # the same log folded with another half-life: the stored rows no longer match
    other = LearnerConfig(name="prompts", half_life_s=60.0 if half_life_s else 1.0)
    async with await Learner.create(other, store) as learner:
        assert not (await learner.replay()).ok


async def test_event_pages_stream_the_whole_log_in_order_and_stop_cleanly(
        store: LearningStore) -> None:
    await history(store, None)
    events = await store.events("prompts", 0, 1_000)
    pages = [page async for page in event_pages(store, "prompts", page=7)]
    assert len(pages) == -(-len(events) // 7)
    assert [len(p) for p in pages[:-1]] == [7] * (len(pages) - 1)
    assert [row for page in pages for row in page] == [ev.row() for ev in events]
    # without bodies: the same rows, the body possibly left out
    bare = [row async for page in event_pages(store, "prompts", page=7, bodies=False)
            for row in page]
    assert [row[:10] for row in bare] == [ev.row()[:10] for ev in events]
    assert any(ev.ctx_body for ev in events)
    # a caller may stop after the first page
    scan = event_pages(store, "prompts", page=7)
    first = await anext(scan)
    assert first == [ev.row() for ev in events[:7]]
    await scan.aclose()
    assert [p async for p in event_pages(store, "nobody")] == []


async def test_export_chunks_are_the_export_lines_joined() -> None:
    store = MemoryLearningStore()
    await store.initialize()
    await history(store, None)
    lines = [line async for line in export_jsonl(store)]
    chunks = [chunk async for chunk in export_chunks(store)]
    assert len(chunks) >= 4  # header, learner and arms, events, evidence
    assert all(chunk.endswith("\n") for chunk in chunks)
    assert "".join(chunks) == "".join(line + "\n" for line in lines)
