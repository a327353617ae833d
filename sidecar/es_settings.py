"""Elasticsearch, document and redaction settings, and the official client built from them.

``EsSettings.from_environ`` reads the ``MODELWATCH_ES_*``, ``MODELWATCH_REDACT_*`` and
downward-API (``MODELWATCH_POD_NAME``, ``MODELWATCH_POD_NAMESPACE``, ``MODELWATCH_NODE_NAME``)
keys once at start-up and raises one ``ConfigError`` naming every bad key. Secrets (API key,
password, redaction key) may come from the variable or from a mounted file named by its
``*_FILE`` twin; they are held in ``Secret`` and never appear in a repr, a log line or an
error message. ``build_client`` turns the settings into an ``elasticsearch.Elasticsearch``
that never retries on its own: the shipper owns retries. Keys are documented in
``docs/elasticsearch.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.documents import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVICE_NAME,
    DocumentBuilder,
    validate_namespace,
)
from sidecar.errors import ConfigError
from sidecar.redaction import Redaction

if TYPE_CHECKING:
    # Imported where a client is built: the package costs about 36 MiB of resident memory,
    # which a sidecar writing to local files should not pay.
    from elasticsearch import Elasticsearch

SECRET_MASK = "***"  # noqa: S105 - the mask shown instead of a secret, not a secret
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0
CLIENT_REQUEST_LOGGER = "elastic_transport.transport"
"""The client's per-request logger; ``build_client`` keeps it to warnings and above."""

URL_KEY = "MODELWATCH_ES_URL"
API_KEY_KEY = "MODELWATCH_ES_API_KEY"
USERNAME_KEY = "MODELWATCH_ES_USERNAME"
PASSWORD_KEY = "MODELWATCH_ES_PASSWORD"  # noqa: S105 - the name of a key, not a password
CA_FILE_KEY = "MODELWATCH_ES_CA_FILE"
VERIFY_CERTS_KEY = "MODELWATCH_ES_VERIFY_CERTS"
TIMEOUT_KEY = "MODELWATCH_ES_REQUEST_TIMEOUT_SECONDS"
NAMESPACE_KEY = "MODELWATCH_ES_NAMESPACE"
REDACT_DROP_KEY = "MODELWATCH_REDACT_DROP"
REDACT_HASH_KEY = "MODELWATCH_REDACT_HASH"
REDACT_KEY_KEY = "MODELWATCH_REDACT_KEY"
KUBERNETES_KEYS = {
    "pod.name": "MODELWATCH_POD_NAME",
    "namespace": "MODELWATCH_POD_NAMESPACE",
    "node.name": "MODELWATCH_NODE_NAME",
}
"""The downward-API variables and the ``kubernetes.*`` field each one fills."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Secret:
    """A secret string: ``reveal()`` gives it; ``repr``, ``str`` and formatting give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; pass it straight to the library that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({SECRET_MASK!r})"

    def __str__(self) -> str:
        return SECRET_MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, slots=True)
