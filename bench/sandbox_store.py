"""Benchmark: accepted sends/s of one sandbox provider and its p99, journal store vs the old whole-state store.

Each variant runs the provider in its own process (`python -m bench.sandbox_store --serve <variant>`)
on a unix socket with a fresh state folder, exactly as `python -m wgs_sandbox` does, and this
process drives it like the node agent would: it pairs it, then `--flight` keep-alive connections
send `--sends` messages in a closed loop while one more connection long-polls `/events` and acks
them (so the outbox stays small, as in production). The `sent` history grows with every send.

Variants (same run, same machine):

- `journal`: the provider as shipped (append-only journal, group commit, compaction);
- `whole-state`: the previous store as baseline: every commit re-encodes the whole state and
  rewrites `state.json` (temporary file, fsync, rename, fsync of the folder), group-committed.

Every loop is bounded in count and time. Writes JSON to `bench/results/sandbox_store.json` and
prints a table. Usage: `python -m bench.sandbox_store [--sends 5000] [--flight 32]`.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stack import ROOT, percentile

if TYPE_CHECKING:
    from wgs_sandbox.provider import SandboxProvider

MAX_SECONDS = 300.0
VARIANTS = ("whole-state", "journal")
SANDBOX_PATH = ROOT / "providers" / "sandbox"


# --- the provider process ----------------------------------------------------------------------


def whole_state_provider_class() -> "type[SandboxProvider]":
    """The shipped provider with the previous store: the whole state rewritten on every commit."""
    from wgs_sandbox.provider import SandboxProvider

    class WholeStateProvider(SandboxProvider):
        """As before the journal: each request that changes something re-encodes the whole state;
        a commit writes the newest encoding (temporary file, fsync, rename, fsync of the folder)."""

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self._whole_lock = asyncio.Lock()
            self._whole_pending = b""
            self._whole_version = 0
            self._whole_written = 0

        def write_back(self) -> bool:
            return False  # the previous store saved acks like any change

        def _seal(self) -> bool:
            if not self._ops:
                return False
            self._ops.clear()
            self._whole_pending = json.dumps(
                {
                    "phone_id": self.phone_id,
                    "next_seq": self.next_seq,
                    "outbox": self.outbox,
                    "sent": self.sent,
                    "delivered": list(self.delivered),
                    "version": 1,
                },
                separators=(",", ":"),
            ).encode()
            self._whole_version += 1
            return True

        async def commit(self) -> None:
            self._seal()
            wanted = self._whole_version
            async with self._whole_lock:
                if self._whole_written >= wanted:
                    return
                payload, version = self._whole_pending, self._whole_version
                await asyncio.to_thread(write_whole, self.data_dir, payload)
                self._whole_written = version

    return WholeStateProvider


def write_whole(folder: Path, payload: bytes) -> None:
    """The previous `store.write`."""
    target = folder / "state.json"
    temporary = target.with_name("state.json.tmp")
    with open(temporary, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, target)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def serve(variant: str) -> None:
    """Run one provider variant as `python -m wgs_sandbox` would (environment: WGS_SOCKET, WGS_DATA_DIR...)."""
    import wgs_sandbox.__main__ as entry

    if variant == "whole-state":
        entry.SandboxProvider = whole_state_provider_class()  # type: ignore[misc]
    entry.main()


# --- the load generator -----------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the provider socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: str) -> "Connection":
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def call(self, method: str, target: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nHost: p\r\nContent-Length: {len(payload)}\r\n\r\n"
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


async def start_provider(variant: str, work: Path) -> tuple[subprocess.Popen, str]:
    """A provider process of `variant` answering on its socket."""
    data = work / "data"
    data.mkdir()
    socket_path = str(work / "p.sock")
    env = {
        **os.environ,
        "WGS_SOCKET": socket_path,
        "WGS_DATA_DIR": str(data),
        "WGS_INSTANCE_ID": "1",
        "WGS_PHONE": "491700000001",
        "PYTHONPATH": os.pathsep.join([str(SANDBOX_PATH), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sandbox_store", "--serve", variant], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError):
            probe = await Connection.open(socket_path)
            status, _ = await probe.call("GET", "/health")
            probe.close()
            if status == 200:
                return process, socket_path
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"{variant} provider did not start")
        await asyncio.sleep(0.05)


async def pair(path: str) -> None:
    connection = await Connection.open(path)
    try:
        for _ in range(100):
            status, body = await connection.call("GET", "/qr")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        status, body = await connection.call("POST", "/sandbox/scan", {"qr": body["qr"]})
        if status != 200:
            raise RuntimeError(f"pairing failed: {status} {body}")
    finally:
        connection.close()


async def drive(path: str, sends: int, flight: int) -> dict:
    """`sends` sends over `flight` connections while an agent-like consumer acks the events."""
    latencies: list[float] = []
    accepted = 0
    next_index = 0
    done = asyncio.Event()
    deadline = time.perf_counter() + MAX_SECONDS
    acked = 0

    async def sender() -> None:
        nonlocal accepted, next_index
        connection = await Connection.open(path)
        try:
            while next_index < sends and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                body = {"id": f"m{index}", "to": "491700000002", "content": {"type": "text", "text": f"hello {index}"}}
                started = time.perf_counter()
                status, _ = await connection.call("POST", "/messages", body)
                latencies.append(time.perf_counter() - started)
                accepted += status == 200
        finally:
            connection.close()

    async def consumer() -> None:
        nonlocal acked
        connection = await Connection.open(path)
        cursor = 0
        try:
            while not done.is_set() and time.perf_counter() < deadline:
                _, page = await connection.call("GET", f"/events?after={cursor}&wait=0.2")
                if page["events"]:
                    cursor = page["events"][-1]["seq"]
                    await connection.call("POST", "/events/ack", {"seq": cursor})
                    acked = cursor
        finally:
            connection.close()

    consuming = asyncio.create_task(consumer())
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(flight)))
    elapsed = time.perf_counter() - started
    done.set()
    await consuming
    return {
        "sends": sends,
        "accepted": accepted,
        "seconds": round(elapsed, 3),
        "sends_per_second": round(accepted / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "acked_seq": acked,
    }


async def measure(variant: str, sends: int, flight: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="wgs-sb-", dir="/tmp"))  # unix socket paths must stay short
    process, path = await start_provider(variant, work)
    try:
        await pair(path)
        result = await drive(path, sends, flight)
        files = sorted(p.name for p in (work / "data").iterdir())
        result["state_bytes"] = sum((work / "data" / name).stat().st_size for name in files)
        result["state_files"] = files
        return {"variant": variant, **result}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


async def run(sends: int, flight: int, variants: list[str], out: Path | None) -> dict:
    results = [await measure(variant, sends, flight) for variant in variants]
    report = {"benchmark": "sandbox_store", "sends": sends, "flight": flight, "cpus": os.cpu_count(), "runs": results}
    print(f"{'variant':<12} {'sends/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'accepted':>9} {'state bytes':>12}")
    for r in results:
        print(
            f"{r['variant']:<12} {r['sends_per_second']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r['accepted']:>9} {r['state_bytes']:>12}"
        )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--flight", type=int, default=32)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sandbox_store.json")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    asyncio.run(run(args.sends, args.flight, args.variant or list(VARIANTS), args.out))


if __name__ == "__main__":
    main()
