"""Strict schema validation of the custom resources under deploy/kustomize
(PodMonitor, PrometheusRule, Certificate), which kubernetes-validate cannot
check: it ships the schemas of Kubernetes' built-in kinds only, and checkov none.

Where the schemas come from: the pinned PyPI packages
cloudcoil-models-prometheus-operator 0.80.1.0 and cloudcoil-models-cert-manager
1.17.1.0 (deploy/validate-requirements.txt) are pydantic models generated from
the upstream CRDs' OpenAPI v3 schemas (prometheus-operator v0.80.1,
monitoring.coreos.com_podmonitors/prometheusrules; cert-manager v1.17.1,
cert-manager.io_certificates). This script turns each model into a JSON Schema
(pydantic's model_json_schema) and validates with jsonschema (Draft 2020-12)
after making it strict: every object with declared properties gets
additionalProperties: false, so an unknown or misspelt field fails, as the API
server's strict field validation (kubectl apply --validate=strict) refuses it.
Nothing is vendored: the schemas are pinned with the packages, offline after the
first pip install.

What that checks: field names at every level, types, required fields, enums,
the CRDs' patterns (durations such as `for: 2m`, `interval`) and numeric bounds.
What it does not: CEL rules (x-kubernetes-validations, e.g. cert-manager's
"at least one of commonName, dnsNames, ..."), formats the generator dropped, and
anything only the operators check at run time (that an issuer exists, that a
rule's PromQL parses: promtool checks the rules' source file). An explicit `null`
for an optional field is refused (stricter than the API server, which drops it).

Usage: crd_schemas.py FILE...   (multi-document YAML; every document must be
one of the kinds above: the built-in kinds go through kubernetes-validate)
Exit 1 with one line per problem.
"""

import sys

import jsonschema
import yaml

KINDS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): ("cloudcoil.models.prometheus_operator.v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("cloudcoil.models.prometheus_operator.v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"): ("cloudcoil.models.cert_manager.v1", "Certificate"),
}


def strict(node):
    """Every object schema with declared properties refuses others. Also moves Go's
    inline flag (?i) of the CRDs' patterns, which Go allows anywhere, to the start,
    where Python's re (jsonschema's `pattern`) wants it."""
    if isinstance(node, dict):
        # An optional field is anyOf [its schema, null] in the models: keep only its
        # schema, so that a wrong value is reported where it is (not as "not valid
        # under any of the given schemas" at the top of the list), and an explicit
        # null, which no manifest here needs, is refused.
        options = node.get("anyOf")
        if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
            node.pop("anyOf")
            node.update(next(o for o in options if o != {"type": "null"}))
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        pattern = node.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern[1:]:
            node["pattern"] = "(?i)" + pattern.replace("(?i)", "")
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


_schemas = {}


def schema(api_version, kind):
    key = (api_version, kind)
    if key not in _schemas:
        module, name = KINDS[key]
        model = getattr(__import__(module, fromlist=[name]), name)
        s = strict(model.model_json_schema(by_alias=True, mode="validation"))
        # The models leave apiVersion and kind open: pin them.
        s["properties"]["apiVersion"] = {"const": api_version}
        s["properties"]["kind"] = {"const": kind}
        s["required"] = sorted(set(s.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        jsonschema.Draft202012Validator.check_schema(s)
        _schemas[key] = jsonschema.Draft202012Validator(s)
    return _schemas[key]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    problems = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path}: {key[1]} {doc.get('metadata', {}).get('name')}"
            if key not in KINDS:
                print(f"{name}: no CRD schema for {key[0]} {key[1]} (built-in kinds go through kubernetes-validate)")
                problems += 1
                continue
            errors = sorted(schema(*key).iter_errors(doc), key=lambda e: list(e.absolute_path))
            for e in errors:
                where = ".".join(str(p) for p in e.absolute_path) or "(top)"
                print(f"{name}: {where}: {e.message}")
            problems += len(errors)
            if not errors:
                print(f"{name}: valid ({key[0]} schema, strict)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
