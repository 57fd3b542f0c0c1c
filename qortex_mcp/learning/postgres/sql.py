"""The PostgreSQL schema and every statement the store runs, for one schema name.

Identifiers cannot be bind parameters, so the schema name is written into the SQL text. It
is checked against a strict pattern (``check_schema``) and double-quoted before it ever
reaches a template, and it comes from operator configuration only, never from a tool
argument; every value is a bind parameter.

Floating point: PostgreSQL raises "value out of range: underflow" where IEEE arithmetic
(Python, SQLite) quietly rounds a tiny product to zero, e.g. evidence decayed over many
half-lives. ``mul`` and ``halve`` return 0 for products below ~1e-160 instead; above that
they are the same IEEE operations as ``stores.base.fold``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Statements", "check_schema"]

_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def check_schema(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier of at most 48 characters."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ValueError(
            "schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 48 characters)"
        )
    return name


_DDL: Final = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.learners (
    name text PRIMARY KEY, config text NOT NULL, version bigint NOT NULL DEFAULT 0,
    selections bigint NOT NULL DEFAULT 0, explored bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL, answered bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {s}.evidence (
    learner text NOT NULL, ctx text NOT NULL, arm text NOT NULL,
    s double precision NOT NULL, f double precision NOT NULL, n bigint NOT NULL,
    rsum double precision NOT NULL, t double precision NOT NULL, v bigint NOT NULL,
    PRIMARY KEY (learner, ctx, arm));
CREATE INDEX IF NOT EXISTS evidence_by_version ON {s}.evidence (learner, v);
CREATE TABLE IF NOT EXISTS {s}.arms (
    learner text NOT NULL, arm text NOT NULL, a0 double precision, b0 double precision,
    selections bigint NOT NULL DEFAULT 0, last_selected double precision, v bigint NOT NULL,
    PRIMARY KEY (learner, arm));
CREATE INDEX IF NOT EXISTS arms_by_version ON {s}.arms (learner, v);
CREATE TABLE IF NOT EXISTS {s}.contexts (
    learner text NOT NULL, ctx text NOT NULL, body text NOT NULL, PRIMARY KEY (learner, ctx));
CREATE TABLE IF NOT EXISTS {s}.events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, learner text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('feedback', 'decay', 'reset')),
    key text, arm text NOT NULL, ctx text, reward double precision, weight double precision,
    outcome text, at double precision NOT NULL, factor double precision,
    propensity double precision, policy text);
CREATE UNIQUE INDEX IF NOT EXISTS events_one_answer ON {s}.events (learner, key, arm)
    WHERE kind = 'feedback';
CREATE INDEX IF NOT EXISTS events_by_learner ON {s}.events (learner, seq);
CREATE TABLE IF NOT EXISTS {s}.decisions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, learner text NOT NULL,
    key text NOT NULL, kind text NOT NULL CHECK (kind IN ('select', 'rerank')),
    ctx text NOT NULL, at double precision NOT NULL, policy text NOT NULL,
    chosen text NOT NULL, propensities text NOT NULL, candidates text,
    n_candidates bigint NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_by_key ON {s}.decisions (learner, key);
CREATE OR REPLACE FUNCTION {s}.mul(x double precision, y double precision)
    RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN abs(x) < 1e-160::double precision
                        OR abs(y) < 1e-160::double precision
                      THEN 0::double precision ELSE x * y END $$;
CREATE OR REPLACE FUNCTION {s}.halve(x double precision, steps double precision)
    RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN steps > 1000 THEN 0::double precision
                      ELSE {s}.mul(x, pow(0.5::double precision, steps)) END $$;
INSERT INTO {s}.meta (key, value) VALUES ('schema_version', '__VERSION__')
    ON CONFLICT (key) DO NOTHING;
"""

# Lock the learner's row for the rest of the transaction and take the next version. Every
# write starts here, so writers of one learner are serialized from this statement to COMMIT:
# versions (and event seqs) are therefore in commit order, which is what lets ``changes``
# read "everything above my cursor" without ever missing a row. The NOTIFY is delivered at
# COMMIT, and dropped on ROLLBACK.
_LOCK: Final = """
INSERT INTO {s}.learners AS l (name, config, version, created_at) VALUES ($1, '{}', 1, $2)
ON CONFLICT (name) DO UPDATE SET version = l.version + 1
RETURNING l.version, pg_notify($3, $4)::text
"""

