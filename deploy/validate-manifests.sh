#!/usr/bin/env bash
# Offline validation of everything under deploy/ that is not Rust: the
# Kubernetes manifests, the Dockerfile, the Prometheus alert rules and the
# Grafana dashboard. Part of deploy/test.sh (CI). Needs no cluster, no Docker
# daemon and no network after the first run (the first run pip-installs the
# pinned tools of deploy/validate-requirements.txt into deploy/.venv).
#
#   deploy/validate-manifests.sh            all checks, then the self-check
#   deploy/validate-manifests.sh --no-self-check
#
# 1. kubernetes-validate --strict against the schemas of Kubernetes 1.33 (the
#    oldest version the manifests support: native sidecars are GA there) and
#    1.37 (the newest the pinned kubernetes-validate ships). Strict: a field
#    the schema does not know (a typo, a field from a newer version) fails.
# 2. checkov on the manifests and on deploy/Dockerfile, with the skip list below;
#    hadolint on deploy/Dockerfile.
# 3. promtool check rules + promtool test rules (unit tests of the alerts).
# 4. deploy/lib/check_observability.py: dashboard structure, every PromQL
#    expression of the dashboard and the alerts against the metrics contract,
#    the dashboard's expressions parsed by promtool, the ConfigMaps' TOML keys;
#    with RLSPROXY_BIN set, each ConfigMap through `rlsproxy check-config`.
# 5. Self-check: broken scratch copies (an unknown field, privileged: true, a
#    RUN cd, a PromQL syntax error, a metric outside the contract, an unknown
#    config key, ...) must each make the matching validator fail, for that
#    reason, so a validator that silently passes everything is caught.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }
. deploy/lib/packages.sh

SELF_CHECK=1
[ "${1:-}" = --no-self-check ] && SELF_CHECK=0

K8S_VERSIONS=(1.33.0 1.37.0)
MANIFESTS=(deploy/k8s/*.yaml)
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
say "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version | tr -d '\n'), checkov $("$VENV/bin/checkov" --version), $("$VENV/bin/hadolint" --version), $(promtool --version 2>&1 | head -n1)"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/validate-manifests.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# --- the validators (each takes its inputs as arguments, so the self-check can
# --- point them at broken copies) ------------------------------------------------

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

observability() {  # ROOT (with deploy/grafana, deploy/prometheus, deploy/k8s, config/)
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

say "Kubernetes schemas ${K8S_VERSIONS[*]} (strict): ${MANIFESTS[*]}"
k8s_schemas "${MANIFESTS[@]}" || die "manifests do not validate against the Kubernetes schemas"

say "checkov: deploy/k8s (skipped: $SKIP)"
checkov_k8s deploy/k8s || die "checkov found problems in deploy/k8s"

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
    mkdir -p "$dir/deploy" "$dir/config"
    cp -r deploy/grafana deploy/prometheus deploy/k8s "$dir/deploy/"
    cp config/rlsproxy.example.toml "$dir/config/"
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

    # Known keys, wrong combination: TLS required of clients with no certificate.
    if [ -n "${RLSPROXY_BIN:-}" ]; then
        tree=$(scratch_tree tls)
        sed -i 's/require_tls = "non-loopback"/require_tls = "always"/' "$tree/deploy/k8s/sidecar.yaml"
        must_fail "require_tls = \"always\" without a certificate" "listen.require_tls" config_check "$tree"
    fi
fi

say "deploy/ manifests, Dockerfile, alerts and dashboard: all checks passed"
