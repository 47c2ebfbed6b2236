"""A remote cache on a local S3 server: pulling N small entries and one large value, against
computing them, with the requests counted.

Usage::

    .venv/bin/python benchmarks/remote_bench.py               # 10,000 small, one 256 MiB value
    .venv/bin/python benchmarks/remote_bench.py -n 2000 --large-mb 64
    .venv/bin/python benchmarks/remote_bench.py --quick       # does it still run? (tests)

It starts moto's S3 server in this process on 127.0.0.1 (counting the HTTP requests it
serves), creates a bucket, and runs the ``checkpoint`` command as a user would, in separate
processes, each "machine" with its own cache:

* ``small``: N no-op tasks ``leaf(i)`` summed by ``main`` (W1's shape).
  ``compute``: machine A's cold run (``-j 2``, processes); ``push``: A pushes the N+1
  entries; ``pull``: machine B's cold ``run`` (its pull phase fetches every entry and
  nothing is computed); ``pull again``: machine C, the same, to see the spread.
* ``large``: ``big()`` returns a value of ``--large-mb`` MiB (a bytes pattern: cheap to
  make, so "compute" is mostly pickling and storing it) and ``main`` its length, same
  steps (the pulling run loads neither: both are pulled).

For each step: wall time, requests served by the server, and the peak memory (VmHWM) of
the ``checkpoint`` process (Linux). moto is one Python process answering one request at a time
per thread: a real object store answers many more at once, so the times are an upper bound
for the request-bound steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

SMALL = '''
from checkpoint import requires, task


@task
def leaf(i: int):
    def __() -> int:
        return i
    return __


@task
def main():
    @requires([leaf(i) for i in range({n})])
    def __(values: list[int]) -> int:
        return sum(values)
    return __
'''

LARGE = '''
from checkpoint import requires, task


@task
def big():
    def __() -> bytes:
        return bytes(range(256)) * ({mb} * 4096)
    return __


@task
def main():
    @requires(big())
    def __(value: bytes) -> int:
        return len(value)
    return __
'''

# Runs the CLI in a child and reports its peak memory: VmHWM (KiB), the high-water mark of
# its own memory. (ru_maxrss would not do: Linux carries it over from the parent, this
# process, whose S3 server holds every object in memory.)
RUNNER = textwrap.dedent('''
    import json, re, sys
    from checkpoint.cli import main
    try:
        main(sys.argv[2:])
    except SystemExit as exc:
        code = exc.code or 0
    else:
        code = 0
    with open("/proc/self/status") as status:
        peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
    with open(sys.argv[1], "w") as f:
        json.dump({"code": code, "maxrss_kib": peak}, f)
''')


class Server:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--tasks", type=int, default=10_000, help="small entries (default 10,000)")
    parser.add_argument("--large-mb", type=int, default=256, help="size of the large value in MiB")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: does it still run?")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.large_mb = 50, 1
    server = Server()
    env = {
        **os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL_S3": server.endpoint, "CP_REMOTE_KEY": "bench-key-0123456789abcdef",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    import fsspec

    work = Path(tempfile.mkdtemp(prefix="cp-remote-bench-"))
    rows: list[tuple[str, str, float, int, float]] = []
    try:
        for name, source in (("small", SMALL.format(n=args.tasks)),
                             ("large", LARGE.format(mb=args.large_mb))):
            bucket = "bench-" + uuid.uuid4().hex[:8]
            fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
            env["CP_REMOTE"] = f"s3://{bucket}/cache"
            for step, machine, cli in (
                ("compute", "a", ["run", "-j", "2", "--no-remote", "--no-progress"]),
                ("push", "a", ["push"]),
                ("pull (cold run)", "b", ["run", "-j", "2", "--no-progress", "--json"]),
                ("pull (cold run) again", "c", ["run", "-j", "2", "--no-progress", "--json"]),
            ):
                project = work / name / machine
                project.mkdir(parents=True, exist_ok=True)
                (project / "taskfile.py").write_text(source)
                before = server.requests
                seconds, rss, out = _timed(project, cli, env)
                if cli[0] == "run" and "--json" in cli:
                    doc = json.loads(out)
                    if doc["ran"] != 0:
                        raise SystemExit(f"{name}: the pulling run computed {doc['ran']} tasks")
                rows.append((name, step, seconds, server.requests - before, rss))
                print(f"{name:5} {step:22} {seconds:8.2f} s {server.requests - before:8,} requests "
                      f"{rss:8.0f} MiB max RSS", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.server.stop()
    print()
    print("| workload | step | time (s) | requests | max RSS (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for name, step, seconds, requests, rss in rows:
        label = (f"{args.tasks:,} small entries" if name == "small"
                 else f"one {args.large_mb} MiB value")
        print(f"| {label} | {step} | {seconds:.2f} | {requests:,} | {rss:.0f} |")


def _timed(project: Path, cli: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    report = project / ".rss.json"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, str(report), *cli], cwd=project, env=env,
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    result = json.loads(report.read_text()) if report.exists() else {"code": done.returncode}
    if result["code"] != 0 or done.returncode != 0:
        raise SystemExit(f"checkpoint {' '.join(cli)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, result["maxrss_kib"] / 1024, done.stdout


if __name__ == "__main__":
    main()
