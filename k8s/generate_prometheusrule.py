"""Write k8s/base/prometheusrule.yaml from docker/prometheus/rules.yml.

The service has one rules file, the one Prometheus loads in the compose stack.
Prometheus Operator users get the same groups wrapped in a ``PrometheusRule``;
generating it (instead of copying by hand) keeps the two from drifting apart,
and tests/test_deploy_k8s.py fails when the generated file is out of date.

    .venv/bin/python k8s/generate_prometheusrule.py          # rewrite the file
    .venv/bin/python k8s/generate_prometheusrule.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docker" / "prometheus" / "rules.yml"
OUTPUT = ROOT / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from docker/prometheus/rules.yml by k8s/generate_prometheusrule.py:
# do not edit; change the rules file and run
#   .venv/bin/python k8s/generate_prometheusrule.py
# The same recording and alerting rules as the compose stack's Prometheus. Your
# Prometheus must select this object (see monitoring.yaml for the label
# kube-prometheus-stack wants).
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_text: str) -> str:
    groups = yaml.safe_load(rules_text)["groups"]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "sentiment",
            "namespace": "sentiment",
            "labels": {"app.kubernetes.io/name": "sentiment", "app.kubernetes.io/part-of": "sentiment"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated file is missing or out of date")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != expected:
            sys.stderr.write(f"{OUTPUT.relative_to(ROOT)} is out of date: run .venv/bin/python k8s/generate_prometheusrule.py\n")
            return 1
        return 0
    OUTPUT.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
