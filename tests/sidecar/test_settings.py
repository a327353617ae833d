"""Settings: defaults, environment parsing, CLI overrides, all-at-once validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.engine import DEFAULT_LATENCY_BUCKETS
from sidecar.errors import ConfigError
from sidecar.settings import SECRET_MASK, Address, Settings

BASE = {"MODELWATCH_PROFILES": "/profiles/a.json"}
TOKEN = "s3cret"  # noqa: S105 - a made-up token to check masking


def _problems(
    environ: dict[str, str], overrides: dict[str, object] | None = None
) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_sources(environ, overrides)
    return info.value.problems


def test_defaults() -> None:
    """With only a profile set, every other setting takes its documented default."""
    s = Settings.from_sources(BASE)
    assert s.profiles == (Path("/profiles/a.json"),)
    assert s.ingest_addr == Address("127.0.0.1", 8081)
    assert s.metrics_addr == Address("0.0.0.0", 9500)
    assert (s.window_seconds, s.slot_seconds) == (3600.0, 60.0)
    assert s.ingest_token is None
    assert (s.max_body_bytes, s.max_events) == (8 * 1024 * 1024, 10_000)
    assert (s.alpha, s.correction, s.min_window_values) == (0.05, "benjamini-hochberg", 100)
    assert s.latency_buckets == DEFAULT_LATENCY_BUCKETS
    assert s.feedback_capacity == 100_000
    assert (s.log_level, s.log_format) == ("info", "json")


def test_environment_values_are_parsed() -> None:
    """Every MODELWATCH_* key is read from the environment and converted to its type."""
    s = Settings.from_sources(
        {
            "MODELWATCH_PROFILES": "/p/a.json, /p/b.json:/p/c.json",
            "MODELWATCH_INGEST_ADDR": "0.0.0.0:0",
            "MODELWATCH_METRICS_ADDR": "[::1]:9600",
            "MODELWATCH_WINDOW_SECONDS": "600",
            "MODELWATCH_SLOT_SECONDS": "10.5",
            "MODELWATCH_INGEST_TOKEN": TOKEN,
            "MODELWATCH_MAX_BODY_BYTES": "1_048_576",
            "MODELWATCH_MAX_EVENTS": "500",
            "MODELWATCH_ALPHA": "0.01",
            "MODELWATCH_CORRECTION": "Bonferroni",
            "MODELWATCH_MIN_WINDOW_VALUES": "30",
            "MODELWATCH_LATENCY_BUCKETS": "0.005, 0.05,0.5",
            "MODELWATCH_FEEDBACK_CAPACITY": "42",
            "MODELWATCH_LOG_LEVEL": "DEBUG",
            "MODELWATCH_LOG_FORMAT": "console",
        }
    )
    assert s.profiles == (Path("/p/a.json"), Path("/p/b.json"), Path("/p/c.json"))
    assert s.ingest_addr == Address("0.0.0.0", 0)
    assert s.metrics_addr == Address("::1", 9600)
    assert str(s.metrics_addr) == "[::1]:9600"
    assert (s.window_seconds, s.slot_seconds) == (600.0, 10.5)
    assert s.ingest_token == TOKEN
    assert (s.max_body_bytes, s.max_events) == (1_048_576, 500)
    assert (s.alpha, s.correction, s.min_window_values) == (0.01, "bonferroni", 30)
    assert s.latency_buckets == (0.005, 0.05, 0.5)
    assert s.feedback_capacity == 42
    assert (s.log_level, s.log_format) == ("debug", "console")


def test_overrides_win_over_the_environment() -> None:
    """A CLI flag value replaces the environment's; None means the flag was not given."""
    env = {**BASE, "MODELWATCH_WINDOW_SECONDS": "600", "MODELWATCH_ALPHA": "0.01"}
    s = Settings.from_sources(
        env,
        {"window_seconds": "120", "profiles": ["x.json", "y.json"], "alpha": None},
    )
    assert s.window_seconds == 120.0
    assert s.profiles == (Path("x.json"), Path("y.json"))
    assert s.alpha == 0.01


def test_typed_overrides_are_accepted() -> None:
    """Overrides may already be typed (the in-process API), and are validated the same way."""
    s = Settings.from_sources(BASE, {"max_events": 7, "latency_buckets": (0.1, 1.0)})
    assert (s.max_events, s.latency_buckets) == (7, (0.1, 1.0))
    assert _problems(BASE, {"max_events": 0}) == {"--max-events": "must be at least 1, got 0"}


