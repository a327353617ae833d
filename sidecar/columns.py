"""The contract between the ingest parser and the drift engine: one batch of events as columns.

The parser (``sidecar.events``) does the unavoidable per-event JSON work once and hands the
engine numpy columns, so the engine's hot path is vectorised. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

STATUSES = ("ok", "error")
"""The bounded set of event statuses (the ``status`` label of ``modelwatch_predictions_total``)."""


@dataclass(frozen=True, slots=True, eq=False)
class EventColumns:
    """The accepted events of one request for one model version, column by column.

    Every array and sequence has ``n`` entries, in event order. ``ids`` are the event ids
    (unique within the batch), used to join feedback labels to predictions.

    - ``numeric[f]``: float64 column of numeric feature ``f``; NaN where the value was missing
      or of the wrong type (those are counted in ``missing`` / ``type_errors``, never binned).
    - ``categorical[f]``: canonical category keys (``sidecar.profile.category_key``) of
      categorical feature ``f``; None where missing or of the wrong type.
    - ``prediction``: the model output, numeric or categorical like a feature, or None when the
      profile has no prediction section.
    - ``missing`` / ``type_errors``: per feature (and ``"__prediction__"`` for the output), how
      many values were absent/null and how many had a type the profile does not allow.
    - ``unknown_features``: feature values whose name the profile does not know (counted, never
      turned into series).
    """

    n: int
    ids: Sequence[str]
    latency_seconds: FloatArray
    status_counts: Mapping[str, int]
    numeric: Mapping[str, FloatArray]
    categorical: Mapping[str, Sequence[str | None]]
    prediction: FloatArray | Sequence[str | None] | None
    missing: Mapping[str, int]
    type_errors: Mapping[str, int]
    unknown_features: int = 0


PREDICTION_KEY = "__prediction__"
"""Key used for the model output in ``EventColumns.missing`` and ``type_errors``."""
