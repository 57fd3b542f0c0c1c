"""The selection key: an obviously weak ``QORTEX_SECRET`` is refused (CONFIG_ERROR, one
line, the secret never echoed), and a key file others could read or swap is warned about."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import pytest

from qortex_mcp.errors import ConfigError
from qortex_mcp.learning.tokens import SECRET_FILE, load_secret

WEAK = [
    "a" * 40,                                   # one character repeated
    "changeme", "secret", "password",           # placeholders (also too short)
    "changeme" * 5, "CHANGE-ME-" * 4, "password" * 4, "secret-" * 6,
    "Password1234Password1234Password1234",     # any pattern repeated
    "0123456789" * 4, "abcdefghijklmnopqrstuvwxyz0123456789",  # runs
    "your-secret-here-please-replace-it-now",   # template text
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",     # hardly any different characters
    "short",
]


@pytest.mark.parametrize("weak", WEAK)
def test_an_obviously_weak_secret_is_a_config_error(tmp_path: Path, weak: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_secret(tmp_path, weak)
    assert caught.value.code == "CONFIG_ERROR"
    message = str(caught.value)
    assert message.startswith("CONFIG_ERROR: QORTEX_SECRET ")
    assert "\n" not in message
    if len(weak) > 8:  # (short placeholders are words the fix itself uses)
        assert weak not in message  # never echoed
    assert not (tmp_path / SECRET_FILE).exists()  # nothing written on a refusal


@pytest.mark.parametrize("good", [secrets.token_hex(32), secrets.token_urlsafe(32),
                                  "reliability-suite-secret-" + "5f" * 20,
                                  "correct horse battery staple, 4 words & more"])
def test_a_random_or_long_secret_is_accepted(tmp_path: Path, good: str) -> None:
    assert load_secret(tmp_path, good) == good.encode()


def test_a_weak_key_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("changeme" * 5)
    os.chmod(tmp_path / SECRET_FILE, 0o600)
    with pytest.raises(ConfigError, match=f"{SECRET_FILE} is a placeholder"):
        load_secret(tmp_path, None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_new_key_file_is_private_and_draws_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = load_secret(tmp_path, None)
    assert load_secret(tmp_path, None) == key
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert _warnings(caplog) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    key = load_secret(tmp_path, None)
    os.chmod(tmp_path / SECRET_FILE, mode)
    assert load_secret(tmp_path, None) == key  # still used: a warning, not a refusal
    (warning,) = _warnings(caplog)
    assert "selection_key_readable_by_others" in warning
    assert f"mode='{mode:04o}'" in warning
    assert f"chmod 600 {tmp_path / SECRET_FILE}" in warning
    assert key.decode() not in warning


def test_a_key_file_that_is_a_symlink_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "elsewhere.key"
    real.write_text(secrets.token_hex(32))
    os.chmod(real, 0o600)
    state = tmp_path / "state"
    state.mkdir()
    (state / SECRET_FILE).symlink_to(real)
    assert load_secret(state, None) == real.read_bytes()
    (warning,) = _warnings(caplog)
    assert "selection_key_is_a_symlink" in warning
