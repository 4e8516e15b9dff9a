"""Open-loop HTTP load: requests start on a fixed schedule, whatever the answers do.

A closed loop (wrk) waits for an answer before its next request, so a slow server lowers the
rate instead of showing as latency. An open loop keeps the schedule: a request is due every
1/rate seconds, on an idle keep-alive connection or on a new one.

Latency is measured from the moment a request was due, not from when it went out. When the
generator itself falls behind, that counts against the server, never in its favour (the
"coordinated omission" of naive load generators).

The generator shares the machine with the server it measures, so it is a small C program
(`open_loop.c`, compiled here once per version of its source with the machine's `cc`): one
thread, epoll, the request's bytes built once, nanosecond timers. At 500 requests/s against a
trivial asyncio server on loopback it costs 0.09 ms of CPU per request (user and kernel), and
that server's median answer measures 0.25 ms; the asyncio generator it replaced cost 0.18-0.20 ms
and measured 0.9 ms, and, as a Python process, it paused for its own garbage collections.
Against the gateway at 500/s, in the same stack, alternating: p50 6.9-10.0 against 12.0-13.8 ms,
p99 24.0-38.6 against 31.5-40.0 ms (4 runs each). Answers must carry a `Content-Length`
(uvicorn's do); anything else counts as a failure, and failures are reported by kind.
"""

import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from bench.stack import percentile

SOURCE = Path(__file__).with_name("open_loop.c")
BINARY_PREFIX = "wgs-open-loop"  # `bench.cpu` counts processes of this name as the load generator
MAX_SECONDS = 60.0  # how long the answers of a run may take after its last request is due
WARM_CONNECTIONS = 32  # opened before the first request is due, so the run does not pay for them
MAX_CONNECTIONS = 512  # a request due when this many are busy fails


def build_request(url: str, body: dict, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """(host, port, the bytes of one POST of `body` as JSON to `url`)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs: {url}")
    port = parts.port or 80
    payload = json.dumps(body).encode()
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.hostname}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return parts.hostname, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def generator_binary(compiler: str = "cc") -> Path:
    """The generator compiled from `open_loop.c`, cached by the digest of its source."""
    source = SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wgs-bench"
    binary = cache / f"{BINARY_PREFIX}-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    command = [compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(partial), str(SOURCE)]
    try:
        compiled = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"the open-loop generator needs a C compiler: {compiler!r} is not installed") from None
    if compiled.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE.name} failed: {compiled.stderr.strip()}")
    partial.replace(binary)  # atomic: a concurrent run sees the whole binary or none
    return binary


def failure_kinds(failures: dict) -> dict[str, int]:
    """The generator's failures by kind, those that happened: `status <code>` for each refusing
    status, `lost`, `bad_answers`, `no_connection`, `unanswered` (see `open_loop.c`)."""
    refused = {f"status {code}": count for code, count in failures["statuses"].items()}
    return refused | {kind: count for kind, count in failures.items() if kind != "statuses" and count}


async def open_loop(url: str, body: dict, headers: dict[str, str], rate: float, seconds: float) -> dict:
    """POST `body` to `url` `rate` times a second for `seconds`; latency of each, from when it was due."""
    host, port, request = build_request(url, body, headers)
    binary = await asyncio.to_thread(generator_binary)
    count = max(1, int(rate * seconds))
    arguments = [socket.gethostbyname(host), port, rate, count, MAX_SECONDS, WARM_CONNECTIONS, MAX_CONNECTIONS]
    process = await asyncio.create_subprocess_exec(
        binary,
        *map(str, arguments),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        output, errors = await asyncio.wait_for(process.communicate(request), count / rate + MAX_SECONDS + 30)
    finally:
        if process.returncode is None:  # cancelled or timed out: stop it by its PID
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the open-loop generator failed ({process.returncode}): {errors.decode().strip()}")
    result = json.loads(output)
    latencies = [nanoseconds / 1e9 for nanoseconds in result["latencies_ns"]]
    return {
        "offered_per_second": round(rate, 1),
        "completed": len(latencies),
        "failed": result["failed"],
        "failures": failure_kinds(result["failures"]),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
    }
