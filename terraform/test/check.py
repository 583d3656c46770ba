"""What terraform/test.sh checks with boto3 against the emulator (and in a plan's JSON).

  check.py plan PLAN_JSON                      the full module's plan: resources and key properties
  check.py parity PLAN_JSON CDK_TEMPLATE       the plan against the CDK app's template for the same
                                               stage: alarms, dashboard, log groups, parameters
  check.py applied STAGE DEFINITIONS OUT_JSON  the applied data plane against definitions.json;
                                               writes the tables' creation times to OUT_JSON
  check.py unchanged STAGE BEFORE_JSON         the tables are the ones Terraform made (not recreated)
  check.py tasks JOB_ID TASKS_JSON             every task of the job Finished normally with exit 0
  check.py cleanup STAGE                       deletes the agents' run-time queues (not Terraform's)
  check.py gone STAGE                          nothing of the stage is left in the emulator
"""

import collections
import json
import os
import sys

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def done(what):
    if failures:
        for f in failures:
            print(f"  FAIL {f}", file=sys.stderr)
        sys.exit(f"{what}: {len(failures)} problem(s)")
    print(f"  ok: {what}", file=sys.stderr)


def clients():
    import boto3

    region = os.environ.get("AWS_REGION", "us-east-1")
    return {name: boto3.client(name, region_name=region) for name in ("dynamodb", "sqs", "ssm")}


def stage_tables(c, stage):
    """Every table of the stage, through every ListTables page (the emulator holds other stages')."""
    pages = c["dynamodb"].get_paginator("list_tables").paginate()
    return sorted(n for page in pages for n in page["TableNames"] if n.startswith(f"titus-{stage}-"))


def stage_parameters(c, stage):
    pages = c["ssm"].get_paginator("get_parameters_by_path").paginate(Path=f"/titus/{stage}", Recursive=True)
    return [p for page in pages for p in page["Parameters"]]


def renamed(defs, stage):
    """CDK's forStage."""
    text = json.dumps(defs)
    text = text.replace(f"titus-{defs['stage']}-", f"titus-{stage}-").replace(f"/titus/{defs['stage']}/", f"/titus/{stage}/")
    out = json.loads(text)
    out["stage"] = stage
    return out


def key(k):
    return [{"AttributeName": k["partitionKey"], "KeyType": "HASH"}] + (
        [{"AttributeName": k["sortKey"], "KeyType": "RANGE"}] if k.get("sortKey") else []
    )


