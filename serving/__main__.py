"""``python -m serving``: run the model server (``MODELWATCH_*`` settings, docs/serving.md)."""

from __future__ import annotations

import sys

from serving.server import main

if __name__ == "__main__":
    sys.exit(main())