# Runs after _LOCK, as its own statement: under READ COMMITTED each statement takes a new
# snapshot, so this one sees every answer committed by the writers we waited for.
_ANSWERED: Final = """
SELECT e.learner, e.key, e.arm, e.reward
FROM {s}.events e JOIN unnest($1::text[], $2::text[]) AS q(learner, key)
  ON e.learner = q.learner AND e.key = q.key
WHERE e.kind = 'feedback'
"""

# One statement per (learner, half-life): log the events (a row already answered is skipped
# by the unique index, whatever happens), fold only the inserted ones into the evidence in
# SQL, stamp the arms and remember context bodies. Several events on one evidence row are
# first folded together as of their latest time (fold is associative), because one
# INSERT ... ON CONFLICT DO UPDATE may touch a row only once.
_APPLY: Final = """
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::float8[],
                         $7::float8[], $8::text[], $9::float8[], $10::float8[], $11::float8[],
                         $14::float8[], $15::text[])
        WITH ORDINALITY AS i(key, arm, ctx, body, reward, weight, outcome, at, a0, b0,
                             propensity, policy, ord)
), ins AS (
    INSERT INTO {s}.events (learner, kind, key, arm, ctx, reward, weight, outcome, at,
                            propensity, policy)
    SELECT $1, 'feedback', key, arm, ctx, reward, weight, outcome, at, propensity, policy
    FROM input ORDER BY ord
    ON CONFLICT (learner, key, arm) WHERE kind = 'feedback' DO NOTHING
    RETURNING arm, ctx, reward, weight, at
), obs AS (
    SELECT '' AS ctx, arm, {s}.mul(weight, reward) AS ws, {s}.mul(weight, 1 - reward) AS wf,
           reward, at FROM ins
    UNION ALL
    SELECT ctx, arm, {s}.mul(weight, reward), {s}.mul(weight, 1 - reward), reward, at
    FROM ins WHERE ctx <> ''
), agg AS (
    SELECT ctx, arm,
           sum(CASE WHEN $13::float8 IS NULL THEN ws ELSE {s}.halve(ws, (m - at) / $13) END) AS s,
           sum(CASE WHEN $13::float8 IS NULL THEN wf ELSE {s}.halve(wf, (m - at) / $13) END) AS f,
           count(*) AS n, sum(reward) AS rsum, max(at) AS t
    FROM (SELECT *, max(at) OVER (PARTITION BY ctx, arm) AS m FROM obs) o
    GROUP BY ctx, arm
), ev AS (
    INSERT INTO {s}.evidence AS e (learner, ctx, arm, s, f, n, rsum, t, v)
    SELECT $1, ctx, arm, s, f, n, rsum, t, $12 FROM agg
    ON CONFLICT (learner, ctx, arm) DO UPDATE SET
        s = CASE WHEN $13::float8 IS NULL THEN e.s + excluded.s
                 WHEN excluded.t >= e.t THEN {s}.halve(e.s, (excluded.t - e.t) / $13) + excluded.s
                 ELSE e.s + {s}.halve(excluded.s, (e.t - excluded.t) / $13) END,
        f = CASE WHEN $13::float8 IS NULL THEN e.f + excluded.f
                 WHEN excluded.t >= e.t THEN {s}.halve(e.f, (excluded.t - e.t) / $13) + excluded.f
                 ELSE e.f + {s}.halve(excluded.f, (e.t - excluded.t) / $13) END,
        n = e.n + excluded.n, rsum = e.rsum + excluded.rsum, t = greatest(e.t, excluded.t),
        v = excluded.v
    RETURNING ctx, arm, s, f, n, rsum, t, v
), arm_rows AS (
    INSERT INTO {s}.arms AS a (learner, arm, a0, b0, selections, v)
    SELECT DISTINCT ON (arm) $1, arm, a0, b0, 0, $12 FROM input ORDER BY arm, a0 IS NULL, ord DESC
    ON CONFLICT (learner, arm) DO UPDATE SET
        a0 = coalesce(excluded.a0, a.a0), b0 = coalesce(excluded.b0, a.b0), v = excluded.v
), ctx_rows AS (
    INSERT INTO {s}.contexts (learner, ctx, body)
    SELECT DISTINCT ON (ctx) $1, ctx, body FROM input WHERE body IS NOT NULL ORDER BY ctx, ord
    ON CONFLICT (learner, ctx) DO NOTHING
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       array_agg(ROW(ctx, arm, s, f, n, rsum, t, v)) AS rows
FROM ev
"""

