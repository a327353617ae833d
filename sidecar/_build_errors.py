"""The error a profile build raises, shared by the readers, the accumulators and the public door.

It lives below all three so that none of them imports another just for the exception; callers
import it from ``sidecar.profile_builder``.
"""

from __future__ import annotations

from sidecar.errors import ProfileError


class ProfileBuildError(ProfileError, ValueError):
    """The training data or a build option is unusable; ``column`` names the column when one is."""

    def __init__(
        self, field: str, reason: str, *, source: str | None = None, column: str | None = None
    ) -> None:
        super().__init__(field, reason, source=source)
        self.column = column


def column_error(column: str, reason: str, source: str | None = None) -> ProfileBuildError:
    return ProfileBuildError(f"column {column!r}", reason, source=source, column=column)
