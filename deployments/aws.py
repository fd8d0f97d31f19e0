"""The AWS target: ECR for images, two ECS services behind one ALB listener for blue-green.

Same steps as the local target (deployments/rollout.py): update the idle service → wait until it is
stable and its targets are healthy → switch the listener's default action to the idle target group →
watch the new target group's 5xx count and response time in CloudWatch → keep, or switch back.
Every client takes `endpoint_url` from settings, so tests run the same code against moto.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SLOTS = ("blue", "green")


class AwsReleaseError(RuntimeError):
    """An AWS step failed before the listener was switched: production traffic is unchanged."""


@dataclass(frozen=True)
class RegistryLogin:
    registry: str  # host[:port] to push to
    username: str
    password: str


def ensure_repository(ecr, name: str) -> str:
    """The repository URI; created with scan-on-push and immutable tags when missing."""
    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        repo = ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="IMMUTABLE",
        )["repository"]
    return repo["repositoryUri"]


def registry_login(ecr) -> RegistryLogin:
    """Credentials for `buildah login` / `skopeo copy --dest-creds` from ECR's authorization token."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    return RegistryLogin(data["proxyEndpoint"].removeprefix("https://"), username, password)


@dataclass
class AwsBlueGreen:
    """ECS services `<prefix>-blue` / `<prefix>-green`, target groups of the same names, one listener."""

    ecs: Any
    elbv2: Any
    cloudwatch: Any
    cluster: str
    prefix: str
    listener_arn: str
    target_groups: dict[str, str]  # slot → target group ARN
    load_balancer_dimension: str  # "app/<name>/<id>", CloudWatch's LoadBalancer dimension

    def live_slot(self) -> str:
        listener = self.elbv2.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]
        arn = listener["DefaultActions"][0]["TargetGroupArn"]
        return next(slot for slot, tg in self.target_groups.items() if tg == arn)

    def deploy_idle(self, image: str, container: str, family: str, desired: int) -> tuple[str, str]:
        """Register a task definition for `image` and roll the idle service to it; returns (slot, taskdef)."""
        idle = "green" if self.live_slot() == "blue" else "blue"
        current = self.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        containers = [c | {"image": image} if c["name"] == container else c for c in current["containerDefinitions"]]
        keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "requiresCompatibilities", "cpu", "memory")
        new = self.ecs.register_task_definition(
            containerDefinitions=containers, **{k: current[k] for k in keep if k in current}
        )["taskDefinition"]["taskDefinitionArn"]
        self.ecs.update_service(
            cluster=self.cluster, service=f"{self.prefix}-{idle}", taskDefinition=new, desiredCount=desired
        )
        return idle, new

    def wait_stable(self, slot: str, timeout: float, poll: float = 5.0) -> None:
        """The idle service runs its desired count on the new task definition and its targets are healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            service = self.ecs.describe_services(cluster=self.cluster, services=[f"{self.prefix}-{slot}"])["services"][
                0
            ]
            rolled = len(service["deployments"]) == 1 and service["runningCount"] >= service["desiredCount"]
            health = self.elbv2.describe_target_health(TargetGroupArn=self.target_groups[slot])
            states = [t["TargetHealth"]["State"] for t in health["TargetHealthDescriptions"]]
            if rolled and all(s == "healthy" for s in states):
                return
            time.sleep(poll)
        raise AwsReleaseError(f"service {self.prefix}-{slot} not stable and healthy after {timeout:.0f} s")

    def switch(self, slot: str) -> None:
        self.elbv2.modify_listener(
            ListenerArn=self.listener_arn,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.target_groups[slot]}],
        )

    def target_health(self, slot: str, seconds: int) -> dict[str, float]:
        """5xx count and average response time of the slot's target group over the last `seconds`."""
        tg_dimension = self.target_groups[slot].split(":")[-1]  # "targetgroup/<name>/<id>"
        dimensions = [
            {"Name": "TargetGroup", "Value": tg_dimension},
            {"Name": "LoadBalancer", "Value": self.load_balancer_dimension},
        ]
        end = datetime.now(UTC)
        figures = {}
        for metric, stat in (("HTTPCode_Target_5XX_Count", "Sum"), ("TargetResponseTime", "Average")):
            points = self.cloudwatch.get_metric_statistics(
                Namespace="AWS/ApplicationELB",
                MetricName=metric,
                Dimensions=dimensions,
                StartTime=end - timedelta(seconds=seconds),
                EndTime=end,
                Period=60,
                Statistics=[stat],
            )["Datapoints"]
            figures[metric] = max((p[stat] for p in points), default=0.0)
        return figures

    def watch(self, slot: str, previous: str, rules: dict[str, Any]) -> dict[str, float] | None:
        """Poll CloudWatch through the window; on a breach switch back and return the figures."""
        deadline = time.monotonic() + rules["window_seconds"]
        while time.monotonic() < deadline:
            figures = self.target_health(slot, max(60, int(rules["window_seconds"])))
            slow = figures["TargetResponseTime"] * 1000 > rules["max_p99_ms"]
            if figures["HTTPCode_Target_5XX_Count"] > rules["max_5xx_count"] or slow:
                self.switch(previous)
                return figures
            time.sleep(rules["interval_seconds"])
        return None

    def release(self, image: str, container: str, family: str, desired: int, rules: dict[str, Any]) -> dict[str, Any]:
        previous = self.live_slot()
        idle, taskdef = self.deploy_idle(image, container, family, desired)
        self.wait_stable(idle, rules["ready_timeout_seconds"], rules.get("poll_seconds", 5.0))
        ready_at = time.monotonic()
        self.switch(idle)
        switched_s = time.monotonic() - ready_at
        breach = self.watch(idle, previous, rules)
        if breach is None:  # the old service is scaled in only once the new one proved itself
            self.ecs.update_service(cluster=self.cluster, service=f"{self.prefix}-{previous}", desiredCount=0)
        live = previous if breach else idle
        status = "rolled_back" if breach else "released"
        return {"status": status, "live": live, "previous": previous, "taskdef": taskdef, "breach": breach} | {
            "seconds_ready_to_switched": switched_s
        }
