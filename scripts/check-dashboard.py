#!/usr/bin/env python3
"""Parses every PromQL query of a Grafana dashboard with promtool, Grafana's variables filled in.

Usage: check-dashboard.py PROMTOOL DASHBOARD.json    Exit status 1 if a query does not parse.
"""

import json
import subprocess
import sys

# Grafana's variables, as Prometheus would see them after Grafana's substitution.
VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$ordersystem": ".*"}


def queries(panels):
    for panel in panels:
        yield from queries(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def main():
    promtool, path = sys.argv[1:3]
    dashboard = json.load(open(path))
    failed = 0
    count = 0
    for title, expr in queries(dashboard["panels"]):
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        result = subprocess.run([promtool, "--experimental", "promql", "format", expr],
                                capture_output=True, text=True)
        count += 1
        if result.returncode != 0:
            failed += 1
            print(f"{path}: panel {title!r}: {result.stderr.strip()}", file=sys.stderr)
    print(f"  {count} queries in {path}: {failed} do not parse", file=sys.stderr)
    sys.exit(1 if failed or not count else 0)


if __name__ == "__main__":
    main()
