"""The AWS release target against moto (server mode on 127.0.0.1): ECR, ECS services, ALB listener switch."""

from __future__ import annotations

import os

import boto3
import pytest

from deployments.aws import AwsBlueGreen, ensure_repository, registry_login

RULES = {
    "ready_timeout_seconds": 10,
    "poll_seconds": 0.2,
    "window_seconds": 2,
    "interval_seconds": 0.5,
    "max_5xx_count": 5,
    "max_p99_ms": 500,
}


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    return lambda service: boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def stack(aws):
    """What infra/cloudformation/potable-release.yaml creates: ALB, listener, two target groups, ECS services."""
    import uuid

    name = f"potable-{uuid.uuid4().hex[:6]}"
    ec2, elbv2, ecs = aws("ec2"), aws("elbv2"), aws("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    lb = elbv2.create_load_balancer(Name=name, Subnets=subnets, Type="application")["LoadBalancers"][0]
    groups = {
        slot: elbv2.create_target_group(Name=f"{name}-{slot}", Protocol="HTTP", Port=3000, VpcId=vpc, TargetType="ip")[
            "TargetGroups"
        ][0]["TargetGroupArn"]
        for slot in ("blue", "green")
    }
    listener = elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["blue"]}],
    )["Listeners"][0]["ListenerArn"]
    ecs.create_cluster(clusterName=name)
    ecs.register_task_definition(
        family=name, containerDefinitions=[{"name": "service", "image": "registry/potable:1-abc", "memory": 2048}]
    )
    for slot, desired in (("blue", 2), ("green", 0)):
        ecs.create_service(cluster=name, serviceName=f"{name}-{slot}", taskDefinition=name, desiredCount=desired)
        elbv2.register_targets(TargetGroupArn=groups[slot], Targets=[{"Id": "10.0.1.10", "Port": 3000}])
    target = AwsBlueGreen(
        ecs, elbv2, aws("cloudwatch"), name, name, listener, groups, lb["LoadBalancerArn"].split("loadbalancer/")[1]
    )
    return target, name


def test_ecr_repository_is_created_once_with_scan_on_push_and_immutable_tags(aws) -> None:
    ecr = aws("ecr")
    uri = ensure_repository(ecr, "potable-service")
    assert ensure_repository(ecr, "potable-service") == uri and uri.endswith("/potable-service")
    repo = ecr.describe_repositories(repositoryNames=["potable-service"])["repositories"][0]
    assert repo["imageScanningConfiguration"]["scanOnPush"] and repo["imageTagMutability"] == "IMMUTABLE"
    login = registry_login(ecr)
    assert login.username == "AWS" and login.password and "." in login.registry


def test_release_switches_the_listener_to_green_and_scales_blue_in(stack) -> None:
    target, name = stack
    assert target.live_slot() == "blue"
    outcome = target.release("registry/potable:2-def", "service", name, 2, RULES)
    assert outcome["status"] == "released" and outcome["live"] == "green" and target.live_slot() == "green"
    services = {
        s["serviceName"]: s
        for s in target.ecs.describe_services(cluster=name, services=[f"{name}-blue", f"{name}-green"])["services"]
    }
    assert services[f"{name}-blue"]["desiredCount"] == 0 and services[f"{name}-green"]["desiredCount"] == 2
    image = target.ecs.describe_task_definition(taskDefinition=outcome["taskdef"])["taskDefinition"][
        "containerDefinitions"
    ][0]["image"]
    assert image == "registry/potable:2-def"


