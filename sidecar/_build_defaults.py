"""Default sizes of a profile build, importable without the build's heavy dependencies.

The CLI shows them in ``--help`` for every sub-command, ``serve`` included, which must not pay
for importing pyarrow (about 25 MiB of resident memory in the sidecar).
"""

from __future__ import annotations

DEFAULT_PSI_BINS = 10
DEFAULT_KS_BINS = 200
DEFAULT_TOP_K = 50
