#!/usr/bin/env bash
# The run command: brings the local stack up on this machine — the AWS emulator, every table,
# queue and parameter provisioned — and says what is ready. Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=local
cd "$TITUS_ROOT"

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"
"$TITUS_ROOT/scripts/ensure-docker.sh"
"$TITUS_ROOT/localstack/emulator.sh" start

log "building (first build takes several minutes; target dir: $CARGO_TARGET_DIR)"
cargo build --quiet --bins
log "provisioning stage $TITUS_STAGE at $AWS_ENDPOINT_URL"
"$CARGO_TARGET_DIR/debug/titus-provision" --stage "$TITUS_STAGE"
log "ready: emulator at $AWS_ENDPOINT_URL, stage $TITUS_STAGE provisioned"
