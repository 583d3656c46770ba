#!/usr/bin/env bash
# The deployable artefacts, built for real: every Lambda and the agent in release with cargo lambda
# (installed with zig from PyPI into .tools/venv), for x86_64 unless TITUS_ARCHITECTURE=arm64 (which
# needs `rustup target add aarch64-unknown-linux-gnu`). Then:
#   - each binary's glibc needs are checked against Amazon Linux 2023's (GLIBC_2.34 at most);
#   - each function is zipped as Lambda receives it and the zip checked against the size goal;
#   - for x86_64 only (this machine runs what it builds), each `bootstrap` is started against a
#     Lambda Runtime API stand-in with a recorded event (scripts/artefacts/cases), on a fresh stage
#     of the emulator at AWS_ENDPOINT_URL, and must give the expected answer; the agent must start
#     and print its version.
# Prints a table of sizes and start-to-first-answer times. The binaries land in
# $CARGO_TARGET_DIR/lambda/<binary>/bootstrap, the CDK app's and the Terraform module's layout.
# Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
TITUS_LOG_TAG=artefacts
cd "$TITUS_ROOT"

ARCHITECTURE=${TITUS_ARCHITECTURE:-x86_64}
OUT="$CARGO_TARGET_DIR/lambda"
FUNCTIONS=(titus-api-lambda titus-submit-lambda titus-scheduler-lambda titus-status-lambda
    titus-reconciler-lambda titus-scaler-lambda titus-events-lambda)
AGENT=titus-agent
ZIP_GOAL_BYTES=$((10 * 1024 * 1024))
GLIBC_MAX=2.34

case "$ARCHITECTURE" in
    x86_64) ARCH_FLAG=--x86-64 ;;
    arm64) ARCH_FLAG=--arm64 ;;
    *) die "TITUS_ARCHITECTURE is $ARCHITECTURE; expected x86_64 or arm64" ;;
esac

TOOLS="$TITUS_ROOT/.tools/venv"
if [ ! -x "$TOOLS/bin/cargo-lambda" ] || [ ! -x "$TOOLS/bin/python-zig" ]; then
    log "installing cargo-lambda and zig into $TOOLS"
    [ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet 'cargo-lambda==1.9.2' 'ziglang==0.17.1'
fi
export PATH="$TOOLS/bin:$PATH"

log "building ${FUNCTIONS[*]} $AGENT for $ARCHITECTURE in release (cargo lambda; a first build takes a while)"
bins=()
for bin in "${FUNCTIONS[@]}" "$AGENT"; do bins+=(--bin "$bin"); done
started=$(date +%s)
cargo lambda build --quiet --release "$ARCH_FLAG" --lambda-dir "$OUT" "${bins[@]}"
log "built in $(($(date +%s) - started)) s: $OUT"

log "sizes and glibc needs (goal: each zip at most $((ZIP_GOAL_BYTES / 1024 / 1024)) MB; glibc at most $GLIBC_MAX, Amazon Linux 2023's)"
"$TITUS_ROOT/localstack/.venv/bin/python" - "$OUT" "$ZIP_GOAL_BYTES" "$GLIBC_MAX" "${FUNCTIONS[@]}" -- "$AGENT" <<'EOF'
import os, re, sys, zipfile
out, goal, glibc_max = sys.argv[1], int(sys.argv[2]), tuple(map(int, sys.argv[3].split(".")))
rest = sys.argv[4:]
functions, agent = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
problems = []
def glibc_needed(path):
    data = open(path, "rb").read()
    versions = {tuple(map(int, m.group(1).split(b"."))) for m in re.finditer(rb"GLIBC_([0-9]+(?:\.[0-9]+)+)", data)}
    return max(versions) if versions else None
print(f"  {'binary':<26}{'bootstrap':>12}{'zip':>12}  glibc")
for name in functions + agent:
    bootstrap = os.path.join(out, name, "bootstrap")
    size = os.path.getsize(bootstrap)
    zipped = "-"
    if name in functions:
        zip_path = os.path.join(out, f"{name}.zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, open(bootstrap, "rb").read())
        zipped = os.path.getsize(zip_path)
        if zipped > goal:
            problems.append(f"{zip_path} is {zipped} bytes, over the goal of {goal}")
        zipped = f"{zipped / 1e6:.2f} MB"
    needed = glibc_needed(bootstrap)
    if needed and needed > glibc_max:
        problems.append(f"{bootstrap} needs GLIBC_{'.'.join(map(str, needed))}, newer than Amazon Linux 2023's")
    print(f"  {name:<26}{size / 1e6:>9.2f} MB{zipped:>12}  {'.'.join(map(str, needed)) if needed else 'static'}")
if problems:
    sys.exit("\n".join(problems))
EOF

if [ "$ARCHITECTURE" != x86_64 ]; then
    log "built and zipped for $ARCHITECTURE; this machine runs x86_64 only, so the bootstraps are not started"
    exit 0
fi

"$OUT/$AGENT/bootstrap" --version >/dev/null || die "$OUT/$AGENT/bootstrap --version failed"

# A fresh stage for the stand-in, on the emulator the caller runs (the test command's own).
STAGE=art$(date +%s | tail -c 7)
export TITUS_STAGE=$STAGE
log "provisioning stage $STAGE at $AWS_ENDPOINT_URL for the bootstraps"
cargo run --quiet -p titus-localstack --bin titus-provision -- --stage "$STAGE" >/dev/null
# The recorded events' producer and caller may submit and read for the team the cases use.
"$TITUS_ROOT/localstack/.venv/bin/python" - "$STAGE" <<'EOF'
import json, os, sys, boto3
ssm = boto3.client("ssm", region_name=os.environ["AWS_REGION"])
ssm.put_parameter(Name=f"/titus/{sys.argv[1]}/policy/teams", Type="String", Overwrite=True,
                  Value=json.dumps({"sqs:AIDASTANDINPRODUCER": ["standin@example.com"],
                                    "arn:aws:iam::123456789012:user/standin": ["standin@example.com"]}))
# The events function publishes to the stage's bus (the CDK app and Terraform create it in AWS).
boto3.client("events", region_name=os.environ["AWS_REGION"]).create_event_bus(Name=f"titus-{sys.argv[1]}-events")
EOF
log "starting each bootstrap against the Lambda Runtime API stand-in (scripts/artefacts/lambda_standin.py)"
python3 "$TITUS_ROOT/scripts/artefacts/lambda_standin.py" "$OUT" "$TITUS_ROOT"/scripts/artefacts/cases/*.json
log "ok"
