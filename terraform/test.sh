#!/usr/bin/env bash
# The Terraform module's test, offline (a plugin mirror, the local moto emulator, Docker):
#   1. terraform fmt -check, then init (-plugin-dir, no backend) and validate in a copy of the
#      module (a temp dir: no .terraform, lock file or state lands in the tree);
#   2. a plan of the whole module (deploy_compute=true, the emulator's default VPC, the built zips
#      of $CARGO_TARGET_DIR/lambda or placeholders), its resources counted by type and key
#      properties asserted (runtime, IAM auth, throttling, batch item failures, IMDSv2, the event
#      feed's table streams, stream mappings, DLQ, bus and alarms), then compared with the CDK
#      app's template for the same stage (alarms, dashboard, log groups, parameter values);
#   3. apply of the data plane (deploy_compute=false) on a fresh stage tf<digits> at the emulator,
#      then the tables (their streams too), queues and parameters described with boto3 and
#      compared with infra/definitions.json;
#   4. a job on the applied stage: `titus local up` (its provisioning finds the tables and checks
#      them; they must not be recreated), a batch job on the demo image, every task Finished with
#      exit code 0, then the stack stopped and its containers and agent queues removed;
#   5. terraform destroy, and nothing of the stage left.
# Uses the emulator at $AWS_ENDPOINT_URL when set (the test command's), else starts one on port
# 4610 and stops it at the end. Without terraform it says so and skips. Safe to run again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
say() { printf '[terraform] %s\n' "$*" >&2; }

PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
PROVIDER_VERSION=5.100.0
if ! command -v terraform >/dev/null 2>&1; then
    say "SKIPPED: terraform is not on PATH. To run this test install Terraform >= 1.11 and the AWS"
    say "provider hashicorp/aws $PROVIDER_VERSION in a plugin mirror (TF_PLUGIN_DIR, default /opt/tf-plugins;"
    say "'terraform providers mirror DIR' in terraform/ fills one, once, online)."
    exit 0
fi
if [ ! -d "$PLUGIN_DIR/registry.terraform.io/hashicorp/aws/$PROVIDER_VERSION" ]; then
    say "SKIPPED: no hashicorp/aws $PROVIDER_VERSION in the plugin mirror $PLUGIN_DIR (set TF_PLUGIN_DIR;"
    say "'terraform providers mirror $PLUGIN_DIR' in terraform/ fills it, once, online)."
    exit 0
fi

# The caller's emulator, or one of our own on 4610.
OWN_EMULATOR=0
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
    export TITUS_EMULATOR_PORT=${TITUS_TF_EMULATOR_PORT:-4610}
    export AWS_ENDPOINT_URL=http://127.0.0.1:$TITUS_EMULATOR_PORT
    if ! curl -fsS -m 3 -o /dev/null "$AWS_ENDPOINT_URL/moto-api/config" 2>/dev/null; then OWN_EMULATOR=1; fi
fi
# shellcheck source=../scripts/env.sh
source "$ROOT/scripts/env.sh"
PY=$ROOT/localstack/.venv/bin/python
TITUS="$CARGO_TARGET_DIR/debug/titus"
FUNCTIONS=(titus-api-lambda titus-submit-lambda titus-scheduler-lambda titus-status-lambda
    titus-reconciler-lambda titus-scaler-lambda titus-events-lambda)
export TF_IN_AUTOMATION=1 TF_INPUT=0