def test_every_bad_key_is_reported_at_once() -> None:
    """One ConfigError names every invalid key with its reason, not just the first."""
    problems = _problems(
        {
            "MODELWATCH_INGEST_ADDR": "localhost",
            "MODELWATCH_METRICS_ADDR": "0.0.0.0:70000",
            "MODELWATCH_WINDOW_SECONDS": "soon",
            "MODELWATCH_MAX_EVENTS": "0",
            "MODELWATCH_ALPHA": "1.5",
            "MODELWATCH_CORRECTION": "holm",
            "MODELWATCH_LATENCY_BUCKETS": "0.1,0.1",
            "MODELWATCH_LOG_FORMAT": "xml",
        }
    )
    assert set(problems) == {
        "MODELWATCH_PROFILES",
        "MODELWATCH_INGEST_ADDR",
        "MODELWATCH_METRICS_ADDR",
        "MODELWATCH_WINDOW_SECONDS",
        "MODELWATCH_MAX_EVENTS",
        "MODELWATCH_ALPHA",
        "MODELWATCH_CORRECTION",
        "MODELWATCH_LATENCY_BUCKETS",
        "MODELWATCH_LOG_FORMAT",
    }
    assert "HOST:PORT" in problems["MODELWATCH_INGEST_ADDR"]
    assert "0..65535" in problems["MODELWATCH_METRICS_ADDR"]
    assert "'soon'" in problems["MODELWATCH_WINDOW_SECONDS"]
    assert "(0, 1)" in problems["MODELWATCH_ALPHA"]
    assert "strictly increasing" in problems["MODELWATCH_LATENCY_BUCKETS"]


def test_message_lists_every_key() -> None:
    """The ConfigError message itself names each bad key, for the one-line start-up error."""
    with pytest.raises(ConfigError) as info:
        Settings.from_sources({**BASE, "MODELWATCH_ALPHA": "x", "MODELWATCH_MAX_EVENTS": "y"})
    assert "MODELWATCH_ALPHA" in str(info.value)
    assert "MODELWATCH_MAX_EVENTS" in str(info.value)


def test_a_bad_flag_is_blamed_on_the_flag() -> None:
    """A bad override is reported under its CLI flag, not under the environment key."""
    problems = _problems({**BASE, "MODELWATCH_ALPHA": "0.05"}, {"alpha": "2"})
    assert set(problems) == {"--alpha"}


def test_unknown_override_is_rejected() -> None:
    """An override for a setting that does not exist is a configuration error, not ignored."""
    assert set(_problems(BASE, {"windw_seconds": "5"})) == {"--windw-seconds"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MODELWATCH_SLOT_SECONDS", "0"),
        ("MODELWATCH_SLOT_SECONDS", "7200"),
        ("MODELWATCH_WINDOW_SECONDS", "nan"),
        ("MODELWATCH_WINDOW_SECONDS", "-1"),
        ("MODELWATCH_MAX_BODY_BYTES", "12"),
        ("MODELWATCH_MIN_WINDOW_VALUES", "1.5"),
        ("MODELWATCH_LATENCY_BUCKETS", ""),
        ("MODELWATCH_LATENCY_BUCKETS", "0.5,0.1"),
        ("MODELWATCH_LATENCY_BUCKETS", "0,1"),
        ("MODELWATCH_LATENCY_BUCKETS", "0.1,inf"),
        ("MODELWATCH_INGEST_ADDR", ":8081"),
        ("MODELWATCH_INGEST_ADDR", "::1:8081"),
        ("MODELWATCH_INGEST_ADDR", "127.0.0.1:http"),
        ("MODELWATCH_INGEST_TOKEN", "two words"),
        ("MODELWATCH_LOG_LEVEL", "verbose"),
        ("MODELWATCH_FEEDBACK_CAPACITY", "0"),
    ],
)
def test_invalid_values_name_their_key(key: str, value: str) -> None:
    """Each out-of-range or malformed value is reported under its own key."""
    assert set(_problems({**BASE, key: value})) == {key}


def test_profiles_are_required() -> None:
    """Without any profile the sidecar has nothing to monitor, which is a configuration error."""
    assert set(_problems({"MODELWATCH_PROFILES": " , "})) == {"MODELWATCH_PROFILES"}
    assert set(_problems({})) == {"MODELWATCH_PROFILES"}


def test_blank_token_means_no_token() -> None:
    """An empty MODELWATCH_INGEST_TOKEN leaves ingest open rather than requiring an empty token."""
    assert Settings.from_sources({**BASE, "MODELWATCH_INGEST_TOKEN": ""}).ingest_token is None


def test_redacted_masks_the_token() -> None:
    """redacted() shows every setting but replaces the token with ***."""
    s = Settings.from_sources({**BASE, "MODELWATCH_INGEST_TOKEN": TOKEN})
    shown = s.redacted()
    assert shown["ingest_token"] == SECRET_MASK
    assert TOKEN not in repr(shown)
    assert shown["ingest_addr"] == "127.0.0.1:8081"
    assert shown["profiles"] == ["/profiles/a.json"]
    assert set(shown) == set(Settings.__dataclass_fields__)


