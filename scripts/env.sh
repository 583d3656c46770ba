# Sourced by the project's scripts: the settings that point everything at the local stack.
# Every value can be overridden from the environment.

TITUS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TITUS_ROOT
export TITUS_STAGE=${TITUS_STAGE:-local}
export TITUS_EMULATOR_PORT=${TITUS_EMULATOR_PORT:-4566}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:${TITUS_EMULATOR_PORT}}
export AWS_REGION=${AWS_REGION:-us-east-1}
# The emulator accepts any credentials; these keep the SDK from looking further.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
# Outside the clone, so repeated runs (and CI on the same machine) build incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/titus/target}

log() { printf '[%s] %s\n' "${TITUS_LOG_TAG:-titus}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
