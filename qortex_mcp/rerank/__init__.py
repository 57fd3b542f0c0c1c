"""Retrieval reranking by posterior means, and feedback on the ranked list.

``PosteriorReranker`` reorders any retriever's results so that results agents accepted rise
on later queries and rejected ones drop::

    reranker = PosteriorReranker(learner)
    ranked = await reranker.rerank(hits, context={"topic": "sql"})   # hits: [{id, score}]
    ...                                                               # show ranked.results
    await reranker.feedback(ranked.selection_id, {"doc-7": "accepted", "doc-2": "rejected"})

**Scoring.** The retrieval scores are min-max normalised within the list to ``s`` in [0, 1]
and each gives the item a *retrieval prior* ``Beta(1 + m s, 1 + m (1 - s))`` with strength
``m`` (``prior_strength``, default 4): what the retriever thinks, worth ``m`` observations,
mean ``mu = (1 + m s) / (2 + m)``. The retriever can be wrong about any one item, so the
item's prior is a two-part mixture: the retrieval prior with probability ``prior_trust``
(default 0.8), else a nearly flat ``Beta(d mu, d (1 - mu))`` of the same mean (``d`` =
0.25, ``DOUBT_STRENGTH``). With no evidence the mean is ``mu`` either way, so the order is
the retrieval order. The learned evidence decides how much the retrieval score still
counts for the item: ``Learner.evidence(ids, context)`` gives its successes and failures
in this context, backed off to its global posterior (the rule in
``qortex_mcp.learning.context``: another context's evidence counts for at most
``context_backoff`` observations) and decayed by the learner's half-life, and the weight
of the retrieval prior becomes its posterior probability (Bayes: ``prior_trust`` times how
much better the retrieval prior predicted that evidence). Evidence that agrees with the
score keeps the score's weight; evidence against it (five accepts of a result ranked 12th,
five rejections of a dominant top hit) takes it away within a few answers, so the item
follows its own record. The weight is a function of the per-item evidence the store
already keeps: nothing extra is stored, and it survives restarts with the evidence.
Results are ordered by posterior mean, or by a Thompson sample with ``explore=True``. The
retrieval order is the order of the scores (ties keep the input order); items with no
evidence keep it among themselves. An accept never lowers an item's mean and a rejection
never raises it (each part's posterior is a Beta update; the mixture weight moves with
it), and an item's evidence changes no other item's score. ``max_move`` caps how far one
item may move per call. ``prior_trust=1`` is the plain retrieval prior (the behaviour
of 0.1: a dominant top hit then takes about 24 rejections to leave the top 3).

**Selection ids.** Every rerank signs the ids in display order and the posterior means
they were ranked by (``Learner.issue_selection``). Feedback quotes the id: ranks always
come from the signed claims, never from the client, and only shown items can be credited.

**Feedback.** Explicit: per item ``accepted``, ``rejected``, ``partial`` (mapped by the
learner's reward model) or a number in [0, 1]; items not mentioned learn nothing.
Click-only (``clicks_only=True``): only accepted items are reported; skipped items above
the lowest reported one count as weighted failures (``qortex_mcp.clicks.ClickModel``);
items below it learn nothing. Repeat a click-only report with every item accepted so far:
a report that leaves out an earlier accept would turn it into a skip, which conflicts
with its first answer (``SELECTION_CONFLICT``, nothing applied). Sending the same
feedback twice changes nothing (the store deduplicates on selection and item).

**The hook.** ``reranker.wrap(search, context=...)`` (or the ``@reranker.hook(...)``
decorator) turns a retrieval function, sync or async, into an async one whose every call
comes back as a ``RerankResult`` with its selection id.

Modules: ``results`` (what a rerank returns, reading results), ``ranking`` (the robust
posterior and the move cap, pure numpy), ``reranker`` (``PosteriorReranker``: ranking,
feedback and the hook), ``clicks`` (the click model for click-only feedback).
"""

from qortex_mcp.rerank.clicks import ClickModel
from qortex_mcp.rerank.ranking import DOUBT_STRENGTH, robust_posterior
from qortex_mcp.rerank.reranker import PosteriorReranker
from qortex_mcp.rerank.results import ItemExplanation, RerankResult

__all__ = ["DOUBT_STRENGTH", "ClickModel", "ItemExplanation", "PosteriorReranker",
           "RerankResult", "robust_posterior"]