_COUNT_SELECTIONS: Final = """
WITH head AS (
    UPDATE {s}.learners SET selections = selections + $2, explored = explored + $3,
        answered = answered + $10
    WHERE name = $1
), logged AS (
    INSERT INTO {s}.decisions (learner, key, kind, ctx, at, policy, chosen, propensities,
                               candidates, n_candidates)
    SELECT $1, key, kind, ctx, at, policy, chosen, props, cands, n
    FROM unnest($11::text[], $12::text[], $13::text[], $14::float8[], $15::text[],
                $16::text[], $17::text[], $18::text[], $19::bigint[])
        WITH ORDINALITY AS d(key, kind, ctx, at, policy, chosen, props, cands, n, ord)
    ORDER BY ord
    ON CONFLICT (learner, key) DO NOTHING
)
INSERT INTO {s}.arms AS a (learner, arm, a0, b0, selections, last_selected, v)
SELECT $1, arm, a0, b0, n, last, $4
FROM unnest($5::text[], $6::float8[], $7::float8[], $8::bigint[], $9::float8[])
    AS u(arm, a0, b0, n, last)
ON CONFLICT (learner, arm) DO UPDATE SET
    a0 = coalesce(excluded.a0, a.a0), b0 = coalesce(excluded.b0, a.b0),
    selections = a.selections + excluded.selections,
    last_selected = greatest(coalesce(a.last_selected, 0), coalesce(excluded.last_selected, 0)),
    v = excluded.v
"""

_DECAY: Final = """
WITH up AS (
    UPDATE {s}.evidence SET s = {s}.mul(s, $2), f = {s}.mul(f, $2), v = $3
    WHERE learner = $1 AND ($4 = '' OR arm = $4)
    RETURNING ctx, arm, s, f, n, rsum, t, v
), logged AS (
    INSERT INTO {s}.events (learner, kind, arm, at, factor, outcome)
    VALUES ($1, 'decay', $4, $5, $2, $6)
)
SELECT ctx, arm, s, f, n, rsum, t, v FROM up
"""

_RESET_MATCH: Final = """
SELECT ctx, arm, s, f FROM {s}.evidence
WHERE learner = $1 AND ($2::text[] IS NULL OR arm = ANY($2)) AND ($3::text IS NULL OR ctx = $3)
  AND (s <> 0 OR f <> 0 OR n <> 0)
"""

# Runs under the learner lock right after _RESET_MATCH, so it touches exactly those rows.
_RESET_APPLY: Final = """
WITH up AS (
    UPDATE {s}.evidence SET s = 0, f = 0, n = 0, rsum = 0, v = $4
    WHERE learner = $1 AND ($2::text[] IS NULL OR arm = ANY($2))
      AND ($3::text IS NULL OR ctx = $3) AND (s <> 0 OR f <> 0 OR n <> 0)
)
INSERT INTO {s}.events (learner, kind, arm, ctx, at)
SELECT $1, 'reset', arm, $3, $5 FROM unnest($6::text[]) WITH ORDINALITY AS u(arm, ord)
ORDER BY ord
"""

# One statement, so one snapshot: the head and the rows agree with each other.
_SINCE: Final = """
SELECT l.version, l.selections, l.explored, l.answered,
       CASE WHEN l.version > $2 THEN (
           SELECT array_agg(ROW(e.ctx, e.arm, e.s, e.f, e.n, e.rsum, e.t, e.v))
           FROM {s}.evidence e WHERE e.learner = $1 AND e.v > $2) END AS evidence,
       CASE WHEN l.version > $2 THEN (
           SELECT array_agg(ROW(a.arm, a.a0, a.b0, a.selections, a.last_selected, a.v))
           FROM {s}.arms a WHERE a.learner = $1 AND a.v > $2) END AS arms
FROM {s}.learners l WHERE l.name = $1
"""

_EVENTS: Final = """
SELECT e.seq, e.kind, e.key, e.arm, e.ctx, e.reward, e.weight, e.outcome, e.at, e.factor, c.body,
       e.propensity, e.policy
FROM {s}.events e LEFT JOIN {s}.contexts c ON c.learner = e.learner AND c.ctx = e.ctx
WHERE e.learner = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3
"""

