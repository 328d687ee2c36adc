"""Offline checks of deploy/'s dashboard, alert rules and Kubernetes ConfigMaps
that no off-the-shelf validator does (run by deploy/validate-manifests.sh with
the venv's Python, which has PyYAML), and the ConfigMaps' configurations
exported for `rlsproxy check-config`:

  dashboard  the Grafana JSON parses, its data source is the `datasource`
             variable everywhere, panel ids are unique, every panel has a
             gridPos, and every PromQL expression names only metrics of the
             admin listener's contract; writes the expressions as a rules file
             so that `promtool check rules` parses each one.
  alerts     every expression in the alert rules names only contract metrics;
             every alert has a runbook_url annotation docs/runbook.md#ANCHOR
             whose anchor is the alert's own section, a heading of
             docs/runbook.md (GitHub's anchor of the heading `## AlertName`).
  configmaps the rlsproxy.toml embedded in each ConfigMap parses as TOML and
             uses only keys the proxy knows (config/rlsproxy.example.toml plus
             the admin section), so a typo fails here rather than at start.

Usage: check_observability.py check REPO_ROOT PROMQL_RULES_OUT
Exit 1 with one line per problem.

  check_observability.py export-configs REPO_ROOT OUT_DIR FIXTURE_DIR
writes, for each ConfigMap, OUT_DIR/NAME.toml (its rlsproxy.toml) and
OUT_DIR/NAME.env (KEY=VALUE lines: the RLSPROXY__* variables the manifests set
on the proxy container, and every file-valued key pointed at a fixture in
FIXTURE_DIR), so that `rlsproxy check-config` can validate the configuration
the pods would load.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

# The metrics contract of the admin listener (docs/operations.md, "Metrics and alerts").
COUNTERS = {
    "rlsproxy_transactions_total",
    "rlsproxy_queries_total",
    "rlsproxy_auth_failures_total",
    "rlsproxy_guard_rejections_total",
    "rlsproxy_injection_failures_total",
    "rlsproxy_bytes_received_total",
    "rlsproxy_bytes_sent_total",
    "rlsproxy_upstream_errors_total",
    "rlsproxy_config_reloads_total",
    "rlsproxy_client_errors_total",
    "rlsproxy_cancel_requests_total",
}
GAUGES = {
    "rlsproxy_client_connections",
    "rlsproxy_server_connections",
    "rlsproxy_pool_max_connections",
    "rlsproxy_pool_waiting_clients",
    "rlsproxy_build_info",
    "rlsproxy_process_resident_memory_bytes",
    "rlsproxy_process_open_fds",
}
HISTOGRAMS = {"rlsproxy_pool_wait_seconds", "rlsproxy_transaction_duration_seconds"}
METRICS = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | {"up"}
)
# Keys of the admin listener (not in the example config until it lands there).
ADMIN_KEYS = {("admin", "address"), ("admin", "token_file")}

problems = []


def problem(msg):
    problems.append(msg)


def metric_names(expr):
    """Metric names an expression selects: rlsproxy_* and up, outside strings."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(re.findall(r"\brlsproxy_[a-z_]+\b", unquoted))
    if re.search(r"\bup\s*\{", unquoted):
        names.add("up")
    return names


def check_expr(where, expr):
    names = metric_names(expr)
    if not names:
        problem(f"{where}: expression names no rlsproxy metric: {expr}")
    for name in sorted(names - METRICS):
        problem(f"{where}: {name} is not in the metrics contract")


def check_dashboard(path, rules_out):
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problem(f"{path}: not valid JSON: {e}")
        return
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problem(f"{path}: no {key!r}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_var = variables.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        problem(f"{path}: needs a templating variable 'datasource' of type datasource (prometheus)")
    for name, var in variables.items():
        if var.get("type") == "query" and var.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{path}: variable {name} does not use ${{datasource}}")

    exprs = []
    ids = set()
    panels = list(dash.get("panels", []))
    for panel in panels:
        panels.extend(panel.get("panels", []))  # panels nested in collapsed rows
    for panel in panels:
        where = f"{path.name}: panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problem(f"{where}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            problem(f"{where}: gridPos missing or wider than 24 columns: {grid}")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{where}: datasource is not ${{datasource}}")
        if not panel.get("targets"):
            problem(f"{where}: no targets")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"{where}: target {target.get('refId')} datasource is not ${{datasource}}")
            expr = target.get("expr", "")
            check_expr(where, expr)
            exprs.append((panel.get("title"), target.get("refId"), expr))

    # Grafana's variables replaced by values Prometheus accepts, each expression
    # a recording rule: promtool check rules then parses every one of them.
    rules = []
    for i, (title, ref, expr) in enumerate(exprs):
        concrete = (
            expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        )
        if "$" in concrete:
            problem(f"{path.name}: panel {title!r} {ref}: unknown variable in {expr}")
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    print(f"dashboard: {len(panels)} panels, {len(exprs)} expressions checked against the contract")


RUNBOOK = "docs/runbook.md"