class EsSettings:
    """Where and how to ship documents; ``urls`` empty means the local NDJSON file sink."""

    urls: tuple[str, ...] = ()
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    verify_certs: bool = True
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    namespace: str = DEFAULT_NAMESPACE
    kubernetes: Mapping[str, str] = field(default_factory=dict)
    redaction: Redaction = field(default_factory=Redaction)

    @property
    def enabled(self) -> bool:
        """True when an Elasticsearch URL is configured."""
        return bool(self.urls)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        read_text: Callable[[Path], str] = Path.read_text,
    ) -> EsSettings:
        """Settings from ``environ``; raises ``ConfigError`` naming every bad key at once.

        ``read_text`` reads the files named by ``*_FILE`` keys and ``MODELWATCH_ES_CA_FILE``
        is checked to exist; tests pass a fake.
        """
        problems: dict[str, str] = {}
        values: dict[str, Any] = {}
        reader = _Reader(environ, read_text, problems)
        urls = reader.urls()
        if urls:
            values["urls"] = urls
        api_key = reader.secret(API_KEY_KEY)
        username = reader.plain_or_file(USERNAME_KEY)
        password = reader.secret(PASSWORD_KEY)
        if api_key is not None and (username is not None or password is not None):
            problems[API_KEY_KEY] = f"set either the API key or {USERNAME_KEY}/{PASSWORD_KEY}"
        elif (username is None) != (password is None):
            missing = PASSWORD_KEY if password is None else USERNAME_KEY
            problems[missing] = f"is required together with {USERNAME_KEY}/{PASSWORD_KEY}"
        values.update(api_key=api_key, username=username, password=password)
        if (ca_file := reader.existing_file(CA_FILE_KEY)) is not None:
            values["ca_file"] = ca_file
        if (verify := reader.boolean(VERIFY_CERTS_KEY)) is not None:
            values["verify_certs"] = verify
        if (timeout := reader.positive_float(TIMEOUT_KEY)) is not None:
            values["request_timeout_seconds"] = timeout
        if (namespace := reader.namespace()) is not None:
            values["namespace"] = namespace
        values["kubernetes"] = {
            name: value
            for name, key in KUBERNETES_KEYS.items()
            if (value := environ.get(key, "").strip())
        }
        if (redaction := reader.redaction()) is not None:
            values["redaction"] = redaction
        if urls and any(url.startswith("http://") for url in urls):
            tls_keys = [key for key in (CA_FILE_KEY, VERIFY_CERTS_KEY) if environ.get(key)]
            for key in tls_keys:
                problems[key] = f"applies to https URLs only; {URL_KEY} uses http"
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def redacted(self) -> dict[str, object]:
        """The effective settings as JSON-safe values for the start-up log; secrets masked."""
        return {
            "es_urls": list(self.urls),
            "es_api_key": None if self.api_key is None else SECRET_MASK,
            "es_username": self.username,
            "es_password": None if self.password is None else SECRET_MASK,
            "es_ca_file": None if self.ca_file is None else str(self.ca_file),
            "es_verify_certs": self.verify_certs,
            "es_request_timeout_seconds": self.request_timeout_seconds,
            "es_namespace": self.namespace,
            "kubernetes": dict(self.kubernetes),
            "redact_drop": sorted(self.redaction.drop),
            "redact_hash": sorted(self.redaction.hash),
            "redact_key": SECRET_MASK if self.redaction.key else None,
        }


def build_client(settings: EsSettings) -> Elasticsearch:
    """The official client for ``settings.urls``, with no retries of its own.

    Raises ``ConfigError`` when no URL is configured. The client connects lazily: building it
    never touches the network.
    """
    if not settings.urls:
        raise ConfigError({URL_KEY: "is not set; there is no Elasticsearch to connect to"})
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout_seconds,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if settings.api_key is not None:
        key = settings.api_key.reveal()
        # ``id:key`` is the two-part form; anything else is the encoded form Kibana shows.
        key_id, sep, secret = key.partition(":")
        options["api_key"] = (key_id, secret) if sep else key
    elif settings.username is not None and settings.password is not None:
        options["basic_auth"] = (settings.username, settings.password.reveal())
    if settings.urls[0].startswith("https://"):
        options["verify_certs"] = settings.verify_certs
        if not settings.verify_certs:
            options["ssl_show_warn"] = False  # the operator asked for it; logged at start-up
        if settings.ca_file is not None:
            options["ca_certs"] = str(settings.ca_file)
    from elasticsearch import Elasticsearch

    # The client logs every request at info: one line per bulk would flood the sidecar's log,
    # and setup logs its own outcome. Failures still show (the shipper logs each retry episode).
    logging.getLogger(CLIENT_REQUEST_LOGGER).setLevel(logging.WARNING)
    return Elasticsearch(list(settings.urls), **options)


def document_builder(
    settings: EsSettings, *, service_name: str = DEFAULT_SERVICE_NAME
) -> DocumentBuilder:
    """The document builder for ``settings``: namespace, Kubernetes fields, redaction."""
    return DocumentBuilder(
        namespace=settings.namespace,
        service_name=service_name,
        kubernetes=settings.kubernetes,
        redaction=settings.redaction,
    )


