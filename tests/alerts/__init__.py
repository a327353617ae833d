"""Tests of the Prometheus rules, their generator and their promtool unit tests."""
