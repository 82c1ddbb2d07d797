"""The images of the stack tests, built locally because no image registry is reachable: a Debian bookworm base
made with debootstrap and `docker import`, PostgreSQL and Prometheus from Debian's packages on it, and the
project's own image from deploy/Dockerfile on it (BASE build argument). The base, PostgreSQL and Prometheus images
are kept in the daemon's data root between runs (their builds are cached layers); the project image is rebuilt
every run (its dependency layer stays cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.stack.docker import REPO, Docker, DockerUnavailable, docker_cli

BASE_IMAGE = "bluegreen-base:bookworm"
POSTGRES_IMAGE = "bluegreen-test-postgres:latest"
PROMETHEUS_IMAGE = "bluegreen-test-prometheus:latest"
APP_IMAGE = "bluegreen-dagster:latest"
MIRROR = os.environ.get("BLUEGREEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HERE = Path(__file__).parent


def host_ca_bundle() -> str | None:
    """The CA bundle this host's pip trusts (a TLS-intercepting proxy's CA may be in it), passed to the build as
    a secret; None when the host has none."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_base(docker: Docker, log) -> None:
    if docker.has_image(BASE_IMAGE):
        return
    if not shutil.which("debootstrap"):
        raise DockerUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bluegreen-rootfs-") as root:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", root, MIRROR], check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker_cli(), "import", "-", BASE_IMAGE], stdin=tar.stdout, env=docker.env(),
                                  capture_output=True, timeout=600)
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr.decode(errors='replace')}")
    log(f"base image {BASE_IMAGE}: {time.monotonic() - started:.0f}s")


def build(docker: Docker, log=print) -> None:
    """Every image the stack needs, in order."""
    build_base(docker, log)
    for tag, dockerfile in ((POSTGRES_IMAGE, "postgres.Dockerfile"), (PROMETHEUS_IMAGE, "prometheus.Dockerfile")):
        started = time.monotonic()
        docker.run("build", "-q", "--build-arg", f"BASE={BASE_IMAGE}", "-t", tag, "-f", str(HERE / dockerfile),
                   str(HERE), timeout=900)
        log(f"{tag}: {time.monotonic() - started:.0f}s")
    started = time.monotonic()
    secret = host_ca_bundle()
    docker.run("build", "-q", "--build-arg", f"BASE={BASE_IMAGE}", "-t", APP_IMAGE, "-f",
               str(REPO / "deploy" / "Dockerfile"), *(["--secret", f"id=pip_ca,src={secret}"] if secret else []),
               str(REPO), timeout=1800)
    log(f"{APP_IMAGE}: {time.monotonic() - started:.0f}s")
