"""Feature redaction for shipped prediction logs: drop a feature, or replace it by a keyed hash.

Drift statistics are computed before redaction (they need the values and never leave the pod as
values); redaction only shapes what goes to Elasticsearch or the NDJSON files. A hashed value is
``HMAC-SHA256(key, value)`` in lowercase hex, so equal values still match across documents (joins,
terms aggregations) while the value itself cannot be read back without the key. The key is a
secret: it never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Redaction:
    """Which features to ``drop`` and which to ``hash`` (with ``key``) before shipping.

    A feature may not be in both sets, and hashing needs a non-empty key; both mistakes raise
    ``ValueError`` at construction, naming the feature or the key.
    """

    drop: frozenset[str] = _EMPTY
    hash: frozenset[str] = _EMPTY
    key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        both = sorted(self.drop & self.hash)
        if both:
            raise ValueError(f"features both dropped and hashed: {', '.join(both)}")
        if self.hash and not self.key:
            raise ValueError("hashing features needs a non-empty redaction key")

    @property
    def active(self) -> bool:
        """True when at least one feature is dropped or hashed."""
        return bool(self.drop or self.hash)

    def apply(self, features: Mapping[str, object]) -> dict[str, object]:
        """A copy of ``features`` with dropped names removed and hashed values replaced.

        Missing values (``None``) stay ``None``: absence is not a value worth hiding, and a hash
        of null would make every missing value look like one shared category.
        """
        out: dict[str, object] = {}
        for name, value in features.items():
            if name in self.drop:
                continue
            if name in self.hash and value is not None:
                out[name] = hash_value(self.key, value)
            else:
                out[name] = value
        return out


def hash_value(key: bytes, value: object) -> str:
    """``HMAC-SHA256(key, text)`` as hex: ``text`` is a string's UTF-8, else the compact JSON.

    So a string can be hashed the same way anywhere else from its plain bytes (to join with
    other data), and ``1`` and ``"1"`` hash alike, as they are one category on the wire.
    Object keys are sorted first, so equal objects hash alike.
    """
    data = (
        value.encode()
        if isinstance(value, str)
        else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    )
    return hmac.new(key, data, hashlib.sha256).hexdigest()