class _Reader:
    """Reads and checks single keys, recording each problem under the key to blame."""

    def __init__(
        self,
        environ: Mapping[str, str],
        read_text: Callable[[Path], str],
        problems: dict[str, str],
    ) -> None:
        self._environ = environ
        self._read_text = read_text
        self.problems = problems

    def text(self, key: str) -> str | None:
        value = self._environ.get(key, "").strip()
        return value or None

    def plain_or_file(self, key: str) -> str | None:
        """The value of ``key`` or the content of the file ``key_FILE`` names."""
        file_key = key + "_FILE"
        value = self.text(key)
        path = self.text(file_key)
        if value is not None and path is not None:
            self.problems[key] = f"set either {key} or {file_key}, not both"
            return None
        if path is None:
            return value
        try:
            content = self._read_text(Path(path)).strip()
        except OSError as exc:
            # The OS reason only (e.g. "No such file or directory"): never the file's content.
            self.problems[file_key] = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
            return None
        except UnicodeDecodeError:
            self.problems[file_key] = f"{path} is not UTF-8 text"
            return None
        if not content:
            self.problems[file_key] = f"{path} is empty"
            return None
        return content

    def secret(self, key: str) -> Secret | None:
        value = self.plain_or_file(key)
        return None if value is None else Secret(value)

    def urls(self) -> tuple[str, ...]:
        raw = self.text(URL_KEY)
        if raw is None:
            return ()
        urls: list[str] = []
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            why = _url_problem(part)
            if why is not None:
                self.problems[URL_KEY] = why
                return ()
            urls.append(part.rstrip("/"))
        schemes = {url.split("://", 1)[0] for url in urls}
        if len(schemes) > 1:
            self.problems[URL_KEY] = "all URLs must use the same scheme (http or https)"
            return ()
        return tuple(urls)

    def existing_file(self, key: str) -> Path | None:
        raw = self.text(key)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file():
            self.problems[key] = f"{raw} is not a readable file"
            return None
        return path

    def boolean(self, key: str) -> bool | None:
        raw = self.text(key)
        if raw is None:
            return None
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        self.problems[key] = f"must be true or false, got {raw!r}"
        return None

    def positive_float(self, key: str) -> float | None:
        raw = self.text(key)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.problems[key] = f"must be a number, got {raw!r}"
            return None
        if not math.isfinite(value) or value <= 0:
            self.problems[key] = f"must be a finite number greater than 0, got {raw!r}"
            return None
        return value

    def namespace(self) -> str | None:
        raw = self.text(NAMESPACE_KEY)
        if raw is None:
            return None
        try:
            return validate_namespace(raw)
        except ValueError as exc:
            self.problems[NAMESPACE_KEY] = str(exc)
            return None

    def redaction(self) -> Redaction | None:
        drop = _names(self.text(REDACT_DROP_KEY))
        hashed = _names(self.text(REDACT_HASH_KEY))
        key = self.secret(REDACT_KEY_KEY)
        if not drop and not hashed:
            return None
        both = sorted(drop & hashed)
        if both:
            self.problems[REDACT_HASH_KEY] = (
                f"features also in {REDACT_DROP_KEY}: {', '.join(both)}"
            )
            return None
        if hashed and key is None:
            self.problems[REDACT_KEY_KEY] = f"is required when {REDACT_HASH_KEY} is set"
            return None
        secret = b"" if key is None else key.reveal().encode()
        return Redaction(drop=drop, hash=hashed, key=secret)


def _names(raw: str | None) -> frozenset[str]:
    if raw is None:
        return frozenset()
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not an Elasticsearch URL, or None; never echoes credentials."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return "each URL must look like https://host:9200"
    if parts.username is not None or parts.password is not None:
        # Do not echo the URL: it holds a password.
        return f"URLs must not contain credentials; use {API_KEY_KEY} or {USERNAME_KEY}/…"
    if parts.scheme not in ("http", "https"):
        return f"each URL must start with http:// or https://, got {url!r}"
    if not parts.hostname:
        return f"each URL needs a host, got {url!r}"
    if parts.query or parts.fragment:
        return f"URLs must not have a query or fragment, got {url!r}"
    return None