def test_target_5xx_after_the_switch_rolls_back_to_blue(stack) -> None:
    target, name = stack
    green = target.target_groups["green"].split(":")[-1]
    target.cloudwatch.put_metric_data(
        Namespace="AWS/ApplicationELB",
        MetricData=[
            {
                "MetricName": "HTTPCode_Target_5XX_Count",
                "Dimensions": [
                    {"Name": "TargetGroup", "Value": green},
                    {"Name": "LoadBalancer", "Value": target.load_balancer_dimension},
                ],
                "Value": 40,
                "Unit": "Count",
            }
        ],
    )
    outcome = target.release("registry/potable:2-def", "service", name, 2, RULES)
    assert outcome["status"] == "rolled_back" and outcome["breach"]["HTTPCode_Target_5XX_Count"] == 40
    assert target.live_slot() == "blue"
    blue = target.ecs.describe_services(cluster=name, services=[f"{name}-blue"])["services"][0]
    assert blue["desiredCount"] == 2  # the old service was never scaled in


def _create_stack(aws, name: str, body: str, net: str, **parameters: str) -> dict:
    """Create the template on moto in a new VPC with two subnets; the stack once CREATE_COMPLETE."""
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock=f"{net}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"{net}.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"][
            "SubnetId"
        ]
        for i, z in ((1, "a"), (2, "b"))
    ]
    parameters |= {"Name": name, "VpcId": vpc, "SubnetIds": ",".join(subnets)}
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return stack


def test_cloudformation_template_creates_the_stack_on_moto(aws) -> None:
    """infra/cloudformation/potable.yaml is accepted and its resources exist afterwards."""
    from core.settings import PROJECT_ROOT

    cfn = aws("cloudformation")
    body = (PROJECT_ROOT / "infra" / "cloudformation" / "potable.yaml").read_text()
    stack = _create_stack(aws, "potable-cfn", body, "10.1", Image="repo/potable:1-abc")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["RepositoryUri"].endswith("/potable-cfn-service") and outputs["AlertTopicArn"].endswith(
        ":potable-cfn-alerts"
    )
    created = {
        r["LogicalResourceId"] for r in cfn.list_stack_resources(StackName="potable-cfn")["StackResourceSummaries"]
    }
    assert {"LandingBucket", "Repository", "AlertTopic", "Listener", "BlueService", "GreenService"} <= created
    # moto's CloudFormation skips CloudWatch alarms: check them in the template itself.
    import yaml

    resources = yaml.safe_load(body)["Resources"]
    alarms = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert {a["MetricName"] for a in alarms.values()} == {"HTTPCode_Target_5XX_Count", "TargetResponseTime"}
    assert all(a["AlarmActions"] == [{"Ref": "AlertTopic"}] for a in alarms.values())


def test_release_flow_with_the_aws_target(stack, prefect_api, settings, monkeypatch, moto_endpoint, tmp_path) -> None:
    """`release` with `target: aws`: the champion's pushed image goes live on green via the ALB listener."""
    import mlflow
    import yaml
    from mlflow import MlflowClient
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from core.settings import CONFIG_DIR, FEATURES, MODEL_NAME, Settings
    from flows.release import release
    from tasks.registry import setup_mlflow

    target, name = stack
    monkeypatch.setenv("POTABLE_AWS_ENDPOINT_URL", moto_endpoint)
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text()) | {"target": "aws"}
    config["aws"] |= {
        "cluster": name,
        "service_prefix": name,
        "listener_arn": target.listener_arn,
        "target_groups": target.target_groups,
        "load_balancer": target.load_balancer_dimension,
        "task_family": name,
        "rules": RULES,
    }
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("POTABLE_RELEASE_CONFIG", str(tmp_path / "release.yaml"))
    setup_mlflow(Settings())
    frame = __import__("pandas").DataFrame([[1.0] * 9, [2.0] * 9], columns=list(FEATURES))
    with mlflow.start_run():
        model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(frame, [0, 1])
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL_NAME, serialization_format="cloudpickle"
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    for key, value in {"bento_tag": "water-potability-service:x", "image": "registry/potable:9-abcdef0"}.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)

    summary = release()
    assert summary["status"] == "released" and summary["slot"] == "green" and target.live_slot() == "green"
    assert client.get_model_version(MODEL_NAME, version).tags["release"] == "released (green)"


