"""The SQLite store's schema and statements (the store's only SQL).

Every counter is incremented in SQL (``n = n + 1``), never computed in Python and written
back, so two processes on one file never lose an update.
"""

from __future__ import annotations

from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS qortex_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learners (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0,
    selections INTEGER NOT NULL DEFAULT 0, explored INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, answered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS evidence (
    learner TEXT NOT NULL, ctx TEXT NOT NULL, arm TEXT NOT NULL,
    s REAL NOT NULL, f REAL NOT NULL, n INTEGER NOT NULL, rsum REAL NOT NULL,
    t REAL NOT NULL, v INTEGER NOT NULL,
    PRIMARY KEY (learner, ctx, arm)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS evidence_by_version ON evidence (learner, v);
CREATE TABLE IF NOT EXISTS arms (
    learner TEXT NOT NULL, arm TEXT NOT NULL, a0 REAL, b0 REAL,
    selections INTEGER NOT NULL DEFAULT 0, last_selected REAL, v INTEGER NOT NULL,
    PRIMARY KEY (learner, arm)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS arms_by_version ON arms (learner, v);
CREATE TABLE IF NOT EXISTS contexts (
    learner TEXT NOT NULL, ctx TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (learner, ctx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, learner TEXT NOT NULL, kind TEXT NOT NULL,
    key TEXT, arm TEXT NOT NULL, ctx TEXT, reward REAL, weight REAL, outcome TEXT,
    at REAL NOT NULL, factor REAL, propensity REAL, policy TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS events_one_answer ON events (learner, key, arm)
    WHERE kind = 'feedback';
CREATE INDEX IF NOT EXISTS events_by_learner ON events (learner, seq);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, learner TEXT NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL, ctx TEXT NOT NULL, at REAL NOT NULL, policy TEXT NOT NULL,
    chosen TEXT NOT NULL, propensities TEXT NOT NULL, candidates TEXT,
    n_candidates INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_by_key ON decisions (learner, key);
"""

# Schema 1 -> 2: the columns schema 1's events table lacks (the decisions table is new,
# created by SCHEMA). ALTER TABLE ADD COLUMN leaves every existing row as it was (NULL).
MIGRATE_1_2: Final = (
    "ALTER TABLE events ADD COLUMN propensity REAL",
    "ALTER TABLE events ADD COLUMN policy TEXT",
)

BUMP: Final = (
    "INSERT INTO learners (name, config, version, created_at) VALUES (?, '{}', 1, ?) "
    "ON CONFLICT (name) DO UPDATE SET version = version + 1 RETURNING version"
)
ANSWERED: Final = (
    "SELECT key, arm, reward FROM events WHERE learner = ? AND kind = 'feedback' "
    "AND key IN (SELECT value FROM json_each(?))"
)
INSERT_EVENT: Final = (
    "INSERT INTO events (learner, kind, key, arm, ctx, reward, weight, outcome, at, factor, "
    "propensity, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_DECISION: Final = (
    "INSERT OR IGNORE INTO decisions (learner, key, kind, ctx, at, policy, chosen, "
    "propensities, candidates, n_candidates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DECISIONS: Final = (
    "SELECT seq, key, kind, ctx, at, policy, chosen, propensities, candidates, n_candidates "
    "FROM decisions WHERE learner = ? AND seq > ? ORDER BY seq LIMIT ?")
DECISIONS_BY_KEY: Final = (
    "SELECT seq, key, kind, ctx, at, policy, chosen, propensities, candidates, n_candidates "
    "FROM decisions WHERE learner = ? AND key IN (SELECT value FROM json_each(?)) "
    "ORDER BY seq")
FOLD_PLAIN: Final = (
    "INSERT INTO evidence (learner, ctx, arm, s, f, n, rsum, t, v) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (learner, ctx, arm) DO UPDATE SET "
    "s = s + excluded.s, f = f + excluded.f, n = n + excluded.n, rsum = rsum + excluded.rsum, "
    "t = max(t, excluded.t), v = excluded.v"
)
# Half-life fold (see stores.base.fold): the row is kept as of its latest event time.
FOLD_DECAY: Final = (
    "INSERT INTO evidence (learner, ctx, arm, s, f, n, rsum, t, v) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8) ON CONFLICT (learner, ctx, arm) DO UPDATE SET "
    "s = CASE WHEN excluded.t >= t THEN s * pow(0.5, (excluded.t - t) / ?9) + excluded.s "
    "ELSE s + excluded.s * pow(0.5, (t - excluded.t) / ?9) END, "
    "f = CASE WHEN excluded.t >= t THEN f * pow(0.5, (excluded.t - t) / ?9) + excluded.f "
    "ELSE f + excluded.f * pow(0.5, (t - excluded.t) / ?9) END, "
    "n = n + 1, rsum = rsum + excluded.rsum, t = max(t, excluded.t), v = excluded.v"
)
UPSERT_ARM: Final = (
    "INSERT INTO arms (learner, arm, a0, b0, selections, v) VALUES (?, ?, ?, ?, 0, ?) "
    "ON CONFLICT (learner, arm) DO UPDATE SET a0 = coalesce(excluded.a0, a0), "
    "b0 = coalesce(excluded.b0, b0), v = excluded.v"
)
COUNT_SELECTIONS: Final = (
    "INSERT INTO arms (learner, arm, a0, b0, selections, last_selected, v) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (learner, arm) DO UPDATE SET "
    "a0 = coalesce(excluded.a0, a0), b0 = coalesce(excluded.b0, b0), "
    "selections = selections + excluded.selections, "
    "last_selected = max(coalesce(last_selected, 0), coalesce(excluded.last_selected, 0)), "
    "v = excluded.v"
)
EVIDENCE_AT: Final = (
    "SELECT ctx, arm, s, f, n, rsum, t, v FROM evidence WHERE learner = ? AND v = ?"
)
EVIDENCE_SINCE: Final = (
    "SELECT ctx, arm, s, f, n, rsum, t, v FROM evidence WHERE learner = ? AND v > ?"
)
ARMS_SINCE: Final = (
    "SELECT arm, a0, b0, selections, last_selected, v FROM arms WHERE learner = ? AND v > ?"
)
RESET_MATCH: Final = (
    "SELECT ctx, arm, s, f FROM evidence WHERE learner = ?1 "
    "AND (?2 IS NULL OR arm IN (SELECT value FROM json_each(?2))) "
    "AND (?3 IS NULL OR ctx = ?3) AND (s != 0 OR f != 0 OR n != 0)"
)
RESET_APPLY: Final = (
    "UPDATE evidence SET s = 0, f = 0, n = 0, rsum = 0, v = ?4 WHERE learner = ?1 "
    "AND (?2 IS NULL OR arm IN (SELECT value FROM json_each(?2))) "
    "AND (?3 IS NULL OR ctx = ?3) AND (s != 0 OR f != 0 OR n != 0)"
)

EVENTS: Final = (
    "SELECT e.seq, e.kind, e.key, e.arm, e.ctx, e.reward, e.weight, e.outcome, e.at, e.factor, "
    "c.body, e.propensity, e.policy FROM events e "
    "LEFT JOIN contexts c ON c.learner = e.learner AND c.ctx = e.ctx "
    "WHERE e.learner = ? AND e.seq > ? ORDER BY e.seq LIMIT ?")
EVENTS_BARE: Final = (
    "SELECT seq, kind, key, arm, ctx, reward, weight, outcome, at, factor, NULL, propensity, "
    "policy FROM events WHERE learner = ? AND seq > ? ORDER BY seq LIMIT ?")