STARTED=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/titus-terraform.XXXXXX")
STAGE=tf$(date +%s | tail -c 7)$((RANDOM % 10))
STACK_PID=
APPLIED=0
DATA_VARS=()
step() { say "$* (at $(($(date +%s) - STARTED)) s)"; }
tf() { terraform -chdir="$WORK" "$@" -no-color; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$STACK_PID" ]; then
        kill -INT "$STACK_PID" 2>/dev/null && wait "$STACK_PID" 2>/dev/null
        docker ps -aq --filter "label=titus.agent.id=$STAGE-agent-1" | xargs -r docker rm -f >/dev/null
        "$PY" "$HERE/test/check.py" cleanup "$STAGE"
    fi
    if [ "$APPLIED" = 1 ]; then
        say "cleaning up: terraform destroy of stage $STAGE"
        tf destroy -auto-approve "${DATA_VARS[@]}" >"$WORK/destroy-on-exit.log" 2>&1 \
            || say "terraform destroy failed; its log: $WORK/destroy-on-exit.log"
    fi
    if [ "$OWN_EMULATOR" = 1 ]; then "$ROOT/localstack/emulator.sh" stop; fi
    if [ "$rc" = 0 ]; then rm -rf "$WORK"; else say "FAILED; the work directory is kept: $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT

# A copy of the module, so that init's .terraform, the lock file and the state stay out of the
# tree; an empty CLI configuration, so nothing is fetched from a registry.
cp "$HERE"/*.tf "$WORK/"
: >"$WORK/terraformrc"
export TF_CLI_CONFIG_FILE=$WORK/terraformrc

step "fmt: terraform fmt -check -recursive terraform/"
terraform fmt -check -recursive -diff "$HERE" || { say "not formatted: run 'terraform fmt -recursive terraform/'"; exit 1; }

step "init (plugin mirror $PLUGIN_DIR, no backend) and validate"
tf init -backend=false -plugin-dir="$PLUGIN_DIR" >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; exit 1; }
tf validate
# The variables' validations refuse what the CDK app refuses.
for bad in "architecture=sparc:must be arm64 or x86_64" "stage=Bad_Stage:1 to 16 lowercase"; do
    if tf plan -var "${bad%%:*}" -var emulator_endpoint=http://127.0.0.1:9 >"$WORK/refused.log" 2>&1 \
        || ! tr -s ' \n' ' ' <"$WORK/refused.log" | grep -q "${bad#*:}"; then
        cat "$WORK/refused.log" >&2
        say "-var ${bad%%:*} was not refused with '${bad#*:}'"
        exit 1
    fi
done
say "  -var architecture=sparc and -var stage=Bad_Stage are refused"

if [ "$OWN_EMULATOR" = 1 ]; then
    "$ROOT/localstack/emulator.sh" start
else
    curl -fsS -m 5 -o /dev/null "$AWS_ENDPOINT_URL/moto-api/config" \
        || { say "no moto answers at AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"; exit 1; }
    [ -x "$PY" ] || "$ROOT/localstack/emulator.sh" start # installs the venv (boto3), uses the running one
fi
COMMON=(-var "stage=$STAGE" -var "emulator_endpoint=$AWS_ENDPOINT_URL" -var "region=$AWS_REGION" -var "titus_root=$ROOT")

step "plan of the whole module (deploy_compute=true) against the emulator"
ASSETS=${TITUS_ASSET_DIR:-$CARGO_TARGET_DIR/lambda}
missing=0
for bin in "${FUNCTIONS[@]}"; do [ -f "$ASSETS/$bin.zip" ] || missing=1; done
[ -f "$ASSETS/titus-agent/bootstrap" ] || missing=1
if [ "$missing" = 1 ]; then
    say "  the built zips are not all in $ASSETS (scripts/artefacts.sh): planning with placeholders"
    ASSETS=$WORK/placeholder-assets
    mkdir -p "$ASSETS/titus-agent"
    printf '#!/bin/sh\nexit 1\n' >"$ASSETS/titus-agent/bootstrap"
    for bin in "${FUNCTIONS[@]}"; do
        "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1], "w").writestr("bootstrap", "#!/bin/sh\nexit 1\n")' "$ASSETS/$bin.zip"
    done
else
    say "  with the built zips of $ASSETS"
fi
NETWORK=$("$PY" -c '
import json, os, boto3
ec2 = boto3.client("ec2", region_name=os.environ["AWS_REGION"])
vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
print(vpc, json.dumps(subnets).replace(" ", ""))
')
read -r VPC SUBNETS <<<"$NETWORK"
tf plan -out="$WORK/full.tfplan" "${COMMON[@]}" -var deploy_compute=true -var enable_vpc_endpoints=true \
    -var "asset_dir=$ASSETS" -var "vpc_id=$VPC" -var "subnet_ids=$SUBNETS" -var agent_ami=ami-0123456789abcdef0 \
    -var alarm_email=alarms@example.com >"$WORK/plan.log" 2>&1 || { cat "$WORK/plan.log" >&2; exit 1; }
tf show -json "$WORK/full.tfplan" >"$WORK/full.json"
"$PY" "$HERE/test/check.py" plan "$WORK/full.json"

step "parity with the CDK app: its template for stage $STAGE, synthesized offline"
if [ -x "$ROOT/infra/node_modules/.bin/cdk" ]; then
    (cd "$ROOT/infra" && npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
        -c "titus:stage=$STAGE" -c titus:placeholderAssets=true -c "titus:assetDir=$WORK/no-binaries" \
        -o "$WORK/cdk.out") >"$WORK/synth.log" 2>&1 || { tail -n 30 "$WORK/synth.log" >&2; exit 1; }
    "$PY" "$HERE/test/check.py" parity "$WORK/full.json" "$WORK/cdk.out/Titus-$STAGE.template.json"
else
    say "  SKIPPED: infra/node_modules has no cdk; infra/test.sh installs it (npm ci)"
fi

# The data plane, with the local stack's tokens (what `titus local up` would write on a fresh
# stage), so that the CLI can call the API of the stack run on it below.
cat >"$WORK/local.tfvars.json" <<'JSON'
{
  "parameters": {
    "/api/identities": "{\"local-dev-token\":\"dev@titus.local\",\"local-admin-token\":\"admin@titus.local\"}",
    "/api/admins": "[\"admin@titus.local\"]",
    "/policy/teams": "{\"dev@titus.local\":[\"*\"],\"sqs:*\":[\"*\"]}"
  }
}
JSON
DATA_VARS=("${COMMON[@]}" -var deploy_compute=false -var retain_data=false -var-file="$WORK/local.tfvars.json")
step "apply of the data plane (deploy_compute=false): stage $STAGE at $AWS_ENDPOINT_URL"
APPLIED=1
t0=$(date +%s)
tf apply -auto-approve "${DATA_VARS[@]}" >"$WORK/apply.log" 2>&1 || { tail -n 40 "$WORK/apply.log" >&2; exit 1; }
say "  $(grep -E '^Apply complete' "$WORK/apply.log") ($(($(date +%s) - t0)) s)"
"$PY" "$HERE/test/check.py" applied "$STAGE" "$ROOT/infra/definitions.json" "$WORK/tables-before.json"

step "a job on the applied stage: titus local up --stage $STAGE"
"$ROOT/scripts/ensure-docker.sh"
"$ROOT/scripts/demo-image.sh"
(cd "$ROOT" && cargo build --quiet -p titus-cli)
LISTEN=127.0.0.1:${TITUS_TF_API_PORT:-7011}
if curl -fsS -m 2 "http://$LISTEN/healthz" >/dev/null 2>&1; then
    say "something already answers on $LISTEN; stop it or set TITUS_TF_API_PORT"
    exit 1
fi
"$TITUS" local up --stage "$STAGE" --listen "$LISTEN" --agents 1 >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
for _ in $(seq 1 120); do
    curl -fsS -m 2 "http://$LISTEN/healthz" >/dev/null 2>&1 && break
    kill -0 "$STACK_PID" 2>/dev/null || { tail -n 30 "$WORK/stack.log" >&2; say "the local stack stopped at start"; exit 1; }
    sleep 0.5
done
export TITUS_URL=http://$LISTEN TITUS_TOKEN=local-dev-token
for _ in $(seq 1 60); do
    [ "$("$TITUS" agent list -o json | grep -c '"state": "active"' || true)" -ge 1 ] && break
    sleep 0.5
done
"$PY" "$HERE/test/check.py" unchanged "$STAGE" "$WORK/tables-before.json"
JOB=$("$TITUS" job submit --app tf-check --image titus-demo/busybox:latest --batch 2 \
    -- sh -c 'echo "hello from $TITUS_TASK_ID on a Terraform-made stage"')
say "  submitted batch job $JOB (2 tasks)"
"$TITUS" job wait "$JOB" --timeout-secs 180 || { tail -n 30 "$WORK/stack.log" >&2; exit 1; }
"$TITUS" task list --job "$JOB"
"$TITUS" task list --job "$JOB" -o json >"$WORK/tasks.json"
"$PY" "$HERE/test/check.py" tasks "$JOB" "$WORK/tasks.json"
"$PY" "$HERE/test/check.py" unchanged "$STAGE" "$WORK/tables-before.json"

step "stopping the stack, removing its containers and agent queues"
kill -INT "$STACK_PID"
wait "$STACK_PID" || true
left=$(docker ps -aq --filter "label=titus.agent.id=$STAGE-agent-1")
if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    docker rm -f $left >/dev/null
fi
say "  removed $(printf '%s' "$left" | grep -c . || true) container(s)"
"$PY" "$HERE/test/check.py" cleanup "$STAGE"
STACK_PID=

# What the stack's own provisioning changed: on moto, its SetQueueAttributes drops a queue's
# Policy (real SQS keeps attributes a call does not name), and moto re-spaces redrive policies.
# Shown, then converged with a second apply, so that destroy removes every resource applied.
step "drift after the run (terraform plan), converged by a second apply"
set +e
tf plan -detailed-exitcode "${DATA_VARS[@]}" >"$WORK/drift.log" 2>&1
drift=$?
set -e
case "$drift" in
    0) say "  no drift" ;;
    2) grep -E '^  # .* (will|must) be' "$WORK/drift.log" | sed 's/^  # /  drift: /' >&2 || true ;;
    *) tail -n 40 "$WORK/drift.log" >&2; exit 1 ;;
esac
tf apply -auto-approve "${DATA_VARS[@]}" >"$WORK/apply-again.log" 2>&1 || { tail -n 40 "$WORK/apply-again.log" >&2; exit 1; }
say "  $(grep -E '^Apply complete' "$WORK/apply-again.log")"
total=$(terraform -chdir="$WORK" state list | grep -vc '^data\.')

step "terraform destroy"
t0=$(date +%s)
tf destroy -auto-approve "${DATA_VARS[@]}" >"$WORK/destroy.log" 2>&1 || { tail -n 40 "$WORK/destroy.log" >&2; exit 1; }
APPLIED=0
say "  $(grep -E '^Destroy complete' "$WORK/destroy.log") ($(($(date +%s) - t0)) s)"
grep -q "^Destroy complete! Resources: $total destroyed" "$WORK/destroy.log" \
    || { say "destroy did not remove all $total resources of the state"; exit 1; }
"$PY" "$HERE/test/check.py" gone "$STAGE"

step "ok"
