"""``python -m plait``: the ``plait`` command (see ``plait/_cli.py``)."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
