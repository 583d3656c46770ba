#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io and starts dockerd in the
# background when none does. Safe to run again; does nothing when an engine is already up.
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=docker

# The agent's tests build their image from Debian's static busybox: no registry is reachable.
if ! dpkg -s busybox-static >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing busybox-static for the agent's test image"
    # A fresh machine may have no package lists yet: update once when the first try fails.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; } \
        || die "apt-get install busybox-static failed"
fi

if docker info >/dev/null 2>&1; then
    log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and dockerd is not installed; install docker.io (needs root)"
    log "installing docker.io from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
    hash -r
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "dockerd is installed but not running, and starting it needs root"
    # dockerd keeps env.sh's AWS variables: the local agents' awslogs driver writes tasks' output
    # to the emulator's CloudWatch Logs with them.
    log "starting dockerd (log: /var/log/titus-dockerd.log)"
    nohup dockerd >/var/log/titus-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        exit 0
    fi
    sleep 1
done
tail -n 20 /var/log/titus-dockerd.log >&2 || true
die "dockerd did not answer within 60 s; its log is above"
