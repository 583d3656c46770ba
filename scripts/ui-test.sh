#!/usr/bin/env bash
# The dashboard's browser test: builds the dashboard and the `titus` binary (which embeds it),
# starts a local stack on a stage and port of its own against the emulator at $AWS_ENDPOINT_URL
# (it starts none: one must answer), and runs ui/tests/dashboard.mjs in headless Chromium
# against it. Installs Chromium (Debian's package) and the dashboard's npm packages when missing.
# Always stops the stack and removes its containers. Screenshots go to
# localstack/.run/ui-screenshots/; with TITUS_UI_DOCS_SCREENSHOT=docs/dashboard.png the job page's also there (the README's).
#
# TITUS_UI_SKIP_BUILD=1 uses the built binary as it is (when the tree does not build right now);
# TITUS_UI_PORT picks the API's port (default: a free one).
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=ui-test
cd "$TITUS_ROOT"
began=$(date +%s)

http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true; }
if [[ "$(http_code "$AWS_ENDPOINT_URL/moto-api/config")" != 2?? ]] && [ "$(http_code "$AWS_ENDPOINT_URL/_localstack/health")" != 200 ]; then
    die "no AWS emulator answers at $AWS_ENDPOINT_URL; start one (localstack/emulator.sh start, with TITUS_EMULATOR_PORT set) or point AWS_ENDPOINT_URL at it"
fi

CHROMIUM=${TITUS_UI_CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
    [ "$(id -u)" = 0 ] || die "Chromium is needed; install Debian's chromium package (needs root) or set TITUS_UI_CHROMIUM"
    log "installing chromium from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } \
        || die "apt-get install chromium failed"
    CHROMIUM=$(command -v chromium) || die "chromium installed but not on PATH"
fi
command -v node >/dev/null || die "node is not installed; install Node.js 18 or later (Debian: apt-get install nodejs npm)"

# The dashboard (npm ci when its packages are missing; the output is deterministic, so this
# changes ui/dist only when ui/src changed) and the binary that embeds it.
ui/build.sh
TITUS="$CARGO_TARGET_DIR/debug/titus"
if [ "${TITUS_UI_SKIP_BUILD:-0}" = 1 ] && [ -x "$TITUS" ]; then
    log "using $TITUS as built (TITUS_UI_SKIP_BUILD=1)"
else
    log "building titus (incremental in $CARGO_TARGET_DIR)"
    cargo build --quiet -p titus-cli || die "cargo build -p titus-cli failed"
fi
"$TITUS_ROOT/scripts/ensure-docker.sh"
"$TITUS_ROOT/scripts/demo-image.sh"

STAGE=uitest-$$
PORT=${TITUS_UI_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT
RUN_DIR=$TITUS_ROOT/localstack/.run
SHOTS=$RUN_DIR/ui-screenshots
LOG=$RUN_DIR/ui-test-stack.log
mkdir -p "$SHOTS"
rm -f "$SHOTS"/*.png

STACK=
stop_stack() {
    if [ -n "$STACK" ] && kill -0 "$STACK" 2>/dev/null; then
        kill -INT "$STACK" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$STACK" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$STACK" 2>/dev/null || true
        wait "$STACK" 2>/dev/null || true
    fi
    # The stack leaves its agents' containers running on Ctrl-C (a restart re-adopts them);
    # this stage is gone for good, so they go too.
    local containers
    containers=$(for n in 1 2; do docker ps -aq --filter "label=titus.agent.id=$STAGE-agent-$n"; done | sort -u)
    if [ -n "$containers" ]; then
        # shellcheck disable=SC2086
        docker rm -f $containers >/dev/null 2>&1 || true
    fi
    log "stopped the stack of stage $STAGE (log: $LOG) after $(($(date +%s) - began)) s"
}
trap stop_stack EXIT

if curl -fsS -m 2 "$URL/healthz" >/dev/null 2>&1; then
    die "something already answers on $URL; set TITUS_UI_PORT to a free port"
fi
log "starting a local stack: stage $STAGE, API $URL (log: $LOG)"
"$TITUS" local up --stage "$STAGE" --listen "127.0.0.1:$PORT" --url "$URL" >"$LOG" 2>&1 &
STACK=$!
for n in $(seq 1 240); do
    curl -fsS -m 2 "$URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$STACK" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "the local stack stopped at start; its log is above"; }
    [ "$n" = 240 ] && { tail -n 30 "$LOG" >&2; die "the API did not answer $URL/healthz within 120 s; the log is above"; }
    sleep 0.5
done
for n in $(seq 1 120); do
    active=$(curl -fsS -m 5 -H 'authorization: Bearer local-dev-token' "$URL/api/v3/agents" 2>/dev/null | grep -o '"state":"active"' | wc -l || true)
    [ "$active" -ge 2 ] && break
    [ "$n" = 120 ] && { tail -n 30 "$LOG" >&2; die "the stack's 2 agents did not register within 60 s; the log is above"; }
    sleep 0.5
done
log "the stack answers with 2 active agents after $(($(date +%s) - began)) s; running the browser test"

# The stack's second identity, its admin, creates a job the page's identity (dev, no admin) may
# not kill: the 403 case.
TITUS_UI_URL=$URL TITUS_UI_TOKEN=local-dev-token TITUS_UI_OTHER_TOKEN=local-admin-token \
    TITUS_UI_CHROMIUM=$CHROMIUM TITUS_UI_SCREENSHOTS=$SHOTS TITUS_UI_DOCS_SCREENSHOT=${TITUS_UI_DOCS_SCREENSHOT:-} \
    TITUS_UI_RUN=$$ node ui/tests/dashboard.mjs \
    || { log "the stack's log: $LOG"; die "the dashboard's browser test failed (screenshots: $SHOTS)"; }
log "passed in $(($(date +%s) - began)) s; screenshots in $SHOTS"