_EVENTS_BARE: Final = """
SELECT e.seq, e.kind, e.key, e.arm, e.ctx, e.reward, e.weight, e.outcome, e.at, e.factor, NULL,
       e.propensity, e.policy
FROM {s}.events e WHERE e.learner = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3
"""

_DECISIONS: Final = """
SELECT seq, key, kind, ctx, at, policy, chosen, propensities, candidates, n_candidates
FROM {s}.decisions WHERE learner = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""

_DECISIONS_BY_KEY: Final = """
SELECT seq, key, kind, ctx, at, policy, chosen, propensities, candidates, n_candidates
FROM {s}.decisions WHERE learner = $1 AND key = ANY($2::text[]) ORDER BY seq
"""

_EVIDENCE: Final = "SELECT ctx, arm, s, f, n, rsum, t, v FROM {s}.evidence WHERE learner = $1"

_LEARNERS: Final = """
SELECT l.name, (SELECT count(*) FROM {s}.arms a WHERE a.learner = l.name),
       l.selections, l.explored,
       (SELECT coalesce(sum(n), 0)::bigint FROM {s}.evidence e
        WHERE e.learner = l.name AND e.ctx = ''),
       (SELECT max(t) FROM {s}.evidence e WHERE e.learner = l.name)
FROM {s}.learners l ORDER BY l.name COLLATE "C"
"""

_CONTEXTS: Final = (
    "SELECT ctx, body FROM {s}.contexts WHERE learner = $1 AND ctx = ANY($2::text[])"
)

_ENSURE_LEARNER: Final = """
INSERT INTO {s}.learners (name, config, version, created_at) VALUES ($1, $2, 0, $3)
ON CONFLICT (name) DO NOTHING
"""

_SCHEMA_VERSION: Final = "SELECT value FROM {s}.meta WHERE key = 'schema_version'"

# The selection key of a learner given this store and no signer (first instance wins).
_SELECTION_KEY: Final = """
WITH added AS (
    INSERT INTO {s}.meta (key, value) VALUES ('selection_key', $1)
    ON CONFLICT (key) DO NOTHING RETURNING value)
SELECT value FROM added UNION ALL SELECT value FROM {s}.meta WHERE key = 'selection_key'
LIMIT 1
"""

# Schema 1 -> 2 (after the DDL has created the decisions table): the event columns schema 1
# lacks, existing rows NULL; then the version. Run under prepare_schema's advisory lock.
_MIGRATE_1_2: Final = """
ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS propensity double precision;
ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS policy text;
UPDATE {s}.meta SET value = '__VERSION__' WHERE key = 'schema_version';
"""

# Schemas created before the answered counter get the column (0); their data is intact.
_ADD_ANSWERED: Final = (
    "ALTER TABLE {s}.learners ADD COLUMN IF NOT EXISTS answered bigint NOT NULL DEFAULT 0"
)


@dataclass(frozen=True)
class Statements:
    """Every statement, with the schema written in (see the module docstring)."""

    ddl: str
    lock: str
    answered: str
    apply: str
    count_selections: str
    decay: str
    reset_match: str
    reset_apply: str
    since: str
    events: str
    events_bare: str
    decisions: str
    decisions_by_key: str
    evidence: str
    learners: str
    contexts: str
    ensure_learner: str
    schema_version: str
    selection_key: str
    add_answered: str
    migrate_1_2: str

    @classmethod
    def for_schema(cls, schema: str, version: int) -> Statements:
        quoted = '"' + check_schema(schema) + '"'
        templates = {
            "ddl": _DDL.replace("__VERSION__", str(int(version))),
            "lock": _LOCK, "answered": _ANSWERED, "apply": _APPLY,
            "count_selections": _COUNT_SELECTIONS, "decay": _DECAY,
            "reset_match": _RESET_MATCH, "reset_apply": _RESET_APPLY, "since": _SINCE,
            "events": _EVENTS, "events_bare": _EVENTS_BARE, "decisions": _DECISIONS,
            "decisions_by_key": _DECISIONS_BY_KEY,
            "evidence": _EVIDENCE, "learners": _LEARNERS,
            "contexts": _CONTEXTS, "ensure_learner": _ENSURE_LEARNER,
            "schema_version": _SCHEMA_VERSION, "selection_key": _SELECTION_KEY,
            "add_answered": _ADD_ANSWERED,
            "migrate_1_2": _MIGRATE_1_2.replace("__VERSION__", str(int(version))),
        }
        assert set(templates) == {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: text.replace("{s}", quoted) for name, text in templates.items()})
