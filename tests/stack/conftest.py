"""Fixtures of the stack tests (mark `stack`): one Docker daemon and one build of the images per test run, and a
compose project of deploy/docker-compose.yaml with tests/stack/docker-compose.override.yaml. Without Docker they
skip with the reason; with BLUEGREEN_REQUIRE_DOCKER=1 (CI) they fail instead."""

from __future__ import annotations

import os

import pytest

from tests.stack import images
from tests.stack.compose import Stack
from tests.stack.docker import DockerUnavailable, start_daemon, stop_daemon


@pytest.fixture(scope="session")
def docker(tmp_path_factory):
    try:
        docker, process = start_daemon(tmp_path_factory.mktemp("dockerd"))
    except DockerUnavailable as exc:
        if os.environ.get("BLUEGREEN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker is required (BLUEGREEN_REQUIRE_DOCKER=1): {exc}")
        pytest.skip(f"no Docker: {exc}")
    try:
        yield docker
    finally:
        stop_daemon(process)


@pytest.fixture(scope="session")
def built_images(docker):
    images.build(docker, log=lambda line: print(f"[stack] {line}", flush=True))
    return docker


@pytest.fixture(scope="module")
def stack(built_images, tmp_path_factory):
    stack = Stack(built_images, tmp_path_factory.mktemp("stack"))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
