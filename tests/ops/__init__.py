"""Operations: compose, Prometheus rules, Grafana dashboards, checked against a live stack."""
