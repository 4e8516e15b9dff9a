"""`bench.send`'s closed loop: wrk against a small HTTP server on loopback, in the test's own
process, and the clear refusal when wrk is missing."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.send import WRK_MISSING, wrk_closed_loop
from tests.support.loopback_http import serve, serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serving(serve) as url:
        yield url


async def test_every_answered_request_counts_as_accepted(base_url: str, tmp_path: Path) -> None:
    result = await wrk_closed_loop(f"{base_url}/ok", {"to": "1"}, {"Authorization": "Bearer x"}, 4, 1, tmp_path)
    assert result["tool"] == "wrk"
    assert result["connections"] == 4
    assert result["sends"] > 0
    assert result["accepted"] == result["sends"]
    assert result["per_second"] == pytest.approx(result["accepted"] / result["seconds"], rel=0.01)


async def test_error_answers_are_not_accepted(base_url: str, tmp_path: Path) -> None:
    result = await wrk_closed_loop(f"{base_url}/error", {"to": "1"}, {}, 2, 1, tmp_path)
    assert result["sends"] > 0
    assert result["accepted"] == 0
    assert result["per_second"] == 0


def bench_send(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench.send ARGS` with its results going to `tmp_path`, the environment changed by `env`."""
    return subprocess.run(
        [sys.executable, "-m", "bench.send", *args, "--out", str(tmp_path / "send.json")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_wrk_the_benchmark_refuses_to_start(tmp_path: Path) -> None:
    """No silent fallback to a slower client, whose figures measured the client (as the httpx
    closed loop did: 7 ms of CPU per request)."""
    no_programs = tmp_path / "bin"
    no_programs.mkdir()
    finished = bench_send(tmp_path, PATH=str(no_programs))
    assert finished.returncode == 2
    assert WRK_MISSING in finished.stderr
    assert not (tmp_path / "send.json").exists()


@pytest.mark.parametrize(
    ("curve", "error"),
    [("300,fast", "--curve: comma-separated rates"), (",".join(["100"] * 9), "--curve: at most 8 rates of 0-5000")],
    ids=["not a rate", "too many rates"],
)
def test_a_bad_latency_curve_is_refused_before_anything_starts(tmp_path: Path, curve: str, error: str) -> None:
    finished = bench_send(tmp_path, "--curve", curve)
    assert finished.returncode == 2
    assert error in finished.stderr
    assert not (tmp_path / "send.json").exists()
