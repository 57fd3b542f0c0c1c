"""``python -m qortex_mcp``: the same as the ``qortex-mcp`` command."""

import sys

from qortex_mcp.cli import main

sys.exit(main())