def test_workers_template_creates_shared_state_and_worker_services_on_moto(aws, prefect_api, tmp_path) -> None:
    """infra/cloudformation/potable-workers.yaml: Postgres, state bucket, MLflow server, Prefect worker, roles;
    infra/ecs_work_pool.py turns its outputs into a base job template Prefect accepts for an ECS pool."""
    import yaml

    from core.settings import PROJECT_ROOT

    body = (PROJECT_ROOT / "infra" / "cloudformation" / "potable-workers.yaml").read_text()
    parameters = {"FlowImage": "repo/potable-flows:abc1234", "PrefectApiUrl": "https://prefect.example.internal/api"}
    stack = _create_stack(aws, "potable-wk", body, "10.2", **parameters)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["MlflowTrackingUri"].startswith("http://") and outputs["MlflowTrackingUri"].endswith(":5000")
    assert outputs["StateBucket"].startswith("potable-wk-state-") and outputs["WorkPool"] == "potable-ecs"
    ecs = aws("ecs")
    services = ecs.describe_services(
        cluster="potable-wk-flows", services=["potable-wk-mlflow", "potable-wk-flows-worker"]
    )
    assert {s["serviceName"] for s in services["services"]} == {"potable-wk-mlflow", "potable-wk-flows-worker"}
    worker = ecs.describe_task_definition(taskDefinition="potable-wk-flows-worker")["taskDefinition"]
    assert worker["containerDefinitions"][0]["command"][:4] == ["prefect", "worker", "start", "--pool"]
    mlflow = ecs.describe_task_definition(taskDefinition="potable-wk-mlflow")["taskDefinition"]["containerDefinitions"][
        0
    ]
    assert "--artifacts-destination" in mlflow["command"] and mlflow["secrets"][0]["name"] == "PGPASSWORD"
    assert all("@" not in part.split("potable@")[-1].split("/")[0] or "potable@" in part for part in mlflow["command"])
    resources = yaml.safe_load(body)["Resources"]
    assert resources["Database"]["Properties"]["PubliclyAccessible"] is False
    assert resources["Database"]["Properties"]["StorageEncrypted"] is True
    # The work pool, as infra/README.md says: outputs → template → `prefect work-pool create`.
    import json
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    described = stack["Outputs"]
    if "DatabasePasswordSecretArn" not in outputs:  # moto's CloudFormation makes no Secrets Manager secrets
        secret = aws("secretsmanager").create_secret(Name="potable-wk/database-password", SecretString="x" * 32)
        outputs["DatabasePasswordSecretArn"] = secret["ARN"]
        described = [*described, {"OutputKey": "DatabasePasswordSecretArn", "OutputValue": secret["ARN"]}]
    (tmp_path / "outputs.json").write_text(json.dumps(described))
    made = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "infra" / "ecs_work_pool.py"), "--outputs", str(tmp_path / "outputs.json")]
        + ["--image", "repo/potable-flows:abc1234"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    (tmp_path / "template.json").write_text(made.stdout)
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    argv = [prefect, "work-pool", "create", "potable-ecs-test", "--type", "ecs"]
    created = subprocess.run(
        [*argv, "--base-job-template", str(tmp_path / "template.json")], env=env, capture_output=True
    )
    assert created.returncode == 0, created.stderr
    from prefect import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("potable-ecs-test")
    variables = pool.base_job_template["variables"]["properties"]
    assert variables["image"]["default"] == "repo/potable-flows:abc1234"
    assert variables["cluster"]["default"] == outputs["ClusterArn"]
    assert variables["env"]["default"]["MLFLOW_TRACKING_URI"] == outputs["MlflowTrackingUri"]
    assert all("@" not in v.split("potable@", 1)[-1] for v in variables["env"]["default"].values())  # no password
    container = pool.base_job_template["job_configuration"]["task_definition"]["containerDefinitions"][0]
    assert container["secrets"] == [{"name": "PGPASSWORD", "valueFrom": outputs["DatabasePasswordSecretArn"]}]
