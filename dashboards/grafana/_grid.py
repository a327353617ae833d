"""Grafana's 24-column grid: places panels left to right, in rows, each with a unique id."""

from __future__ import annotations

from typing import Final, Protocol

from grafana_foundation_sdk.models import dashboard as model

GRID_COLUMNS: Final = 24


class PanelBuilder(Protocol):
    """Any SDK panel builder (time series, stat, table, heatmap, state timeline)."""

    def build(self) -> model.Panel:
        """The panel model."""
        ...


class Grid:
    """Places panels left to right, wrapping at 24 columns, under expanded rows."""

    def __init__(self) -> None:
        self._panels: list[model.Panel | model.RowPanel] = []
        self._x = 0
        self._y = 0
        self._line_height = 0
        self._next_id = 1

    def _new_line(self) -> None:
        self._y += self._line_height
        self._x = 0
        self._line_height = 0

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def row(self, title: str) -> None:
        """Start a new (expanded) row titled ``title``."""
        self._new_line()
        grid_pos = model.GridPos(h=1, w=GRID_COLUMNS, x=0, y=self._y)
        self._panels.append(
            model.RowPanel(collapsed=False, title=title, grid_pos=grid_pos, id_val=self._id())
        )
        self._y += 1

    def add(self, panel: PanelBuilder, *, width: int, height: int = 8) -> None:
        """Place ``panel`` after the previous one, wrapping to a new line when it does not fit."""
        if not 0 < width <= GRID_COLUMNS:
            raise ValueError(f"panel width {width} outside 1..{GRID_COLUMNS}")
        if self._x + width > GRID_COLUMNS:
            self._new_line()
        built = panel.build()
        built.id_val = self._id()
        built.grid_pos = model.GridPos(h=height, w=width, x=self._x, y=self._y)
        self._panels.append(built)
        self._x += width
        self._line_height = max(self._line_height, height)

    def panels(self) -> list[model.Panel | model.RowPanel]:
        """The rows and panels placed so far, in order."""
        return list(self._panels)
