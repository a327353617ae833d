"""Integration tests: the product's processes with real Prometheus and Alertmanager binaries."""