def test_redacted_shows_an_unset_token_as_none() -> None:
    """With no token configured, the redacted view says so instead of showing a mask."""
    assert Settings.from_sources(BASE).redacted()["ingest_token"] is None


def test_too_many_window_slots_name_both_settings_and_the_count() -> None:
    """A window cut into more than 1 000 slots is refused naming both keys and the slot count."""
    problems = _problems(
        {**BASE, "MODELWATCH_SLOT_SECONDS": "0.001", "MODELWATCH_WINDOW_SECONDS": "100000"}
    )
    assert set(problems) == {"MODELWATCH_SLOT_SECONDS"}
    message = problems["MODELWATCH_SLOT_SECONDS"]
    assert "MODELWATCH_WINDOW_SECONDS" in message
    assert "100000000 window slots" in message
    assert "at most 1000" in message


def test_the_slot_cap_blames_the_flags_that_set_it() -> None:
    """When flags set the window and slot, the slot-count problem names the flags."""
    problems = _problems(BASE, {"window_seconds": "3600", "slot_seconds": "1"})
    assert set(problems) == {"--slot-seconds"}
    assert "--window-seconds" in problems["--slot-seconds"]
    assert "3600 window slots" in problems["--slot-seconds"]


def test_exactly_the_slot_cap_is_accepted() -> None:
    """A window of exactly 1 000 slots is still accepted (the cap is inclusive)."""
    s = Settings.from_sources({**BASE, "MODELWATCH_SLOT_SECONDS": "3.6"})
    assert (s.window_seconds, s.slot_seconds) == (3600.0, 3.6)


def test_body_timeout_defaults_to_30_seconds_and_must_be_positive() -> None:
    """MODELWATCH_BODY_TIMEOUT_SECONDS is 30 by default, parsed as seconds, and must be > 0."""
    assert Settings.from_sources(BASE).body_timeout_seconds == 30.0
    assert (
        Settings.from_sources(
            {**BASE, "MODELWATCH_BODY_TIMEOUT_SECONDS": "2.5"}
        ).body_timeout_seconds
        == 2.5
    )
    assert set(_problems({**BASE, "MODELWATCH_BODY_TIMEOUT_SECONDS": "0"})) == {
        "MODELWATCH_BODY_TIMEOUT_SECONDS"
    }


def test_ingest_socket_is_off_by_default_and_when_blank() -> None:
    """No Unix socket unless MODELWATCH_INGEST_SOCKET names one; an empty value means none."""
    assert Settings.from_sources(BASE).ingest_socket is None
    assert Settings.from_sources({**BASE, "MODELWATCH_INGEST_SOCKET": " "}).ingest_socket is None
    assert Settings.from_sources(BASE).redacted()["ingest_socket"] is None


def test_ingest_socket_comes_from_the_environment_or_the_flag() -> None:
    """The socket path is read from the environment, a flag (string or Path) overrides it."""
    env = {**BASE, "MODELWATCH_INGEST_SOCKET": "/var/run/modelwatch/ingest.sock"}
    s = Settings.from_sources(env)
    assert s.ingest_socket == Path("/var/run/modelwatch/ingest.sock")
    assert s.redacted()["ingest_socket"] == "/var/run/modelwatch/ingest.sock"
    assert Settings.from_sources(env, {"ingest_socket": "/run/a.sock"}).ingest_socket == Path(
        "/run/a.sock"
    )
    assert Settings.from_sources(BASE, {"ingest_socket": Path("/run/b.sock")}).ingest_socket == (
        Path("/run/b.sock")
    )


def test_ingest_socket_must_be_an_absolute_path() -> None:
    """A relative socket path is refused under the key or flag that gave it."""
    assert _problems({**BASE, "MODELWATCH_INGEST_SOCKET": "run/ingest.sock"}) == {
        "MODELWATCH_INGEST_SOCKET": "must be an absolute path, got 'run/ingest.sock'"
    }
    assert set(_problems(BASE, {"ingest_socket": "ingest.sock"})) == {"--ingest-socket"}


def test_ingest_socket_path_fits_sun_path() -> None:
    """Up to 107 encoded bytes are accepted; one more (counting UTF-8 bytes) is refused."""
    longest = "/" + "s" * 106
    assert Settings.from_sources({**BASE, "MODELWATCH_INGEST_SOCKET": longest}).ingest_socket == (
        Path(longest)
    )
    accented = "/" + "é" * 53  # 54 characters, 107 bytes
    assert len(accented.encode()) == 107
    accepted = Settings.from_sources({**BASE, "MODELWATCH_INGEST_SOCKET": accented})
    assert accepted.ingest_socket == Path(accented)
    problems = _problems({**BASE, "MODELWATCH_INGEST_SOCKET": accented + "x"})
    assert problems == {
        "MODELWATCH_INGEST_SOCKET": (
            "is 108 bytes long; a Unix socket path may have at most 107 bytes"
        )
    }
