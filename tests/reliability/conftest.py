"""The reliability suite: real server processes on loopback, real stores, bounded loops.

See ``report.py`` for ``QORTEX_FAULT_SCALE`` and the summary lines printed at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability import report


@pytest.fixture(scope="session", autouse=True)
def _report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("QORTEX_RELIABILITY_REPORT")
                or tmp_path_factory.getbasetemp() / "reliability-report.jsonl")
    report.set_report_file(path)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.LINES:
        return
    terminalreporter.section(f"reliability summary (QORTEX_FAULT_SCALE={report.SCALE:g})")
    for line in report.LINES:
        terminalreporter.write_line(line)
