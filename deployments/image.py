"""Bento → OCI image without a Docker daemon (buildah, chroot isolation) → any registry, ECR included.

The default base is a Debian bookworm image built offline from the Debian mirror (debootstrap), with the
machine's extra CA certificates (a corporate proxy's, say) trusted inside, so pip can install the Bento's
requirements during the build. It is built once and kept in buildah's storage.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 # buildah, skopeo, debootstrap, docker-registry with fixed argv lists
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LOCAL_BASE = "localhost/potable-base:bookworm"
BASE_PACKAGES = "python3 python3-venv python3-pip python3-dev ca-certificates"


class ImageError(RuntimeError):
    """A build or push step failed; the message carries the tool's own error."""


@dataclass(frozen=True)
class PushedImage:
    reference: str  # registry/repository:tag
    digest: str  # sha256:…


def _run(argv: list[str], what: str, timeout: float = 1800, env: dict | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)  # nosec B603
    if done.returncode != 0:
        raise ImageError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def image_exists(reference: str) -> bool:
    done = subprocess.run(["buildah", "inspect", "--type", "image", reference], capture_output=True)  # nosec B603 B607
    return done.returncode == 0


def ensure_base_image(mirror: str, ca_dir: Path, reference: str = LOCAL_BASE) -> str:
    """Debian minbase + Python 3.11 + the CA certificates in `ca_dir`; built once per machine."""
    if image_exists(reference):
        return reference
    with tempfile.TemporaryDirectory(prefix="potable-base-") as scratch:
        rootfs, ctx = Path(scratch) / "rootfs", Path(scratch) / "ctx"
        (ctx / "certs").mkdir(parents=True)
        _run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror], "debootstrap")
        _run(["tar", "-C", str(rootfs), "-cf", str(ctx / "rootfs.tar"), "."], "tar of the base rootfs")
        for cert in sorted(ca_dir.glob("*.crt")) if ca_dir.is_dir() else []:
            shutil.copy(cert, ctx / "certs" / cert.name)
        (ctx / "Containerfile").write_text(
            "FROM scratch\nADD rootfs.tar /\nCOPY certs/ /usr/local/share/ca-certificates/\n"
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"{BASE_PACKAGES} && update-ca-certificates && rm -rf /var/lib/apt/lists/* "
            "&& ln -sf /usr/bin/python3 /usr/bin/python\n"
            "ENV UV_COMPILE_BYTECODE=1 PIP_BREAK_SYSTEM_PACKAGES=1 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "
            "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n",
            encoding="utf-8",
        )
        build = ["buildah", "bud", "--isolation", "chroot", "-t", reference, "-f", str(ctx / "Containerfile"), str(ctx)]
        _run(build, "building the base image")
    return reference


def containerize(bento_tag: str, reference: str, env: dict[str, str]) -> str:
    """`bentoml containerize` with the buildah backend (chroot isolation: no daemon, no cgroups needed).

    `env` (core.environment.child_env) names the BentoML store the Bento is in."""
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    argv = [bentoml_cli, "containerize", "--backend", "buildah", "--opt", "isolation=chroot", "--opt", "layers"]
    _run([*argv, "-t", reference, bento_tag], f"containerizing {bento_tag}", env=env)
    return reference


def push(reference: str, destination: str, tls_verify: bool, credentials: str | None = None) -> PushedImage:
    """Push to `destination` (registry/repository:tag) and return the digest the registry stored."""
    with tempfile.TemporaryDirectory(prefix="potable-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        argv = ["buildah", "push", f"--tls-verify={str(tls_verify).lower()}", "--digestfile", str(digest_file)]
        if credentials:
            argv += ["--creds", credentials]
        _run([*argv, reference, f"docker://{destination}"], f"pushing {reference} to {destination}")
        return PushedImage(destination, digest_file.read_text(encoding="utf-8").strip())


def registry_digest(destination: str, tls_verify: bool, credentials: str | None = None) -> str:
    """What the registry itself says the tag's manifest digest is (skopeo inspect)."""
    argv = ["skopeo", "inspect", f"--tls-verify={str(tls_verify).lower()}", "--format", "{{.Digest}}"]
    if credentials:
        argv += ["--creds", credentials]
    return _run([*argv, f"docker://{destination}"], f"inspecting {destination}").strip()


def is_ecr(registry: str) -> bool:
    return ".dkr.ecr." in registry


def publish(
    bento_tag: str,
    tag: str,
    registry: str,
    repository: str,
    tls_verify: bool,
    credentials: str | None,
    env: dict[str, str],
) -> PushedImage:
    """Containerize the Bento as localhost/<repository>:<tag>, push it, and check the registry's digest."""
    local = containerize(bento_tag, f"localhost/{repository}:{tag}", env)
    pushed = push(local, f"{registry}/{repository}:{tag}", tls_verify, credentials)
    stored = registry_digest(pushed.reference, tls_verify, credentials)
    if stored != pushed.digest:
        raise ImageError(f"registry reports {stored} for {pushed.reference}, the push wrote {pushed.digest}")
    return pushed
