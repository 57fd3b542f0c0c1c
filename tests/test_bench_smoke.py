"""Every bench script still runs: each ``bench/bench_*.py`` in its ``--smoke`` mode (tiny
sizes, a few seconds), so the benchmarks never rot between the runs that produce figures.

Here the scripts are pinned (``QORTEX_ANCHORS``) to the project's own numpy reference,
``bench/reference.py``, so whatever sits beside the checkout never changes a test's
outcome and a plain clone runs exactly what CI runs; each run says on stderr which
reference it used. How a script picks its reference is tested below with stand-in files.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import PG_UNAVAILABLE

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


def test_there_is_a_bench_script_for_the_learning_core() -> None:
    assert BENCH / "bench_core.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_the_bench_script_runs_in_smoke_mode(script: Path, tmp_path: Path) -> None:
    if "postgres" in script.stem and PG_UNAVAILABLE:
        pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
    env = {**os.environ, "QORTEX_STATE_DIR": str(tmp_path / "state"),
           "QORTEX_ANCHORS": str(BENCH / "reference.py")}
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=BENCH.parent, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"{script.name} --smoke failed:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} --smoke printed no figures"
    if "reference=" in done.stdout:  # a script that compares against the numpy reference
        assert f"bench: numpy reference: {BENCH / 'reference.py'}" in done.stderr


def _load(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A bench module imported by path, as the scripts import their siblings."""
    name = f"qortex_bench_{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_plain_clone_uses_the_projects_own_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    common = _load(BENCH / "common.py", monkeypatch)
    monkeypatch.delenv(common.ANCHORS_ENV, raising=False)
    monkeypatch.setattr(common, "DEFAULT_ANCHORS", tmp_path / "shared" / "bench" / "anchors.py")
    reference = common.load_anchors()
    assert common.reference_path() == BENCH / "reference.py"
    assert f"bench: numpy reference: {BENCH / 'reference.py'}" in capsys.readouterr().err
    assert common.machine_notes()["reference"] == str(BENCH / "reference.py")
    for name in ("RefTS", "make_problem", "lai_robbins_constant", "run_regret_once",
                 "part_rank", "SCHEMA", "UPSERT"):  # what bench_core and bench_rerank use
        assert hasattr(reference, name), name


def test_the_shared_yardstick_is_preferred_when_it_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = _load(BENCH / "common.py", monkeypatch)
    shared = tmp_path / "shared" / "bench" / "anchors.py"
    shared.parent.mkdir(parents=True)
    shared.write_text("RefTS = None\n", encoding="utf-8")
    monkeypatch.delenv(common.ANCHORS_ENV, raising=False)
    monkeypatch.setattr(common, "DEFAULT_ANCHORS", shared)
    assert common.reference_path() == shared
    monkeypatch.setenv(common.ANCHORS_ENV, str(tmp_path / "nowhere.py"))
    with pytest.raises(SystemExit, match="QORTEX_ANCHORS"):  # an explicit path must exist
        common.reference_path()


def test_the_own_reference_learns_like_thompson_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _load(BENCH / "reference.py", monkeypatch)
    mu = ref.make_problem("K10", 0)
    u = np.random.default_rng(20_000).random((2000, len(mu)))
    run = ref.run_regret_once(lambda k, s: ref.RefTS(k, s), mu, 2000, u, 0)
    assert set(run["regret"]) == {1000, 2000}
    assert run["regret"][2000] < 0.1 * 2000 * float(np.mean(mu.max() - mu))  # far below random
    ts = ref.RefTS(50, 1)
    ts.warm([3, 3, 3, 3], [1.0, 1.0, 1.0, 1.0])
    assert ts.a[3] == 5.0  # repeated arms all count
    assert ts.b[3] == 1.0
    assert len(set(ts.topk(5))) == 5
