"""The `potable-ecs` work pool's base job template, from the outputs of infra/cloudformation/potable-workers.yaml.

prefect-aws's own ECS template with potable's defaults: the flows image, the cluster, the flow-run and
execution roles, the private network, CloudWatch logs, a size that trains (2 vCPU, 8 GB), and the settings
that point every flow run at the shared state (MLflow server, the Postgres databases, the S3 state bucket;
docs/operations.md "Workers on several machines"). The database password reaches the container as
PGPASSWORD from Secrets Manager: no URL here, in the pool or in the Prefect UI carries it.

    aws cloudformation describe-stacks --stack-name potable-workers --query 'Stacks[0].Outputs' > outputs.json
    python infra/ecs_work_pool.py --outputs outputs.json --image <ecr>/potable-flows:<commit> > template.json
    prefect work-pool create potable-ecs --type ecs --base-job-template template.json   # or `update`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CPU, MEMORY = 2048, 8192  # one train run: tuning folds in parallel threads, a refit on every core
OUTPUTS = (
    "ClusterArn",
    "DatabaseHost",
    "DatabasePasswordSecretArn",
    "StateBucket",
    "MlflowTrackingUri",
    "FlowTaskRoleArn",
    "ExecutionRoleArn",
    "SecurityGroupId",
    "SubnetIds",
)


def flow_run_environment(outputs: dict[str, str]) -> dict[str, str]:
    """The settings of every flow run on the pool (passwordless URLs: libpq takes PGPASSWORD)."""
    host, bucket = outputs["DatabaseHost"], outputs["StateBucket"]
    return {
        "POTABLE_HOME": "/tmp/potable",  # nosec B108 # the task's own scratch disk; nothing there outlives it
        "MLFLOW_TRACKING_URI": outputs["MlflowTrackingUri"],
        "POTABLE_OPTUNA_STORAGE": f"postgresql+psycopg2://potable@{host}:5432/optuna",
        "POTABLE_AUDIT_DATABASE_URL": f"postgresql://potable@{host}:5432/audit",
        "POTABLE_PREDICTION_LOG_DATABASE_URL": f"postgresql://potable@{host}:5432/predictions",
        "POTABLE_REPORTS_URI": f"s3://{bucket}/reports/",
    }


def base_job_template(outputs: dict[str, str], image: str) -> dict[str, Any]:
    from prefect_aws.workers.ecs_worker import ECSWorker

    template = ECSWorker.get_default_base_job_template()
    defaults = {
        "image": image,
        "cluster": outputs["ClusterArn"],
        "task_role_arn": outputs["FlowTaskRoleArn"],
        "execution_role_arn": outputs["ExecutionRoleArn"],
        "launch_type": "FARGATE",
        "cpu": CPU,
        "memory": MEMORY,
        "configure_cloudwatch_logs": True,
        "env": flow_run_environment(outputs),
        "network_configuration": {
            "subnets": outputs["SubnetIds"].split(","),
            "securityGroups": [outputs["SecurityGroupId"]],
            "assignPublicIp": "DISABLED",
        },
    }
    for name, value in defaults.items():
        template["variables"]["properties"][name]["default"] = value
    container = template["job_configuration"]["task_definition"]["containerDefinitions"][0]
    container["secrets"] = [{"name": "PGPASSWORD", "valueFrom": outputs["DatabasePasswordSecretArn"]}]
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", required=True, type=Path, help="the stack's outputs (describe-stacks JSON)")
    parser.add_argument("--image", required=True, help="the flows image, e.g. <ecr>/potable-flows:<commit>")
    args = parser.parse_args(argv)
    raw = json.loads(args.outputs.read_text(encoding="utf-8"))
    outputs = {o["OutputKey"]: o["OutputValue"] for o in raw} if isinstance(raw, list) else raw
    missing = sorted(set(OUTPUTS) - set(outputs))
    if missing:
        print(f"error: {args.outputs} lacks the stack outputs {missing} (potable-workers.yaml)", file=sys.stderr)
        return 2
    json.dump(base_job_template(outputs, args.image), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
