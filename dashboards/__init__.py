"""Dashboards as code: Grafana dashboards (generated JSON, committed) and Kibana saved objects."""