def heading_anchors(path):
    """GitHub's anchors of a Markdown file's headings (outside code blocks)."""
    anchors = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = m.group(1).lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def check_runbook(where, name, annotations, anchors):
    url = annotations.get("runbook_url")
    if not url:
        problem(f"{where}: no runbook_url annotation (a section of {RUNBOOK})")
        return
    m = re.fullmatch(re.escape(RUNBOOK) + r"#([\w-]+)", url)
    if not m:
        problem(f"{where}: runbook_url {url!r} is not {RUNBOOK}#<anchor>")
        return
    if m.group(1) != name.lower():
        problem(f"{where}: runbook_url anchor #{m.group(1)} is not the alert's own section #{name.lower()}")
    if anchors is not None and m.group(1) not in anchors:
        problem(f"{where}: runbook_url anchor #{m.group(1)} matches no heading of {RUNBOOK}")


def check_alerts(path, runbook):
    try:
        anchors = heading_anchors(runbook)
    except OSError as e:
        problem(f"{runbook}: {e}")
        anchors = None
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        problem(f"{path}: not valid YAML: {e}")
        return
    count = 0
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            check_expr(f"{path.name}: {name}", rule.get("expr", ""))
            if "alert" in rule and rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problem(f"{path.name}: {name}: severity label must be critical, warning or info")
            if "alert" in rule:
                check_runbook(f"{path.name}: {name}", name, rule.get("annotations") or {}, anchors)
            count += 1
    print(f"alerts: {count} rules checked against the contract and their runbook sections in {RUNBOOK}")


def known_config_keys(example):
    """section.key pairs of the example config, commented-out keys included."""
    keys = set()
    section = None
    for line in example.read_text().splitlines():
        m = re.match(r"^\s*\[([a-z_]+)\]\s*$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\s*#?\s*([a-z_]+)\s*=", line)
        if m and section:
            keys.add((section, m.group(1)))
    # Secrets may come from files: `password` has `password_file`, and so on.
    keys |= {(section, f"{key}_file") for section, key in keys}
    return keys | ADMIN_KEYS


def check_configmaps(k8s_dir, example):
    known = known_config_keys(example)
    count = 0
    for path in sorted(k8s_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ConfigMap" or "rlsproxy.toml" not in doc.get("data", {}):
                continue
            where = f"{path.name}: ConfigMap {doc['metadata']['name']}"
            try:
                config = tomllib.loads(doc["data"]["rlsproxy.toml"])
            except tomllib.TOMLDecodeError as e:
                problem(f"{where}: rlsproxy.toml is not valid TOML: {e}")
                continue
            for section, values in config.items():
                if not isinstance(values, dict):
                    problem(f"{where}: top-level key {section!r} outside a section")
                    continue
                for key in values:
                    if (section, key) not in known:
                        problem(f"{where}: unknown key {section}.{key}")
            count += 1
    print(f"configmaps: {count} embedded rlsproxy.toml checked against the known keys")


# File-valued keys and the fixture (made by validate-manifests.sh) each points at.
FIXTURES = {
    ("listen", "tls_cert_file"): "tls.crt",
    ("listen", "tls_key_file"): "tls.key",
    ("upstream", "password_file"): "password",
    ("upstream", "sslrootcert"): "ca.crt",
    ("jwt", "secret_file"): "secret",
    ("jwt", "public_key_file"): "jwt.pub.pem",
    ("jwt", "jwks_file"): "jwks.json",
    ("jwt", "jwks_ca_file"): "ca.crt",
    ("jwt", "private_key_file"): "jwt.key.pem",
    ("context", "strict_key_file"): "strict.key",
    ("admin", "token_file"): "admin-token",
}


def proxy_env(docs, configmap):
    """RLSPROXY__* variables of the containers that mount CONFIGMAP."""
    env = {}
    for doc in docs:
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        volumes = {
            v["name"] for v in spec.get("volumes", []) if v.get("configMap", {}).get("name") == configmap
        }
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            if any(m["name"] in volumes for m in container.get("volumeMounts", [])):
                for var in container.get("env", []):
                    if var["name"].startswith("RLSPROXY__") and "value" in var:
                        env[var["name"]] = var["value"]
    return env


def export_configs(root, out_dir, fixture_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "deploy/k8s").glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if not doc or doc.get("kind") != "ConfigMap" or "rlsproxy.toml" not in doc.get("data", {}):
                continue
            name = doc["metadata"]["name"]
            text = doc["data"]["rlsproxy.toml"]
            env = proxy_env(docs, name)
            for section, values in tomllib.loads(text).items():
                for key in values if isinstance(values, dict) else ():
                    if key.endswith("_file") or key == "sslrootcert":
                        fixture = FIXTURES.get((section, key))
                        if fixture is None:
                            problem(f"{path.name}: ConfigMap {name}: no fixture for {section}.{key} (add it to FIXTURES)")
                            continue
                        env[f"RLSPROXY__{section.upper()}__{key.upper()}"] = str(fixture_dir / fixture)
            (out_dir / f"{name}.toml").write_text(text)
            (out_dir / f"{name}.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
            print(f"{name}: {path.name}, {len(env)} variables")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        root = Path(sys.argv[2])
        check_dashboard(root / "deploy/grafana/rlsproxy-dashboard.json", sys.argv[3])
        check_alerts(root / "deploy/prometheus/rlsproxy-alerts.yaml", root / RUNBOOK)
        check_configmaps(root / "deploy/k8s", root / "config/rlsproxy.example.toml")
    elif len(sys.argv) >= 5 and sys.argv[1] == "export-configs":
        export_configs(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        sys.exit(__doc__)
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
