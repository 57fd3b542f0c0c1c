"""Test-only launcher: ``qortex-mcp`` with noise injected into its tool paths.

The stdout-hygiene test needs a ``print()``, a ``sys.stdout.write``, a Python warning and a
log line from inside a tool call, and production code has no hook for that (nor should it).
So this launcher wraps ``Learner.select`` and ``Learner.batch_observe`` in the server
process before handing over to the real command line. Nothing here is imported by the
package.

    python -m tests.reliability.noisy_server [qortex-mcp arguments]
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from qortex_mcp.cli import main
from qortex_mcp.learning.learner import Learner

_select = Learner.select
_observe = Learner.batch_observe


def _noise(where: str) -> None:
    print(f"NOISE: print() in {where}")  # not flushed: stdout is a pipe, so block-buffered
    sys.stdout.write(f"NOISE: sys.stdout.write in {where}\n")
    warnings.warn(f"NOISE: a warning in {where}", UserWarning, stacklevel=2)
    logging.getLogger("noisy").warning("NOISE: a log line in %s", where)


async def _noisy_select(self: Learner, *args: Any, **kwargs: Any) -> Any:
    _noise("select")
    return await _select(self, *args, **kwargs)


async def _noisy_observe(self: Learner, *args: Any, **kwargs: Any) -> Any:
    _noise("feedback")
    return await _observe(self, *args, **kwargs)


Learner.select = _noisy_select  # type: ignore[method-assign,assignment]
Learner.batch_observe = _noisy_observe  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
