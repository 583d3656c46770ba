#!/usr/bin/env bash
# The CDK app's tests: type-check, synthesize offline (with the built binaries in $TITUS_ASSET_DIR,
# else placeholders for them) with assertions and cdk-nag, compare the template's tables and
# queues with the Rust definitions, and cfn-lint the template and the one with private agents.
# Installs what is missing (npm ci; cfn-lint into localstack/.venv). Safe to run again.
# `infra/test.sh --update-definitions` rewrites definitions.json after the Rust definitions changed.
set -euo pipefail
INFRA=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$INFRA/.." && pwd)
# The project's settings (the cargo target directory among them).
source "$ROOT/scripts/env.sh"
log() { printf '[infra] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
cd "$INFRA"

if [ "${1:-}" = "--update-definitions" ]; then
    log "writing definitions.json from titus-provision --print-definitions"
    (cd "$ROOT" && cargo run --quiet -p titus-localstack --bin titus-provision -- \
        --print-definitions --stage local) > "$INFRA/definitions.json.new"
    mv "$INFRA/definitions.json.new" "$INFRA/definitions.json"
    exit 0
fi

command -v npm >/dev/null || die "npm is not installed; install Node.js 20 or later"
# npm ci again only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.titus-installed-lock; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.titus-installed-lock
fi

VENV="$ROOT/localstack/.venv"
if [ ! -x "$VENV/bin/cfn-lint" ]; then
    log "installing cfn-lint into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet 'cfn-lint>=1,<2'
fi

# The Rust definitions for the test stage, to compare with the checked-in definitions.json.
export TITUS_RUST_DEFINITIONS="$INFRA/cdk.out/rust-definitions-ci.json"
mkdir -p "$INFRA/cdk.out"
if command -v cargo >/dev/null; then
    log "titus-provision --print-definitions"
    (cd "$ROOT" && cargo run --quiet -p titus-localstack --bin titus-provision -- \
        --print-definitions --stage ci) > "$TITUS_RUST_DEFINITIONS"
else
    die "cargo is not installed; it is needed to compare definitions.json with the Rust code"
fi

log "type-check"
npx --no-install tsc --noEmit

log "tests (synth, assertions, cdk-nag, definitions)"
npm test --silent

rm -f cdk.out/*.template.json
if [ -n "${TITUS_ASSET_DIR:-}" ]; then
    # The binaries scripts/artefacts.sh built (x86_64, this machine's): no placeholder allowed.
    log "cdk synth (offline, x86_64, the built binaries in $TITUS_ASSET_DIR) and cfn-lint"
    npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
        -c titus:stage=ci -c titus:architecture=x86_64 \
        -c "titus:assetDir=$TITUS_ASSET_DIR" -o cdk.out >/dev/null
    grep -q 'titus:placeholder-asset' cdk.out/manifest.json &&
        die "the synthesized stack uses a placeholder binary although $TITUS_ASSET_DIR was given"
else
    log "cdk synth (offline, placeholder binaries: set TITUS_ASSET_DIR to use built ones) and cfn-lint"
    npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
        -c titus:stage=ci -c titus:placeholderAssets=true \
        -c "titus:assetDir=$INFRA/cdk.out/no-binaries" -o cdk.out >/dev/null
fi
"$VENV/bin/cfn-lint" cdk.out/*.template.json

# The options that change the agents' network and image, linted too (placeholders: lint only).
log "cdk synth with private agents (titus:vpcEndpoints, titus:privateSubnets, titus:agentAmi) and cfn-lint"
rm -rf cdk.out/private
npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
    -c titus:stage=ci -c titus:placeholderAssets=true \
    -c "titus:assetDir=$INFRA/cdk.out/no-binaries" \
    -c titus:vpcEndpoints=true -c titus:privateSubnets=true -c titus:agentAmi=ami-0123456789abcdef0 \
    -o cdk.out/private >/dev/null
"$VENV/bin/cfn-lint" cdk.out/private/*.template.json
log "ok"
