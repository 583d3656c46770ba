#!/usr/bin/env bash
# Builds the demo image `titus-demo/busybox:latest` locally (no registry is needed): an empty
# image holding Debian's statically linked busybox. Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=demo-image

IMAGE=${TITUS_DEMO_IMAGE:-titus-demo/busybox:latest}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "busybox-static is needed to build $IMAGE; install it (needs root)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; } \
        || die "apt-get install busybox-static failed"
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp /bin/busybox "$context/busybox"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["/bin/sh"]
DOCKERFILE
docker build -q -t "$IMAGE" "$context" >/dev/null 2>&1 || die "docker build of $IMAGE failed"
log "built $IMAGE"
