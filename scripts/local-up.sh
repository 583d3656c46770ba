#!/usr/bin/env bash
# The run command: the whole system on this machine. Starts Docker and the AWS emulator when they
# are not up, builds, runs `titus local up` (the API on 127.0.0.1:7001, the scheduler loop, status
# ingest, the reconciler and two agents), then submits a demo batch job and a demo service job and
# shows their tasks reaching Started and Finished. The stack then keeps running until Ctrl-C
# (or stops after the demo with TITUS_DEMO_EXIT=1). Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=local
cd "$TITUS_ROOT"

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"
"$TITUS_ROOT/scripts/ensure-docker.sh"
"$TITUS_ROOT/localstack/emulator.sh" start
"$TITUS_ROOT/scripts/demo-image.sh"

log "building (a first build takes several minutes; target dir: $CARGO_TARGET_DIR)"
cargo build --quiet -p titus-cli -p titus-localstack
TITUS="$CARGO_TARGET_DIR/debug/titus"
LOG_DIR="$TITUS_ROOT/localstack/.run"
mkdir -p "$LOG_DIR"

if curl -fsS -m 2 http://127.0.0.1:7001/healthz >/dev/null 2>&1; then
    die "something already answers on 127.0.0.1:7001; is a local stack running? stop it first"
fi
# Tasks' output goes to the emulator's CloudWatch Logs, as in AWS, when Docker's awslogs driver
# reaches it: dockerd needs credentials in its environment (ensure-docker.sh starts it with the
# emulator's). A dockerd started otherwise keeps the output in json-file logs on this host.
if [ -z "${TITUS_LOCAL_TASK_LOGS:-}" ]; then
    if docker run --rm --log-driver awslogs --log-opt "awslogs-endpoint=$AWS_ENDPOINT_URL" \
        --log-opt "awslogs-region=$AWS_REGION" --log-opt "awslogs-group=/titus/$TITUS_STAGE/probe" \
        --log-opt awslogs-create-group=true titus-demo/busybox:latest true >/dev/null 2>&1; then
        export TITUS_LOCAL_TASK_LOGS=cloudwatch
    else
        log "warning: Docker's awslogs driver cannot reach the emulator (dockerd has no AWS credentials in its environment); tasks' output stays in json-file logs on this host"
        export TITUS_LOCAL_TASK_LOGS=docker
    fi
fi
log "starting the local stack (log: $LOG_DIR/stack.log; tasks' output: $TITUS_LOCAL_TASK_LOGS)"
"$TITUS" local up --stage "$TITUS_STAGE" >"$LOG_DIR/stack.log" 2>&1 &
STACK=$!
trap 'kill -INT $STACK 2>/dev/null; wait $STACK 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    curl -fsS -m 2 http://127.0.0.1:7001/healthz >/dev/null 2>&1 && break
    kill -0 $STACK 2>/dev/null || { tail -n 30 "$LOG_DIR/stack.log" >&2; die "the local stack stopped at start; its log is above"; }
    sleep 0.5
done
# The agents register just after the API answers; show them once both have.
for _ in $(seq 1 60); do
    [ "$("$TITUS" agent list -o json | grep -c '"state": "active"' || true)" -ge 2 ] && break
    sleep 0.5
done
"$TITUS" agent list

log "demo: a batch job of 3 tasks"
BATCH=$("$TITUS" job submit --app demo-batch --image titus-demo/busybox:latest --batch 3 \
    -- sh -c 'echo "hello from task $TITUS_TASK_ID"; sleep 2')
"$TITUS" job wait "$BATCH" --timeout-secs 120
"$TITUS" task list --job "$BATCH"
FIRST_TASK=$("$TITUS" task list --job "$BATCH" -o json | grep -m1 -o '"id": "[0-9a-f-]*"' | cut -d'"' -f4)
log "demo: the output of task $FIRST_TASK (titus task logs)"
"$TITUS" task logs "$FIRST_TASK"

log "demo: a service job of 2 tasks"
SERVICE=$("$TITUS" job submit --app demo-service --image titus-demo/busybox:latest --service 1:2:3 \
    -- sh -c 'while true; do sleep 1; done')
for _ in $(seq 1 60); do
    started=$("$TITUS" task list --job "$SERVICE" --state Started -o json | grep -c '"state": "Started"' || true)
    [ "$started" -ge 2 ] && break
    sleep 1
done
"$TITUS" task list --job "$SERVICE"
log "demo: killing the service job"
"$TITUS" job kill "$SERVICE"
"$TITUS" job wait "$SERVICE" --timeout-secs 60 || true
"$TITUS" task list --job "$SERVICE"

if [ "${TITUS_DEMO_EXIT:-0}" = 1 ]; then
    log "demo done; stopping (TITUS_DEMO_EXIT=1)"
    exit 0
fi
log "the local stack runs: dashboard http://127.0.0.1:7001/ui/ and API http://127.0.0.1:7001 (token local-dev-token), metrics http://127.0.0.1:7001/metrics, log $LOG_DIR/stack.log; Ctrl-C stops it"
wait $STACK
