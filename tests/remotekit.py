"""Helpers of the remote-cache tests: a real S3 API server on localhost (moto's server mode),
projects with a taskfile, and the ``checkpoint`` command as a subprocess ("a machine")."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "test-key-0123456789abcdef"

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a metadata service on the network
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


class S3Server:
    """moto's S3 server in a thread of this process, on a free port of 127.0.0.1; counts the
    requests it serves."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.requests = 0
        app = self.server._server.app

        def counting(environ: Any, start_response: Any) -> Any:
            self.requests += 1
            return app(environ, start_response)

        self.server._server.app = counting

    def env(self) -> dict[str, str]:
        return {**S3_ENV, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def bucket(self) -> str:
        """A new, empty bucket; its URL with a prefix."""
        import fsspec

        name = "cp-" + uuid.uuid4().hex[:12]
        with patched_env(self.env()):
            fs = fsspec.filesystem("s3", skip_instance_cache=True)
            fs.mkdir(name)
        return f"s3://{name}/cache"

    def stop(self) -> None:
        self.server.stop()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GRAPH = '''
from checkpoint import requires, task


@task
def leaf(i: int):
    def __() -> int:
        return i * i
    return __


@task
def group(g: int):
    @requires([leaf(i) for i in range(190) if i % 9 == g])
    def __(leaves: list[int]) -> int:
        return sum(leaves)
    return __


@task
def main():
    @requires([group(g) for g in range(9)])
    def __(groups: list[int]) -> int:
        return sum(groups)
    return __
'''
"""A 200-task graph: 190 leaves, 9 groups, main."""


@dataclass
class Machine:
    """A project directory with its own cache: one machine of a team."""

    root: Path
    env: dict[str, str]

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    def write(self, source: str) -> None:
        (self.root / "taskfile.py").write_text(textwrap.dedent(source))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, "CP_CACHE_DIR": str(self.cache)}
        proc = subprocess.run(
            [sys.executable, "-m", "checkpoint", *args], cwd=self.root, env=env,
            capture_output=True, text=True, timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"checkpoint {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env, "CP_CACHE_DIR": str(self.cache)}
        return subprocess.Popen([sys.executable, "-m", "checkpoint", *args], cwd=self.root,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_json(self, *args: str) -> dict[str, Any]:
        proc = self.cli("run", "--executor", "inline", "--json", *args)
        return dict(json.loads(proc.stdout))


def machine(root: Path, source: str, **env: str) -> Machine:
    root.mkdir(parents=True, exist_ok=True)
    m = Machine(root, {"CP_REMOTE_KEY": KEY, **env})
    m.write(source)
    return m
