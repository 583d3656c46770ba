#!/usr/bin/env bash
# The local AWS emulator: moto's server mode, pinned in requirements.txt and installed into
# localstack/.venv, run through moto_server.py (moto plus Lambda failure injection).
# `emulator.sh start` installs it when missing and starts it on 127.0.0.1:$TITUS_EMULATOR_PORT
# (4566) unless one already answers there; `stop` stops the one it started; `status` says whether
# one answers; `restart` starts it afresh; `reset` empties it; `rss` prints its memory in MiB.
# Safe to run again.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
TITUS_LOG_TAG=emulator

HERE=$TITUS_ROOT/localstack
VENV=$HERE/.venv
RUN=$HERE/.run
# One emulator per port: another port gets its own files, so it never clobbers the default's.
[ "$TITUS_EMULATOR_PORT" = 4566 ] && RUN_NAME=moto || RUN_NAME=moto-$TITUS_EMULATOR_PORT
PIDFILE=$RUN/$RUN_NAME.pid
LOGFILE=$RUN/$RUN_NAME.log
ENDPOINT=http://127.0.0.1:$TITUS_EMULATOR_PORT

http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true; }
is_moto() { [[ "$(http_code "$ENDPOINT/moto-api/config")" == 2?? ]]; }
is_localstack() { [ "$(http_code "$ENDPOINT/_localstack/health")" = 200 ]; }

install_moto() {
    # grep reads all of pip's output (no -q): under pipefail an early exit would fail the pipe.
    if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/pip" freeze 2>/dev/null | grep -xF -f <(grep -v '^#' "$HERE/requirements.txt" | sed 's/\[server\]//') >/dev/null; then
        return
    fi
    log "installing $(grep -v '^#' "$HERE/requirements.txt") into $VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 ships venv separately.
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
        fi
        python3 -m venv "$VENV" || die "cannot create a Python virtualenv at $VENV; install python3-venv"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" >"$RUN/pip.log" 2>&1 \
        || { tail -n 20 "$RUN/pip.log" >&2; die "could not install the emulator from PyPI (log: $RUN/pip.log)"; }
}

start() {
    mkdir -p "$RUN"
    # Installed even when another emulator answers: the test scripts use the venv's boto3.
    install_moto
    if is_moto || is_localstack; then
        log "an emulator already answers at $ENDPOINT; using it"
        return
    fi
    if ss -ltn "sport = :$TITUS_EMULATOR_PORT" 2>/dev/null | grep -q LISTEN; then
        die "port $TITUS_EMULATOR_PORT is taken by something that is not an AWS emulator ($(ss -ltnp "sport = :$TITUS_EMULATOR_PORT" | tail -n +2 | awk '{print $NF}')); stop it or set TITUS_EMULATOR_PORT"
    fi
    log "starting moto on $ENDPOINT (log: $LOGFILE)"
    nohup "$VENV/bin/python" "$HERE/moto_server.py" -H 127.0.0.1 -p "$TITUS_EMULATOR_PORT" >"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
        if is_moto; then
            configure
            log "ready at $ENDPOINT"
            return
        fi
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$LOGFILE" >&2; die "moto exited at start; its log is above"; }
        sleep 0.5
    done
    die "moto did not answer within 60 s (log: $LOGFILE)"
}

# Switched on before anything is created: state machines made before the Step Functions switch
# are not visible after it, and moto's Lambda must not need Docker.
configure() {
    curl -fsS -m 5 -X POST "$ENDPOINT/moto-api/config" -H 'Content-Type: application/json' \
        -d '{"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}' >/dev/null \
        || die "could not configure moto at $ENDPOINT/moto-api/config"
}

stop() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill "$(cat "$PIDFILE")"
        log "stopped moto (pid $(cat "$PIDFILE"))"
    else
        log "no emulator started by this script is running"
    fi
    rm -f "$PIDFILE"
}

status() {
    if is_moto; then echo "moto answers at $ENDPOINT"
    elif is_localstack; then echo "LocalStack answers at $ENDPOINT"
    else echo "no emulator answers at $ENDPOINT"; return 1
    fi
}

# A fresh emulator: the one this script started is stopped and started again (moto frees no
# memory, so this is what bounds it); one started elsewhere is emptied instead.
restart() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        stop
        for _ in $(seq 1 40); do is_moto || break; sleep 0.25; done
        start
    elif is_moto; then
        log "moto at $ENDPOINT was not started here: emptying it instead of restarting it"
        mkdir -p "$RUN"
        install_moto # the test scripts use the venv's boto3
        reset
    else
        start
    fi
}

# The resident memory of the moto this script started, in MiB.
rss() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "unknown"; return; }
    awk '/^VmRSS/ {printf "%d\n", $2 / 1024}' "/proc/$(cat "$PIDFILE")/status"
}

# Empties the emulator's state (moto only), so a test run starts clean.
reset() {
    is_moto || die "reset needs moto at $ENDPOINT"
    curl -fsS -m 10 -X POST "$ENDPOINT/moto-api/reset" >/dev/null
    configure
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    reset) reset ;;
    restart) restart ;;
    rss) rss ;;
    *) die "usage: $0 start|stop|restart|status|reset|rss" ;;
esac
