#!/usr/bin/env bash
# Builds the dashboard into ui/dist/ (index.html, app.js, app.css): esbuild bundles src/ with
# preact and htm from node_modules (installed with `npm ci` from the pinned lock file when
# missing). The output is deterministic and kept in the repository, because the API embeds it.
# `build.sh --check` builds into a temporary directory and fails when dist/ differs (CI's
# freshness check).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE"
log() { printf '[ui] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) die "unknown argument ${1@Q}; expected nothing or --check" ;;
esac

command -v node >/dev/null || die "node is not installed; install Node.js 18 or later (Debian: apt-get install nodejs npm)"
# npm ci again when the lock file changed since the last install.
if [ ! -x node_modules/.bin/esbuild ] || ! cmp -s package-lock.json node_modules/.titus-lock; then
    log "installing the pinned npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed"
    cp package-lock.json node_modules/.titus-lock
fi

build() {
    local out=$1
    mkdir -p "$out"
    node_modules/.bin/esbuild src/main.js --bundle --minify --format=iife --target=es2020 \
        --legal-comments=none --charset=utf8 --log-level=warning --outfile="$out/app.js"
    node_modules/.bin/esbuild src/app.css --bundle --minify --target=chrome100,firefox100,safari15 \
        --charset=utf8 --log-level=warning --outfile="$out/app.css"
    cp src/index.html "$out/index.html"
}

if [ "$check" = 1 ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    build "$scratch"
    if ! diff -r "$scratch" dist >/dev/null 2>&1; then
        diff -r --brief "$scratch" dist >&2 || true
        die "ui/dist is not what ui/src builds; run ui/build.sh and commit ui/dist"
    fi
    log "ui/dist is up to date"
    exit 0
fi

rm -rf dist.new
build dist.new
rm -rf dist
mv dist.new dist
log "built ui/dist: $(wc -c <dist/app.js) bytes app.js ($(gzip -9n <dist/app.js | wc -c) gzipped), $(wc -c <dist/app.css) bytes app.css, $(wc -c <dist/index.html) bytes index.html"
