"""The select hot path's hand-built parts must answer exactly what the plain constructions
answer: the Thompson sampler (gamma pairs) draws Beta(alpha, beta), the signer's HMAC and
payload equal ``hmac.digest`` and ``json.dumps``, ``scored_arm`` equals ``ScoredArm(...)``,
and the posterior cache select reads stays equal to prior plus evidence after every kind
of write."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
    ThompsonSampling,
)
from qortex_mcp.learning.stats import betainc
from qortex_mcp.learning.tokens import HmacSha256, _payload
from qortex_mcp.learning.types import ScoredArm, scored_arm


def ks_distance(draws: np.ndarray, a: float, b: float) -> float:
    """Kolmogorov-Smirnov distance between the draws and the Beta(a, b) CDF."""
    xs = np.sort(draws)
    cdf = np.array([betainc(a, b, float(x)) for x in xs])
    n = len(xs)
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


# Shapes a learner meets: fresh arms, integer evidence, fractional rewards, strong
# posteriors, and priors below 1 (where numpy switches gamma algorithms).
SHAPES = [(1.0, 1.0), (2.0, 5.0), (3.4, 1.7), (40.0, 12.0), (0.5, 0.5), (0.3, 2.5), (1.0, 9.0)]


@pytest.mark.parametrize(("a", "b"), SHAPES)
def test_thompson_draws_follow_the_beta_posterior(a: float, b: float) -> None:
    n = 4000
    # Each shape sits among other arms, as in a real select (so never the all-flat path).
    alpha = np.array([a, 7.0] * n)
    beta = np.array([b, 3.0] * n)
    draws = ThompsonSampling().scores(alpha, beta, np.random.default_rng(11))
    mine, other = draws[0::2], draws[1::2]
    assert np.all((draws >= 0.0) & (draws <= 1.0))
    # 1.95 / sqrt(n): the 0.1% critical value; seeded, so this either always holds or never.
    assert ks_distance(mine, a, b) < 1.95 / math.sqrt(n)
    assert ks_distance(other, 7.0, 3.0) < 1.95 / math.sqrt(n)


def test_fresh_arms_draw_uniforms() -> None:
    n = 4000
    draws = ThompsonSampling().scores(np.ones(n), np.ones(n), np.random.default_rng(3))
    assert ks_distance(draws, 1.0, 1.0) < 1.95 / math.sqrt(n)


def test_tiny_shapes_never_give_nan() -> None:
    """Gamma(1e-6) underflows to 0.0 almost always; 0 / (0 + 0) must not reach a score."""
    n = 2000
    alpha, beta = np.full(n, 1e-6), np.full(n, 2e-6)
    alpha[0], beta[0] = 3.0, 4.0
    draws = ThompsonSampling().scores(alpha, beta, np.random.default_rng(5))
    assert not np.isnan(draws).any()
    assert np.all((draws >= 0.0) & (draws <= 1.0))
    # Beta(e, 2e) puts mass 1/3 at (nearly) 1 and 2/3 at (nearly) 0.
    assert abs(np.mean(draws[1:] > 0.5) - 1 / 3) < 0.05


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=600))
def test_hmac_matches_the_standard_library(key: bytes, message: bytes) -> None:
    assert HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")


def test_hmac_matches_rfc_4231_case_6() -> None:
    """A key longer than the SHA-256 block is hashed first (RFC 4231, test case 6)."""
    mac = HmacSha256(b"\xaa" * 131).digest(
        b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert mac.hex() == ("60e431591ee0b67f0d8a26aacbf5b77f"
                         "8e0bc6213728c5140546040f0ee37f54")
    assert hashlib.sha256(b"").digest() != mac


text = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(learner=text, nonce=st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True),
       context=st.none() | text, arms=st.lists(text, max_size=6),
       issued=st.integers(0, 2**53), kind=st.sampled_from(["select", "rerank"]),
       offered=st.lists(text, max_size=4), means=st.lists(st.integers(0, 10_000), max_size=6),
       policy=st.none() | text)
def test_payload_is_what_json_dumps_writes(
    learner: str, nonce: str, context: str | None, arms: list[str], issued: int, kind: str,
    offered: list[str], means: list[int], policy: str | None,
) -> None:
    body: dict[str, object] = {"l": learner, "n": nonce, "c": context, "a": arms, "t": issued,
                               "k": "r" if kind == "rerank" else "s"}
    if offered:
        body["o"] = offered
    if means:
        body["m"] = means
    if policy is not None:
        body["v"] = policy
    expected = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    assert _payload(learner, nonce, context, arms, issued, kind,  # type: ignore[arg-type]
                    offered, means, policy=policy) == expected


def test_scored_arm_equals_the_dataclass_constructor() -> None:
    args = ("a", 0.7, 0.6, 3.0, 2.0, 1, 4.0, {"v": 1})
    built, plain = scored_arm(*args), ScoredArm(*args)
    assert built == plain
    assert repr(built) == repr(plain)
    assert hash(built) == hash(plain)
    with pytest.raises(AttributeError):
        built.score = 0.0  # type: ignore[misc]


async def select_view(learner: Learner, ids: list[str]) -> dict[str, tuple[float, float]]:
    got = await learner.select(ids, k=len(ids))
    return {s.id: (s.alpha, s.beta) for s in got.selected}


async def stored_view(learner: Learner, ids: list[str]) -> dict[str, tuple[float, float]]:
    return {p.id: (p.alpha, p.beta) for p in await learner.posteriors(ids)}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_select_reads_prior_plus_evidence_after_every_kind_of_write(
    kind: str, tmp_path: Path
) -> None:
    store = MemoryLearningStore() if kind == "memory" else SqliteLearningStore(
        tmp_path / "s.db")
    config = LearnerConfig(name="cache", seed=2, prior=(2.0, 3.0), arm_priors={"p": (9.0, 1.0)})
    learner = await Learner.create(config, store, signer=SelectionSigner.random())
    ids = ["a", "b", "p", "q"]

    async def agree() -> None:
        stored = await stored_view(learner, ids)  # pulls other writers' rows first
        assert await select_view(learner, ids) == stored

    await learner.select(ids)  # registers the arms at their priors
    await agree()
    await learner.batch_observe([ArmOutcome("a", reward=1.0), ArmOutcome("b", reward=0.25),
                                 ArmOutcome("p", reward=0.0)])
    await agree()
    await learner.select([Arm("q", prior=(5.0, 5.0)), Arm("a")], k=2)  # a per-arm prior
    await agree()
    await learner.decay_arm("a", 0.5)
    await agree()
    await learner.decay(0.9)
    await agree()
    await learner.reset(["b"])
    await agree()
    # Another learner on the same store writes; this one pulls the rows on posteriors().
    other = await Learner.create(config, store, signer=SelectionSigner.random())
    await other.observe(ArmOutcome("q", reward=1.0))
    await other.select([Arm("b", prior=(4.0, 4.0))])  # a prior set elsewhere (flushed)
    await other.close()
    await agree()
    await learner.reset()
    await agree()
    await learner.close()
    await store.close()
