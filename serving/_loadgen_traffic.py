"""What the load generator sends: rows, drift shifts, heavy and malformed requests, per scenario.

``Traffic.request(index, elapsed)`` is a pure function of the request's index, its scheduled
time and the seed, so a run is reproducible whatever order concurrent workers take requests in.
Rows are replayed in passes, each pass a fresh shuffle of every row, so a window of the sidecar
sees each row at most about as often as any other (no row is over-represented by chance).

Scenarios:

- ``steady``: rows as they are;
- ``drift``: from ``drift_after`` seconds on, every row goes through the ``Shift`` list
  (``mean_texture+5`` adds, ``worst_area*1.5`` scales, ``size_class=large@0.6`` sets a category
  on 60 % of rows, re-weighting the categories);
- ``slow``: a share of requests carry ``slow_instances`` rows instead of one. Latency is injected
  by real work in the model server (decoding, a larger model call, more events to log), so its own
  latency histogram shows it; nothing in the server has to honour a test-only switch;
- ``errors``: a share of requests carry one malformed instance (a string for a number, a missing
  feature, an unknown feature, a list of the wrong length), each of which the server must refuse
  with a 4xx.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Scenario = Literal["steady", "drift", "slow", "errors"]
SCENARIOS: tuple[Scenario, ...] = ("steady", "drift", "slow", "errors")
RequestKind = Literal["normal", "drifted", "slow", "malformed"]
MALFORMED_KINDS = ("invalid_type", "missing_feature", "unknown_feature", "wrong_shape")

DEFAULT_DRIFT = ("mean_texture+5", "worst_area*1.5", "mean_smoothness+0.02", "size_class=large@0.6")
"""Four shifts with a PSI well above 0.2 each on the demo model's data."""

_SHIFT = re.compile(
    r"^(?P<feature>[A-Za-z_][\w.-]*)\s*(?P<op>[*+=])\s*(?P<value>[^@]+?)\s*(?:@\s*(?P<p>[\d.eE+-]+))?$"
)


class TrafficError(ValueError):
    """A traffic option is invalid; the message names the option and the reason."""


@dataclass(frozen=True, slots=True)
class Shift:
    """One drift: scale (``*``) or offset (``+``) a numeric feature, or set (``=``) a category.

    ``probability`` is the share of rows the shift applies to (the rest keep their value), which
    re-weights a categorical feature instead of replacing it everywhere.
    """

    feature: str
    op: Literal["scale", "add", "set"]
    value: float | str
    probability: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Shift:
        """``FEATURE*K``, ``FEATURE+D`` (D may be negative: ``+-2``) or ``FEATURE=VALUE[@P]``."""
        match = _SHIFT.match(text.strip())
        if match is None:
            raise TrafficError(
                f"--drift-features: {text!r} is not FEATURE*K, FEATURE+D or FEATURE=VALUE[@P]"
            )
        feature, op, raw = match["feature"], match["op"], match["value"]
        probability = 1.0
        if match["p"] is not None:
            probability = _number(match["p"], text)
            if not 0.0 < probability <= 1.0:
                raise TrafficError(f"--drift-features: {text!r}: @P must lie in (0, 1]")
        if op == "=":
            return cls(feature, "set", raw, probability)
        return cls(feature, "scale" if op == "*" else "add", _number(raw, text), probability)

    def __str__(self) -> str:
        symbol = {"scale": "*", "add": "+", "set": "="}[self.op]
        tail = "" if self.probability == 1.0 else f"@{self.probability:g}"
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.feature}{symbol}{value}{tail}"

    def apply(self, value: Any, draw: float) -> Any:
        """The shifted ``value``; ``draw`` is a uniform [0, 1) number deciding ``probability``."""
        if draw >= self.probability:
            return value
        if self.op == "set":
            return self.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            return value
        assert isinstance(self.value, float)  # noqa: S101 - parse makes numeric ops floats
        return value * self.value if self.op == "scale" else value + self.value


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """How requests are built: the scenario and its knobs."""

    scenario: Scenario = "steady"
    shifts: tuple[Shift, ...] = ()
    drift_after: float = 0.0
    instances_per_request: int = 1
    slow_share: float = 0.2
    slow_instances: int = 256
    error_share: float = 0.2
    seed: int = 2026


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request's instances and what the scenario made of it."""

    instances: list[Any]
    kind: RequestKind


class Traffic:
    """Builds request ``i`` of a run from the data rows and a ``TrafficPlan``."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], plan: TrafficPlan) -> None:
        if not rows:
            raise TrafficError("--data: has no rows")
        if plan.scenario not in SCENARIOS:
            raise TrafficError(f"--scenario: must be one of {', '.join(SCENARIOS)}")
        features = set(rows[0])
        for shift in plan.shifts:
            if shift.feature not in features:
                raise TrafficError(
                    f"--drift-features: {shift.feature!r} is not a column of the data "
                    f"({', '.join(sorted(features))})"
                )
        self.plan = plan
        self._rows = [dict(row) for row in rows]
        self._names = list(rows[0])
        self._passes: dict[int, NDArray[np.intp]] = {}

    def request(self, index: int, elapsed: float) -> PlannedRequest:
        """Request ``index``, scheduled ``elapsed`` seconds into the run."""
        plan = self.plan
        draws = np.random.default_rng([plan.seed, index]).random(2 + len(plan.shifts))
        if plan.scenario == "slow" and draws[0] < plan.slow_share:
            rows = [self._row(index * plan.slow_instances + k) for k in range(plan.slow_instances)]
            return PlannedRequest(rows, "slow")
        per = plan.instances_per_request
        rows = [self._row(index * per + k) for k in range(per)]
        if plan.scenario == "errors" and draws[0] < plan.error_share:
            kind = MALFORMED_KINDS[int(draws[1] * len(MALFORMED_KINDS))]
            rows[0] = self._malformed(rows[0], kind)
            return PlannedRequest(rows, "malformed")
        if plan.scenario == "drift" and elapsed >= plan.drift_after and plan.shifts:
            for row_number, row in enumerate(rows):
                row_draws = np.random.default_rng([plan.seed, index, row_number]).random(
                    len(plan.shifts)
                )
                for shift, draw in zip(plan.shifts, row_draws, strict=True):
                    row[shift.feature] = shift.apply(row[shift.feature], float(draw))
            return PlannedRequest(rows, "drifted")
        return PlannedRequest(rows, "normal")

    def _row(self, position: int) -> dict[str, Any]:
        count = len(self._rows)
        number, offset = divmod(position, count)
        order = self._passes.get(number)
        if order is None:
            order = np.random.default_rng([self.plan.seed, 1 << 20, number]).permutation(count)
            if len(self._passes) > 4:
                self._passes.pop(min(self._passes))
            self._passes[number] = order
        return dict(self._rows[int(order[offset])])

    def _malformed(self, row: dict[str, Any], kind: str) -> Any:
        first = self._names[0]
        if kind == "invalid_type":
            return {**row, first: "not a number"}
        if kind == "missing_feature":
            return {name: value for name, value in row.items() if name != first}
        if kind == "unknown_feature":
            return {**row, "no_such_feature": 1.0}
        return list(row.values())[:-1]


def parse_shifts(texts: Sequence[str]) -> tuple[Shift, ...]:
    """Parse ``--drift-features`` items (comma-separated items are split too)."""
    items = [part for text in texts for part in text.split(",") if part.strip()]
    return tuple(Shift.parse(item) for item in items)


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TrafficError(f"--drift-features: {where!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TrafficError(f"--drift-features: {where!r}: {text!r} is not finite")
    return value
