"""The PostgreSQL tests find out whether they can run by connecting for real: a server that
answers on the port but refuses the credentials or the database skips them, loudly and with
the reason, instead of failing them (``QORTEX_TEST_DATABASE_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PG_DEFAULT_DSN, PG_DSN_VARIABLE, postgres_unavailable

ROOT = Path(__file__).resolve().parents[1]
WRONG_USER = "postgresql://qortex_no_such_role:hunter2@127.0.0.1:5432/qortex_no_such_db"


def test_the_default_dsn_is_the_documented_one() -> None:
    assert PG_DEFAULT_DSN in (ROOT / "README.md").read_text(encoding="utf-8")
    assert PG_DSN_VARIABLE in (ROOT / "README.md").read_text(encoding="utf-8")


def test_wrong_credentials_are_a_reason_to_skip_with_the_password_masked() -> None:
    reason = postgres_unavailable(WRONG_USER)
    assert reason is not None
    assert "qortex_no_such_role:***@127.0.0.1:5432" in reason
    assert "hunter2" not in reason
    assert PG_DSN_VARIABLE in reason


def test_postgres_tests_skip_instead_of_failing_on_a_server_that_refuses_them() -> None:
    env = {**os.environ, PG_DSN_VARIABLE: WRONG_USER}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/postgres/test_startup.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert " failed" not in out
    assert " error" not in out
    assert "skipped" in out
    assert "WARNING: PostgreSQL tests were SKIPPED" in out
    assert "qortex_no_such_role" in out  # the reason names what was tried
