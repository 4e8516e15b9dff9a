"""`bench.cpu`: the machine's busy and steal shares, from `/proc/stat` readings."""

import subprocess
import sys

import pytest
from wgs_kit.waiting import wait_until

from bench import cpu
from bench.open_loop import generator_binary


def reading(*, busy: int = 0, idle: int = 0, iowait: int = 0, steal: int = 0) -> list[int]:
    """A `/proc/stat` cpu line (user, nice, system, idle, iowait, irq, softirq, steal) in ticks."""
    return [busy, 0, 0, idle, iowait, 0, 0, steal]


def test_shares_are_percent_of_the_machines_time_between_two_readings() -> None:
    before = reading(busy=1_000, idle=5_000, iowait=10, steal=20)
    after = reading(busy=1_600, idle=5_200, iowait=30, steal=120)  # +600 busy, +200 idle, +20 iowait, +100 steal
    assert cpu.machine_shares(before, after) == {"busy_percent": 65.2, "steal_percent": 10.9}


def test_no_time_between_readings_is_no_share() -> None:
    same = reading(busy=5, idle=5)
    assert cpu.machine_shares(same, same) == {"busy_percent": 0.0, "steal_percent": 0.0}


def test_the_worst_second_of_steal_is_found_among_the_samples() -> None:
    sampler = cpu.MachineSampler()
    # 9 readings a quarter of a second apart: 100 ticks each quarter, 50 of them stolen in the 4th and the 5th.
    steal = [0, 0, 0, 0, 50, 100, 100, 100, 100]
    sampler.readings = [reading(busy=100 * n - steal[n], steal=steal[n]) for n in range(9)]
    summary = sampler.summary()
    assert summary["steal_percent"] == 12.5  # 100 of 800 ticks
    assert summary["worst_second_steal_percent"] == 25.0  # a second holding both: 100 of its 400 ticks
    assert summary["busy_percent"] == 87.5


async def test_the_sampler_reads_the_machine_while_its_block_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "MACHINE_SAMPLE_SECONDS", 0.01)
    async with cpu.MachineSampler() as sampler:

        async def sampled_twice() -> bool:
            return len(sampler.readings) >= 3

        await wait_until(sampled_twice, timeout=10, interval=0.01, what="two samples")
    assert len(sampler.readings) >= 4  # the first, some while it ran, the last
    assert all(len(one) == 8 for one in sampler.readings)
    summary = sampler.summary()
    assert 0 <= summary["steal_percent"] <= summary["worst_second_steal_percent"] <= 100
    assert 0 <= summary["busy_percent"] <= 100


def test_a_child_that_exited_counts_toward_its_parents_component(monkeypatch: pytest.MonkeyPatch) -> None:
    """A phase's load generator may run in a child process that is gone by the reading after it."""
    monkeypatch.setattr(cpu, "COMPONENTS", (("pytest", "tests"),))  # this process; the child's command line differs
    before = cpu.cpu_reading()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=30)
    after = cpu.cpu_reading()
    assert after["tests"] - before["tests"] >= 0.25


def test_the_open_loop_generator_is_the_load_generator() -> None:
    binary = generator_binary()
    assert cpu.component_of(f"{binary} 127.0.0.1 8080 500 5000 60 32 512") == "load generator"
    assert cpu.component_of("/work/.venv/bin/python -m wgs_api") == "api"
