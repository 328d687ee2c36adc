"""Builds deploy/kustomize/monitoring/prometheusrule.yaml, the Prometheus
Operator's PrometheusRule, from deploy/prometheus/rlsproxy-alerts.yaml: the
plain rules file stays the one source of truth (promtool checks and unit-tests
it), and this copy carries the same groups, rule for rule.

Usage: prometheusrule.py RULES_FILE OUT_FILE
Run by `deploy/validate-manifests.sh --update`; validate-manifests.sh builds it
again into a scratch file and fails when the committed one differs.
"""

import sys

import yaml

HEADER = """\
# GENERATED from deploy/prometheus/rlsproxy-alerts.yaml by deploy/lib/prometheusrule.py
# (deploy/validate-manifests.sh --update); do not edit: change the rules there.
# deploy/validate-manifests.sh fails when this file is not current.
"""


class Dumper(yaml.SafeDumper):
    pass


def str_representer(dumper, value):
    # Multi-line strings (the expressions, descriptions) as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, str_representer)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        rules = yaml.safe_load(f)
    if not isinstance(rules, dict) or not rules.get("groups"):
        sys.exit(f"{sys.argv[1]}: no rule groups")
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "rlsproxy", "labels": {"app.kubernetes.io/name": "rlsproxy"}},
        "spec": {"groups": rules["groups"]},
    }
    text = HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000)
    with open(sys.argv[2], "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
