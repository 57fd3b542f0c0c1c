"""The README's library example runs as written (against a temporary state directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_library_quick_start_runs_as_written(tmp_path: Path) -> None:
    (example,) = [b for b in python_blocks() if "Learner.create" in b][:1]
    env = {**os.environ, "QORTEX_STATE_DIR": str(tmp_path / "state")}
    env.pop("QORTEX_STORE", None)
    done = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "chosen:" in done.stdout
    assert "detailed-v2: mean" in done.stdout
    # the default store is SQLite in the state directory, with a 0600 selection key beside it
    assert (tmp_path / "state" / "qortex.db").exists()
    assert (tmp_path / "state" / "selection.key").stat().st_mode & 0o777 == 0o600


def test_the_readme_toml_example_configures_a_learner(tmp_path: Path) -> None:
    from qortex_mcp.config import Settings
    from qortex_mcp.learning import LearnerConfig

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (toml,) = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    path = tmp_path / "qortex.toml"
    path.write_text(toml, encoding="utf-8")
    settings = Settings.build(config_file=path, state_dir=tmp_path)
    config = LearnerConfig.from_options("prompts", settings.learner_options("prompts"))
    assert config.reward_model == "ternary"
    assert config.arm_priors == {"concise-v1": (8, 2)}
    assert config.half_life_s == 604800
    assert config.context_backoff == 4


def test_the_next_tool_example_runs_as_written() -> None:
    (example,) = [b for b in python_blocks() if "NextToolModel" in b]
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    expected = example.split("\n# ")[-1].strip()
    assert done.stdout.strip() == expected
