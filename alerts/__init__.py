"""Prometheus recording and alerting rules, their generator, Alertmanager routing and runbooks."""