def applied(stage, definitions_file, out_file):
    c = clients()
    defs = renamed(json.load(open(definitions_file)), stage)
    names = stage_tables(c, stage)
    check(names == sorted(t["name"] for t in defs["tables"]), f"tables {names} are not definitions.json's")
    created = {}
    for t in defs["tables"]:
        d = c["dynamodb"].describe_table(TableName=t["name"])["Table"]
        created[t["name"]] = str(d["CreationDateTime"])
        check(d["KeySchema"] == key(t), f"{t['name']} key {d['KeySchema']}")
        check(d.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST", f"{t['name']} is not on demand")
        got = sorted((i["IndexName"], json.dumps(i["KeySchema"]), i["Projection"]["ProjectionType"]) for i in d.get("GlobalSecondaryIndexes", []))
        want = sorted((i["name"], json.dumps(key(i)), "ALL") for i in t["globalSecondaryIndexes"])
        check(got == want, f"{t['name']} indexes {got}, expected {want}")
        attrs = sorted(f"{a['AttributeName']}:{a['AttributeType']}" for a in d["AttributeDefinitions"])
        keys = {k for x in [t, *t["globalSecondaryIndexes"]] for k in (x["partitionKey"], x.get("sortKey")) if k}
        check(attrs == sorted(f"{k}:S" for k in keys), f"{t['name']} attributes {attrs}")
        ttl = c["dynamodb"].describe_time_to_live(TableName=t["name"])["TimeToLiveDescription"]
        if t.get("ttlAttribute"):
            check(ttl.get("TimeToLiveStatus") == "ENABLED" and ttl.get("AttributeName") == t["ttlAttribute"], f"{t['name']} TTL {ttl}")
        else:
            check(ttl.get("TimeToLiveStatus") in (None, "DISABLED"), f"{t['name']} has TTL {ttl}")
        pitr = c["dynamodb"].describe_continuous_backups(TableName=t["name"])["ContinuousBackupsDescription"]
        check(pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED", f"{t['name']} PITR {pitr}")
        stream = d.get("StreamSpecification", {})
        if t.get("stream"):
            check(stream == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"} and d.get("LatestStreamArn"), f"{t['name']} stream {stream}")
        else:
            check(not stream.get("StreamEnabled"), f"{t['name']} has a stream {stream}")
    streamed = sorted(t["role"] for t in defs["tables"] if t.get("stream"))
    check(streamed == ["agents", "jobs", "placement-results", "tasks"], f"the streamed tables are {streamed}")
    print(f"  {len(defs['tables'])} tables match definitions.json (keys, GSIs, attributes, TTL, streams of {', '.join(streamed)}, on demand, PITR)", file=sys.stderr)

    urls = c["sqs"].list_queues(QueueNamePrefix=f"titus-{stage}-").get("QueueUrls", [])
    want_queues = sorted([q["name"] for q in defs["queues"]] + [q["deadLetter"]["name"] for q in defs["queues"] if q.get("deadLetter")])
    check(sorted(u.rsplit("/", 1)[1] for u in urls) == want_queues, f"queues {urls}, expected {want_queues}")
    for q in defs["queues"]:
        url = c["sqs"].get_queue_url(QueueName=q["name"])["QueueUrl"]
        a = c["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        check(int(a["VisibilityTimeout"]) == q["visibilityTimeoutSecs"], f"{q['name']} visibility {a['VisibilityTimeout']}")
        check(int(a["MessageRetentionPeriod"]) == q["messageRetentionSecs"], f"{q['name']} retention {a['MessageRetentionPeriod']}")
        check(a.get("SqsManagedSseEnabled") == "true", f"{q['name']} is not SSE-SQS")
        check("aws:SecureTransport" in a.get("Policy", ""), f"{q['name']} has no TLS-only policy")
        if q.get("deadLetter"):
            dl = q["deadLetter"]
            redrive = json.loads(a.get("RedrivePolicy", "{}"))
            check(redrive.get("deadLetterTargetArn", "").endswith(":" + dl["name"]), f"{q['name']} redrive {redrive}")
            check(int(redrive.get("maxReceiveCount", 0)) == dl["maxReceiveCount"], f"{q['name']} redrive {redrive}")
            dlq = c["sqs"].get_queue_attributes(QueueUrl=c["sqs"].get_queue_url(QueueName=dl["name"])["QueueUrl"], AttributeNames=["All"])["Attributes"]
            check(int(dlq["MessageRetentionPeriod"]) == 14 * 24 * 3600, f"{dl['name']} retention {dlq['MessageRetentionPeriod']}")
        else:
            check("RedrivePolicy" not in a, f"{q['name']} has a redrive policy")
    print(f"  {len(want_queues)} queues match (timeouts, retention, redrive, SSE, TLS-only)", file=sys.stderr)

    for p in defs["parameters"]:
        got = c["ssm"].get_parameter(Name=p["name"])["Parameter"]["Value"]
        suffix = p["name"][len(f"/titus/{stage}"):]
        if suffix == "/scaler/pools/default":
            want = json.loads(p["defaultValue"])
            got_v = json.loads(got)
            check({k: v for k, v in got_v.items() if k != "subnet_ids"} == {k: v for k, v in want.items() if k != "subnet_ids"}, f"{p['name']} = {got}")
        elif suffix in ("/api/identities", "/api/admins", "/policy/teams"):
            pass  # the test's overrides (local tokens), checked by the job run
        else:
            check(json.loads(got) == json.loads(p["defaultValue"]), f"{p['name']} = {got}, expected the default {p['defaultValue']}")
    print(f"  {len(defs['parameters'])} parameters exist with the deployed values", file=sys.stderr)
    json.dump(created, open(out_file, "w"))
    done("the applied data plane matches infra/definitions.json")


def unchanged(stage, before_file):
    c = clients()
    before = json.load(open(before_file))
    for name, when in before.items():
        now = str(c["dynamodb"].describe_table(TableName=name)["Table"]["CreationDateTime"])
        check(now == when, f"{name} was recreated ({when} -> {now})")
    done(f"the {len(before)} tables are still the ones Terraform created")


def tasks(job_id, tasks_file):
    data = json.load(open(tasks_file))
    items = data if isinstance(data, list) else data.get("items", data.get("tasks", []))
    check(len(items) > 0, f"job {job_id} has no tasks")
    for t in items:
        status = t.get("status", {})
        check(status.get("state") == "Finished", f"task {t.get('id')} is {status.get('state')}")
        check(status.get("reasonCode") == "normal", f"task {t.get('id')} reason {status.get('reasonCode')}")
        check(t.get("exitCode") == 0, f"task {t.get('id')} exit code {t.get('exitCode')}")
    done(f"job {job_id}: {len(items)} task(s) Finished (normal) with exit code 0")


def cleanup(stage):
    c = clients()
    urls = c["sqs"].list_queues(QueueNamePrefix=f"titus-{stage}-agent-").get("QueueUrls", [])
    for url in urls:
        c["sqs"].delete_queue(QueueUrl=url)
    print(f"  deleted {len(urls)} agent queue(s) the stack created at run time", file=sys.stderr)


def gone(stage):
    c = clients()
    tables = stage_tables(c, stage)
    check(not tables, f"tables left: {tables}")
    queues = c["sqs"].list_queues(QueueNamePrefix=f"titus-{stage}-").get("QueueUrls", [])
    check(not queues, f"queues left: {queues}")
    params = stage_parameters(c, stage)
    check(not params, f"parameters left: {[p['Name'] for p in params]}")
    done(f"nothing of stage {stage} is left (tables, queues, parameters)")


def event_feed(p, after):
    """The tables' streams, the events table and function, its four stream mappings, DLQ, bus, alarms."""
    unknown = {r["address"]: r["change"].get("after_unknown", {}) for r in p.get("resource_changes", [])}
    tables = {a: v for a, v in after.items() if a.startswith("aws_dynamodb_table.")}
    streamed = ("jobs", "tasks", "placement-results", "agents")
    for a, v in tables.items():
        role = a[len('aws_dynamodb_table.this["'):-2]
        if role in streamed:
            check(v["stream_enabled"] is True and v["stream_view_type"] == "NEW_AND_OLD_IMAGES", f"{a} stream {v['stream_enabled']} {v['stream_view_type']}")
        else:
            check(not v.get("stream_enabled") and not v.get("stream_view_type"), f"{a} has a stream")
    events = after.get('aws_dynamodb_table.this["events"]', {})
    check(events.get("hash_key") == "feedKey" and events.get("range_key") == "eventKey", f"events table keys {events.get('hash_key')} {events.get('range_key')}")
    check(events.get("ttl") == [{"attribute_name": "expiresAt", "enabled": True}], f"events table TTL {events.get('ttl')}")
    check(events.get("billing_mode") == "PAY_PER_REQUEST" and events.get("point_in_time_recovery") == [{"enabled": True}], "events table billing, PITR")

    fn = after.get('aws_lambda_function.this["events"]', {})
    check(fn.get("function_name", "").endswith("-events") and fn.get("filename", "").endswith("/titus-events-lambda.zip"), f"events function {fn.get('function_name')} {fn.get('filename')}")
    check((fn.get("timeout"), fn.get("memory_size")) == (60, 256), f"events function timeout {fn.get('timeout')}, memory {fn.get('memory_size')}")

    mappings = {a: v for a, v in after.items() if a.startswith("aws_lambda_event_source_mapping.stream[")}
    check(sorted(mappings) == sorted(f'aws_lambda_event_source_mapping.stream["{t}"]' for t in streamed), f"stream mappings {sorted(mappings)}")
    for a, v in mappings.items():
        got = {k: v.get(k) for k in ("starting_position", "batch_size", "maximum_batching_window_in_seconds", "bisect_batch_on_function_error",
                                     "maximum_retry_attempts", "maximum_record_age_in_seconds", "function_response_types")}
        want = {"starting_position": "TRIM_HORIZON", "batch_size": 100, "maximum_batching_window_in_seconds": 0, "bisect_batch_on_function_error": True,
                "maximum_retry_attempts": 10, "maximum_record_age_in_seconds": 86400, "function_response_types": ["ReportBatchItemFailures"]}
        check(got == want, f"{a} {got}")
        # Only the agents' records are filtered: those that can be state changes.
        patterns = [json.loads(f["pattern"]) for c in v.get("filter_criteria") or [] for f in c.get("filter") or []]
        draining_or_lost = {"agentState": {"S": ["draining", "lost"]}}
        want_patterns = ([{"eventName": ["INSERT"]}, {"dynamodb": {"NewImage": draining_or_lost}}, {"dynamodb": {"OldImage": draining_or_lost}}]
                         if a.endswith('["agents"]') else [])
        # (A set in Terraform: compared without order.)
        canonical = lambda ps: sorted(json.dumps(p, sort_keys=True) for p in ps)
        check(canonical(patterns) == canonical(want_patterns), f"{a} filters {patterns}")
        # The stream, the function and the DLQ are only known once applied.
        u = unknown[a]
        check(u.get("event_source_arn") is True and u.get("function_name") is True, f"{a} does not read a planned stream into a planned function")
        on_failure = (v.get("destination_config") or [{}])[0].get("on_failure")
        check(on_failure is not None and (u.get("destination_config") or [{}])[0].get("on_failure", [{}])[0].get("destination_arn") is True, f"{a} has no on-failure destination")

    dlq = after.get("aws_sqs_queue.events_dead_letter[0]", {})
    check(dlq.get("name", "").endswith("-events-dlq") and dlq.get("message_retention_seconds") == 14 * 24 * 3600 and dlq.get("sqs_managed_sse_enabled") is True, f"events DLQ {dlq}")
    check('aws_sqs_queue_policy.tls_only["events-dlq"]' in after, "the events DLQ has no TLS-only policy")
    bus = after.get("aws_cloudwatch_event_bus.events[0]", {})
    check(bus.get("name", "").endswith("-events"), f"event bus {bus}")
    outputs = p.get("output_changes", {})
    check("event_bus_name" in outputs and "event_bus_arn" in outputs, f"outputs {sorted(outputs)}")

    alarms = {v["alarm_name"]: v for a, v in after.items() if a.startswith("aws_cloudwatch_metric_alarm.")}
    named = lambda suffix: [v for n, v in alarms.items() if n.endswith(f"-{suffix}")]
    check(len(named("events-errors")) == 1 and len(named("events-dead-letters")) == 1, f"alarms {sorted(alarms)}")
    lag = (named("events-iterator-age") or [{}])[0]
    check((lag.get("namespace"), lag.get("metric_name"), lag.get("statistic"), lag.get("threshold"), lag.get("comparison_operator"))
          == ("AWS/Lambda", "IteratorAge", "Maximum", 60000, "GreaterThanThreshold") and lag.get("period", 0) * lag.get("evaluation_periods", 0) == 300,
          f"stream lag alarm {lag}")

    # The function's policy names the tables, streams, DLQ and bus by ARN, unknown until applied:
    # the plan cannot show it (iam.tf mirrors the CDK stack's grants, which infra/test asserts).
    print(f"    event feed: {len(mappings)} stream mappings to the events function, its DLQ and alarms, the bus", file=sys.stderr)


def plan(plan_file):
    p = json.load(open(plan_file))
    changes = [r for r in p.get("resource_changes", []) if r["mode"] == "managed"]
    check(all(r["change"]["actions"] == ["create"] for r in changes), "the plan does more than create")
    by_type = collections.Counter(r["type"] for r in changes)
    for t, n in sorted(by_type.items()):
        print(f"    {t:<48}{n:>4}", file=sys.stderr)
    print(f"    {'total':<48}{sum(by_type.values()):>4}", file=sys.stderr)
    # 7 declared queues and the events function's DLQ; 3 queue and 4 stream mappings; alarms: 3
    # DLQs, 7 functions' errors, the lease, the oldest pending task, tick errors, the events DLQ,
    # stream lag; log groups: 7 functions', the API's access log, the loop's, the flow log, task
    # logs and the agents' metrics.
    want = {
        "aws_dynamodb_table": 10, "aws_sqs_queue": 8, "aws_sqs_queue_policy": 8, "aws_ssm_parameter": 12, "aws_lambda_function": 7,
        "aws_lambda_event_source_mapping": 7, "aws_sfn_state_machine": 1, "aws_scheduler_schedule": 3,
        "aws_apigatewayv2_api": 1, "aws_apigatewayv2_route": 1, "aws_launch_template": 1, "aws_cloudwatch_event_bus": 1,
        "aws_cloudwatch_metric_alarm": 15, "aws_cloudwatch_dashboard": 1, "aws_cloudwatch_log_group": 12,
        "aws_iam_instance_profile": 1, "aws_vpc_endpoint": 9,
    }
    for t, n in want.items():
        check(by_type.get(t) == n, f"{n} {t} expected, the plan has {by_type.get(t, 0)}")
    after = {r["address"]: r["change"]["after"] for r in changes}
    fns = {a: v for a, v in after.items() if a.startswith("aws_lambda_function.")}
    for a, v in fns.items():
        check(v["runtime"] == "provided.al2023" and v["handler"] == "bootstrap", f"{a} runtime {v['runtime']}")
        check(v["logging_config"][0]["log_format"] == "JSON", f"{a} log format")
        check(v["tracing_config"][0]["mode"] == "Active", f"{a} tracing")
    route = after['aws_apigatewayv2_route.default[0]']
    check(route["authorization_type"] == "AWS_IAM" and route["route_key"] == "$default", f"route {route}")
    stage_ = after['aws_apigatewayv2_stage.default[0]']["default_route_settings"][0]
    check((stage_["throttling_rate_limit"], stage_["throttling_burst_limit"]) == (200, 400), f"throttling {stage_}")
    for a, v in after.items():
        if a.startswith("aws_lambda_event_source_mapping.queue["):
            check(v["function_response_types"] == ["ReportBatchItemFailures"] and v["batch_size"] == 10, f"{a} {v}")
    event_feed(p, after)
    sm = after["aws_sfn_state_machine.scheduler_loop[0]"]
    check(sm["type"] == "EXPRESS", "the loop is not Express")
    lt = after["aws_launch_template.agent[0]"]["metadata_options"][0]
    check(lt["http_tokens"] == "required" and lt["http_put_response_hop_limit"] == 1 and lt["instance_metadata_tags"] == "enabled", f"IMDS {lt}")
    # The agents log tasks to the task log group and their metrics (EMF) to the agents' group.
    groups = {v["name"]: v for a, v in after.items() if a.startswith("aws_cloudwatch_log_group.")}
    agent_config = json.loads(after.get('aws_ssm_parameter.this["/agent/config"]', {}).get("value") or "{}")
    for key, suffix in (("awslogs_group", "tasks"), ("metrics_log_group", "agents")):
        name = agent_config.get(key, "")
        check(name.endswith(f"/{suffix}") and groups.get(name, {}).get("retention_in_days") == 30, f"/agent/config {key} = {name!r}, groups {sorted(groups)}")
    tick = [v for v in after.values() if v.get("metric_name") == "TickErrors"]
    check([(v["statistic"], v["period"], v["evaluation_periods"], v["threshold"], v["comparison_operator"], v["treat_missing_data"]) for v in tick]
          == [("Sum", 300, 1, 3, "GreaterThanOrEqualToThreshold", "notBreaching")], f"tick errors alarm {tick}")
    # The policies are known at plan time only where they name nothing unknown; check what is.
    done(f"the full module plans {sum(by_type.values())} resources")


class Unresolved(Exception):
    """A CloudFormation value that only a deployment knows (a subnet id, a role id)."""


def cfn_resolver(template, partition, region, account):
    """Resolves the intrinsics of a CDK template that a plan also knows: names, ARNs made of
    names, the region and account. Anything else raises Unresolved."""
    res = template["Resources"]
    pseudo = {"AWS::Partition": partition, "AWS::Region": region, "AWS::AccountId": account, "AWS::URLSuffix": "amazonaws.com"}
    names = {"AWS::SQS::Queue": "QueueName", "AWS::Lambda::Function": "FunctionName", "AWS::Logs::LogGroup": "LogGroupName",
             "AWS::CloudWatch::Alarm": "AlarmName", "AWS::SNS::Topic": "TopicName"}

    def name_of(logical_id):
        r = res[logical_id]
        if r["Type"] not in names or names[r["Type"]] not in r["Properties"]:
            raise Unresolved(logical_id)
        return resolve(r["Properties"][names[r["Type"]]])

    def resolve(v):
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if not isinstance(v, dict):
            return v
        if set(v) == {"Ref"}:
            return pseudo[v["Ref"]] if v["Ref"] in pseudo else name_of(v["Ref"])
        if set(v) == {"Fn::Join"}:
            sep, parts = v["Fn::Join"]
            return sep.join(str(resolve(p)) for p in parts)
        if set(v) == {"Fn::GetAtt"}:
            logical_id, attribute = v["Fn::GetAtt"]
            kind = res[logical_id]["Type"]
            if attribute == "QueueName" or (attribute == "Arn" and kind == "AWS::CloudWatch::Alarm"):
                name = name_of(logical_id)
                return name if attribute == "QueueName" else f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}"
            if attribute == "Arn" and kind == "AWS::Logs::LogGroup":
                return f"arn:{partition}:logs:{region}:{account}:log-group:{name_of(logical_id)}:*"
            raise Unresolved(f"{logical_id}.{attribute}")
        if any(k.startswith("Fn::") for k in v):
            raise Unresolved(json.dumps(v)[:80])
        return {k: resolve(x) for k, x in v.items()}

    return resolve


def parity(plan_file, template_file):
    """The module's plan and the CDK app's template for the same stage deploy the same alarms
    (every setting), dashboard (every widget and line), log groups and parameter values."""
    p = json.load(open(plan_file))
    template = json.load(open(template_file))
    after = {r["address"]: r["change"]["after"] for r in p.get("resource_changes", []) if r["mode"] == "managed"}
    unknown = {r["address"]: r["change"].get("after_unknown", {}) for r in p.get("resource_changes", [])}
    cfn = {k: r for k, r in template["Resources"].items()}
    of_type = lambda t: [r["Properties"] for r in cfn.values() if r["Type"] == t]
    data = {r["address"]: r.get("values", {}) for r in p.get("prior_state", {}).get("values", {}).get("root_module", {}).get("resources", [])}
    partition = data.get("data.aws_partition.current", {}).get("partition", "aws")
    region = data.get("data.aws_region.current", {}).get("name")
    account = data.get("data.aws_caller_identity.current", {}).get("account_id")
    check(region and account, f"the plan's region {region} and account {account}")
    resolve = cfn_resolver(template, partition, region, account)

    # Alarms: the same names, each with the same metric, statistic, period, threshold, comparison,
    # missing-data treatment and description, and one action (the alarm topic).
    cdk_alarms = {}
    for a in of_type("AWS::CloudWatch::Alarm"):
        cdk_alarms[a["AlarmName"]] = {
            "description": resolve(a.get("AlarmDescription")), "namespace": a["Namespace"], "metric": a["MetricName"],
            "dimensions": {d["Name"]: resolve(d["Value"]) for d in a.get("Dimensions", [])}, "statistic": a["Statistic"],
            "period": a["Period"], "periods": a["EvaluationPeriods"], "threshold": a["Threshold"],
            "comparison": a["ComparisonOperator"], "missing": a.get("TreatMissingData", "missing"), "actions": len(a.get("AlarmActions", [])),
        }
    tf_alarms = {}
    for address, a in after.items():
        if address.startswith("aws_cloudwatch_metric_alarm."):
            actions = len(a.get("alarm_actions") or []) or (1 if unknown[address].get("alarm_actions") else 0)
            tf_alarms[a["alarm_name"]] = {
                "description": a.get("alarm_description"), "namespace": a["namespace"], "metric": a["metric_name"],
                "dimensions": a.get("dimensions") or {}, "statistic": a["statistic"], "period": a["period"],
                "periods": a["evaluation_periods"], "threshold": a["threshold"], "comparison": a["comparison_operator"],
                "missing": a["treat_missing_data"], "actions": actions,
            }
    check(sorted(cdk_alarms) == sorted(tf_alarms), f"alarms: only CDK {sorted(set(cdk_alarms) - set(tf_alarms))}, only Terraform {sorted(set(tf_alarms) - set(cdk_alarms))}")
    for name in sorted(set(cdk_alarms) & set(tf_alarms)):
        for k, v in cdk_alarms[name].items():
            check(tf_alarms[name][k] == v, f"alarm {name} {k}: CDK {v!r}, Terraform {tf_alarms[name][k]!r}")

    # The dashboard: the same widgets in the same places, each line the same metric and statistic.
    cdk_dashboards = of_type("AWS::CloudWatch::Dashboard")
    tf_dashboards = [v for a, v in after.items() if a.startswith("aws_cloudwatch_dashboard.")]
    check(len(cdk_dashboards) == 1 and len(tf_dashboards) == 1, f"dashboards: CDK {len(cdk_dashboards)}, Terraform {len(tf_dashboards)}")
    widgets = 0
    if len(cdk_dashboards) == 1 and len(tf_dashboards) == 1:
        check(cdk_dashboards[0]["DashboardName"] == tf_dashboards[0]["dashboard_name"], "dashboard names")
        cdk_body = json.loads(resolve(cdk_dashboards[0]["DashboardBody"]))
        tf_body = json.loads(tf_dashboards[0].get("dashboard_body") or "{}")
        cdk_w, tf_w = cdk_body.get("widgets", []), tf_body.get("widgets", [])
        widgets = len(cdk_w)
        check(len(cdk_w) == len(tf_w), f"dashboard widgets: CDK {len(cdk_w)}, Terraform {len(tf_w)}")
        for i, (c, t) in enumerate(zip(cdk_w, tf_w)):
            check(c == t, f"dashboard widget {i} ({c.get('properties', {}).get('title')}): CDK {json.dumps(c, sort_keys=True)}, Terraform {json.dumps(t, sort_keys=True)}")

    # Log groups: the same names and retention.
    cdk_groups = {g["LogGroupName"]: g.get("RetentionInDays") for g in of_type("AWS::Logs::LogGroup")}
    tf_groups = {v["name"]: v.get("retention_in_days") for a, v in after.items() if a.startswith("aws_cloudwatch_log_group.")}
    check(cdk_groups == tf_groups, f"log groups: CDK {cdk_groups}, Terraform {tf_groups}")

    # Parameters: the same values wherever both are known before deploying (not the default
    # pool's subnets, nor the rules' agent role id, which only IAM knows).
    cdk_params = {}
    for prm in of_type("AWS::SSM::Parameter"):
        try:
            cdk_params[prm["Name"]] = json.loads(resolve(prm["Value"]))
        except Unresolved:
            cdk_params[prm["Name"]] = None
    tf_params = {v["name"]: (json.loads(v["value"]) if v.get("value") is not None else None) for a, v in after.items() if a.startswith("aws_ssm_parameter.")}
    check(sorted(cdk_params) == sorted(tf_params), f"parameters: CDK {sorted(cdk_params)}, Terraform {sorted(tf_params)}")
    compared = [n for n in cdk_params if cdk_params[n] is not None and tf_params.get(n) is not None]
    for name in compared:
        check(cdk_params[name] == tf_params[name], f"parameter {name}: CDK {cdk_params[name]}, Terraform {tf_params[name]}")
    check(f"/titus/{cdk_dashboards[0]['DashboardName'][len('titus-'):]}/agent/config" in compared if cdk_dashboards else False, "/agent/config was not compared")
    print(f"    parity: {len(cdk_alarms)} alarms, {widgets} dashboard widgets, {len(cdk_groups)} log groups, {len(compared)} of {len(cdk_params)} parameter values", file=sys.stderr)
    done("the module deploys the CDK app's alarms, dashboard, log groups and parameters")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"applied": applied, "unchanged": unchanged, "tasks": tasks, "cleanup": cleanup, "gone": gone, "plan": plan, "parity": parity}[command](*args)
