#!/usr/bin/env bash
# The test command: every test of the project, against the local AWS emulator and a real Docker
# engine, both started here when they are not already up, then the deployable artefacts built for
# real and the infrastructure code (CDK, Terraform) checked with them. Safe to run again.
# TITUS_QUICK=1 skips the release build: the CDK app is then synthesized with placeholder binaries.
set -euo pipefail
STARTED=$(date +%s)
# The tests get an emulator of their own (port 4599 unless TITUS_TEST_EMULATOR_PORT says
# otherwise), started afresh for each run and stopped at its end: moto keeps everything in memory
# and frees nothing, so one run bounds what it holds. The local stack's emulator (4566) is left
# alone.
export TITUS_EMULATOR_PORT=${TITUS_TEST_EMULATOR_PORT:-4599}
export AWS_ENDPOINT_URL=http://127.0.0.1:$TITUS_EMULATOR_PORT
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=test
cd "$TITUS_ROOT"

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"
"$TITUS_ROOT/scripts/ensure-docker.sh"
"$TITUS_ROOT/localstack/emulator.sh" restart
emulator_done() {
    log "the test emulator held $("$TITUS_ROOT/localstack/emulator.sh" rss) MiB at the end of the run"
    "$TITUS_ROOT/localstack/emulator.sh" stop
}
trap emulator_done EXIT

log "format and lint"
cargo fmt --all --check || die "code is not formatted: run 'cargo fmt --all'"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "tests (target dir: $CARGO_TARGET_DIR)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --failure-output final
else
    cargo test --workspace --no-fail-fast
fi

log "API fuzzing: schemathesis against the local server, from the OpenAPI document"
"$TITUS_ROOT/functions/api/tests/schemathesis.sh"

log "the web dashboard: ui/dist is what ui/src builds, and a browser test in headless Chromium against a local stack"
"$TITUS_ROOT/ui/build.sh" --check
"$TITUS_ROOT/scripts/ui-test.sh"

if [ "${TITUS_QUICK:-0}" = 1 ]; then
    log "quick mode (TITUS_QUICK=1): no release build; the CDK app is synthesized with placeholders"
    unset TITUS_ASSET_DIR
else
    log "deployable artefacts: release build, sizes, each bootstrap against a Lambda Runtime API stand-in"
    "$TITUS_ROOT/scripts/artefacts.sh"
    export TITUS_ASSET_DIR="$CARGO_TARGET_DIR/lambda"
fi

log "infrastructure: the CDK app (offline synth, assertions, cdk-nag, definitions, cfn-lint)"
"$TITUS_ROOT/infra/test.sh"

log "infrastructure: the Terraform module (fmt, validate, plan, apply of the data plane on the emulator, a job on it, destroy)"
"$TITUS_ROOT/terraform/test.sh"

log "all tests passed in $(($(date +%s) - STARTED)) s"
