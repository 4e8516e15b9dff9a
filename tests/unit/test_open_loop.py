"""The benchmarks' open-loop load generator (`bench.open_loop`, a C program) against a small HTTP
server on loopback, in the test's own process."""

import asyncio
import functools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import open_loop as generator
from bench.open_loop import build_request, open_loop
from tests.support.loopback_http import ANSWER_DELAY_SECONDS, serve, serving

PAUSE_SECONDS = 0.15


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serving(serve) as url:
        yield url


async def test_every_request_is_answered_at_the_offered_rate(base_url: str) -> None:
    started = time.monotonic()
    result = await open_loop(f"{base_url}/ok", {"to": "1"}, {"Authorization": "Bearer x"}, rate=200, seconds=0.5)
    assert result == result | {"offered_per_second": 200, "completed": 100, "failed": 0, "failures": {}}
    assert time.monotonic() - started >= 0.49  # the schedule spreads them, not a burst
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["p50_ms"] < 50


async def test_latency_includes_the_servers_time(base_url: str) -> None:
    result = await open_loop(f"{base_url}/slow", {}, {}, rate=100, seconds=0.3)
    assert result["completed"] == 30
    assert result["p50_ms"] >= ANSWER_DELAY_SECONDS * 1000


async def test_an_answer_is_counted_once_it_is_whole(base_url: str) -> None:
    result = await open_loop(f"{base_url}/in-pieces", {}, {}, rate=100, seconds=0.1)
    assert result["completed"] == 10
    assert result["p50_ms"] >= ANSWER_DELAY_SECONDS * 1000


def generator_pids() -> list[int]:
    """The generators this process started and that still run."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or generator.BINARY_PREFIX not in (entry / "cmdline").read_text():
                continue
            parent = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("PPid:"))
        except OSError:
            continue  # gone meanwhile
        if int(parent.split()[1]) == os.getpid():
            pids.append(int(entry.name))
    return pids


async def test_latency_counts_from_when_a_request_was_due() -> None:
    """A generator that falls behind its schedule counts the lag against the server.

    The generator is stopped for 150 ms (a stand-in for a generator starved of CPU): the requests
    due meanwhile go out late, and their latency includes the wait. Measured from when they went
    out, every latency would be about a millisecond.
    """
    first_request = asyncio.Event()
    async with serving(functools.partial(serve, on_request=first_request.set)) as url:
        run = asyncio.create_task(open_loop(f"{url}/ok", {}, {}, rate=100, seconds=1.0))
        await asyncio.wait_for(first_request.wait(), timeout=10)  # its schedule has started
        (pid,) = generator_pids()
        os.kill(pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(PAUSE_SECONDS, os.kill, pid, signal.SIGCONT)
        result = await run
    assert result["completed"] == 100
    assert result["p99_ms"] >= 100
    # 15 of the 100 were due while it was stopped: more than 5%, so the p95 counts the stop too
    assert result["p95_ms"] >= 50


@pytest.mark.parametrize(
    ("path", "kind"), [("/error", "status 500"), ("/no-length", "bad_answers"), ("/hang-up", "lost")]
)
async def test_answers_that_are_not_a_success_count_as_failures_of_their_kind(
    base_url: str, path: str, kind: str
) -> None:
    result = await open_loop(f"{base_url}{path}", {}, {}, rate=100, seconds=0.1)
    assert result["completed"] == 0
    assert result["failed"] == 10
    assert result["failures"] == {kind: 10}
    assert result["p50_ms"] is None
    assert result["p95_ms"] is None


async def test_a_server_resetting_every_connection_fails_every_request() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # a reset, before or after the request arrived

    async with serving(close_at_once) as url:
        result = await open_loop(f"{url}/", {}, {}, rate=200, seconds=0.25)
    assert result["completed"] == 0
    assert result["failed"] == 50
    assert result["failures"] == {"lost": 50}


async def test_a_request_due_while_every_connection_is_busy_fails(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "WARM_CONNECTIONS", 1)
    monkeypatch.setattr(generator, "MAX_CONNECTIONS", 2)
    result = await open_loop(f"{base_url}/slow", {}, {}, rate=1000, seconds=0.01)  # 10 due within 10 ms
    assert result["completed"] == 2
    assert result["failed"] == 8
    assert result["failures"] == {"no_connection": 8}


async def test_unanswered_requests_fail_after_the_answers_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the generator closes the connection
        writer.close()

    monkeypatch.setattr(generator, "MAX_SECONDS", 0.2)
    async with serving(never_answer) as url:
        result = await open_loop(f"{url}/", {}, {}, rate=100, seconds=0.05)
    assert result["completed"] == 0
    assert result["failed"] == 5
    assert result["failures"] == {"unanswered": 5}


async def test_a_server_that_is_not_listening_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="cannot connect"):
        await open_loop("http://127.0.0.1:9/", {}, {}, rate=10, seconds=0.1)


def test_the_generator_is_compiled_once_per_version_of_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    binary = generator.generator_binary()
    assert binary.parent == tmp_path / "wgs-bench"
    assert binary.name.startswith(generator.BINARY_PREFIX)
    built_at = binary.stat().st_mtime_ns
    assert generator.generator_binary() == binary
    assert binary.stat().st_mtime_ns == built_at
    changed = tmp_path / "open_loop.c"
    changed.write_bytes(generator.SOURCE.read_bytes() + b"\n/* another version */\n")
    monkeypatch.setattr(generator, "SOURCE", changed)
    assert generator.generator_binary() != binary
    assert not list(tmp_path.glob("wgs-bench/*.partial"))


def test_a_missing_compiler_or_a_broken_source_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="needs a C compiler: 'no-such-cc'"):
        generator.generator_binary("no-such-cc")
    broken = tmp_path / "open_loop.c"
    broken.write_text("int main(void) { return missing; }\n")
    monkeypatch.setattr(generator, "SOURCE", broken)
    with pytest.raises(RuntimeError, match=r"compiling open_loop\.c failed: .*missing"):
        generator.generator_binary()
    assert not list(tmp_path.glob("wgs-bench/*"))


def test_the_request_is_built_once_with_its_headers() -> None:
    host, port, request = build_request("http://127.0.0.1:8080/api/x?y=1", {"to": "1"}, {"Authorization": "Bearer k"})
    assert (host, port) == ("127.0.0.1", 8080)
    assert request.startswith(b"POST /api/x?y=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in request
    assert request.endswith(b'\r\n\r\n{"to": "1"}')
    with pytest.raises(ValueError, match="only http"):
        build_request("https://example.org/", {}, {})
