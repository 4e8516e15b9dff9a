"""Offline image builds: a debootstrap base image, a wheelhouse, and the project's images.

Nothing here needs a registry: the base image is imported from a Debian rootfs
built with debootstrap, and Python packages are built into wheels on the host.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from wgs_devstack.docker_engine import docker_client, mounts_under
from wgs_devstack.processes import ProcessError, kill_and_reap, run_command, tail

BASE_IMAGE = "wgs-base:bookworm"
PROVIDERS = ("sandbox",)
SERVICES = ("api", "scheduler", "node-agent", "state", "webhooks")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_WHEELHOUSE_STAMP = ".wgs-stamp"
_DEPS_STAMP = ".deps-stamp"
_log = logging.getLogger(__name__)
_BASE_CHANGES = (
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["python3"]',
)
# Removed from the rootfs before it is imported: caches, docs and device nodes.
_ROOTFS_CLUTTER = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log",
    "dev",
)


def cache_dir() -> Path:
    """``$WGS_CACHE_DIR``, else ``~/.cache/wgs``."""
    return Path(os.environ.get("WGS_CACHE_DIR") or Path.home() / ".cache" / "wgs")


def _docker(host: str, *args: str) -> list[str]:
    return ["docker", "-H", host, *args]


def _docker_env() -> dict[str, str]:
    # The legacy builder works against any engine and needs no buildx plugin.
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def _log_for(what: str) -> Path:
    return cache_dir() / "logs" / (re.sub(r"[^A-Za-z0-9_.-]", "_", what) + ".log")


async def image_exists(docker_host: str, tag: str) -> bool:
    """True if the engine at ``docker_host`` has an image ``tag``."""
    async with docker_client(docker_host) as client:
        response = await client.get(f"/images/{quote(tag, safe='')}/json")
    return response.status_code == 200


def _trim_rootfs(rootfs: Path) -> None:
    for rel in _ROOTFS_CLUTTER:
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    # Keep the copyright files, drop the rest of /usr/share/doc.
    for path in sorted((rootfs / "usr/share/doc").glob("**/*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name != "copyright":
            path.unlink()


async def base_rootfs_tarball() -> Path:
    """Return the cached debootstrap rootfs tarball, building it if absent.

    Uses ``$WGS_DEBIAN_MIRROR`` (default deb.debian.org); needs root and debootstrap.
    """
    out = cache_dir() / "base-bookworm.tar"
    if out.is_file():
        return out
    if shutil.which("debootstrap") is None:
        raise ProcessError("debootstrap not found (apt-get install debootstrap)")
    out.parent.mkdir(parents=True, exist_ok=True)
    log = _log_for("base-bookworm")
    mirror = os.environ.get("WGS_DEBIAN_MIRROR") or DEFAULT_MIRROR
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=out.parent))
    rootfs = work / "rootfs"
    partial = work / "rootfs.tar"
    try:
        await run_command(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            log_path=log,
            timeout=1800,
        )
        _trim_rootfs(rootfs)
        await run_command(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            log_path=log,
        )
        partial.replace(out)
    finally:
        # Never recurse into a leftover /proc or /sys mount of a failed debootstrap.
        if not mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
    return out


async def ensure_base_image(docker_host: str) -> None:
    """Import ``wgs-base:bookworm`` into the engine unless it already has it."""
    if await image_exists(docker_host, BASE_IMAGE):
        return
    tarball = await base_rootfs_tarball()
    changes = [arg for change in _BASE_CHANGES for arg in ("--change", change)]
    await run_command(
        _docker(docker_host, "import", *changes, str(tarball), BASE_IMAGE),
        log_path=_log_for("base-bookworm"),
        env=_docker_env(),
    )


def _wheel_packages(project_root: Path) -> list[str]:
    config = tomllib.loads((project_root / "pyproject.toml").read_text())
    packages: list[str] = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return packages


def _digest(project_root: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(project_root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_files(project_root: Path) -> list[Path]:
    """Every file of the packages the project wheel contains."""
    files: list[Path] = []
    for package in _wheel_packages(project_root):
        files += sorted(p for p in (project_root / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _run_logged(argv: list[str], cwd: Path, log: Path) -> None:
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(argv)}\n".encode())
        fh.flush()
        code = subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise ProcessError(f"{argv[1]} failed ({code}); log {log}:\n{tail(log)}")


def build_wheelhouse(project_root: Path, out_dir: Path) -> bool:
    """Build wheels of the project and its locked runtime dependencies into ``out_dir``.

    Wheels are built on the host (which reaches PyPI) for the interpreter running
    this code: CPython 3.11, like Debian bookworm's. Two stamps keep it cheap: when
    uv.lock changes, ``out_dir`` is emptied and everything rebuilt (so no stale
    version can be picked); when only pyproject.toml or the package sources change,
    only the ``wgs`` wheel is. Returns True if anything was built.
    """
    lock = project_root / "uv.lock"  # dependency wheels come from the lock alone (--frozen)
    deps_digest = _digest(project_root, [lock])
    full_digest = _digest(project_root, [lock, project_root / "pyproject.toml", *_source_files(project_root)])
    deps_stamp, full_stamp = out_dir / _DEPS_STAMP, out_dir / _WHEELHOUSE_STAMP
    if full_stamp.is_file() and full_stamp.read_text() == full_digest:
        return False
    uv = shutil.which("uv")
    if uv is None:
        raise ProcessError("uv not found; it is needed to export the lock and build wheels")
    log = _log_for("wheelhouse")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    if not (deps_stamp.is_file() and deps_stamp.read_text() == deps_digest):
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as tmp:
            requirements = str(Path(tmp) / "requirements.txt")
            _run_logged(
                [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--quiet",
                 "--format", "requirements-txt", "-o", requirements],
                project_root, log,
            )  # fmt: skip
            _run_logged(
                [uv, "run", "--no-project", "--with", "pip", "--python", sys.executable,
                 "python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out_dir),
                 "-r", requirements],
                project_root, log,
            )  # fmt: skip
        deps_stamp.write_text(deps_digest)
    for old in out_dir.glob("wgs-*.whl"):
        old.unlink()
    _run_logged([uv, "build", "--wheel", "--out-dir", str(out_dir), str(project_root)], project_root, log)
    full_stamp.write_text(full_digest)
    return True


async def build_image(
    docker_host: str,
    dockerfile: Path,
    tag: str,
    context: Path,
    build_args: Mapping[str, str] | None = None,
) -> None:
    """``docker build`` (legacy builder, no network) with ``BASE_IMAGE=wgs-base:bookworm``.

    Output goes to ``<cache>/logs/build-<tag>.log``; failures raise with its tail.
    """
    args = {"BASE_IMAGE": BASE_IMAGE, **(build_args or {})}
    argv = _docker(docker_host, "build", "--network=none", "-f", str(dockerfile), "-t", tag)
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    argv.append(str(context))
    log = _log_for(f"build-{tag}")
    log.unlink(missing_ok=True)
    await run_command(argv, log_path=log, env=_docker_env(), timeout=1800)


def image_tag(name: str) -> str:
    """Tag of a project image: ``wgs-provider-<name>:latest`` or ``wgs-<service>:latest``."""
    if name in PROVIDERS:
        return f"wgs-provider-{name}:latest"
    if name in SERVICES:
        return f"wgs-{name}:latest"
    raise ValueError(f"unknown image {name!r}; known: {', '.join(PROVIDERS + SERVICES)}")


async def build_all(docker_host: str, project_root: Path, which: Iterable[str] = ("sandbox",)) -> dict[str, str]:
    """Build the named provider/service images and return ``{name: tag}``.

    Ensures the base image first, and the wheelhouse only when a service is requested.
    """
    names = list(which)
    tags = {name: image_tag(name) for name in names}
    await ensure_base_image(docker_host)
    if any(name in SERVICES for name in names):
        await asyncio.to_thread(build_wheelhouse, project_root, project_root / "wheelhouse")
    for name in names:
        kind = "providers" if name in PROVIDERS else "services"
        started = time.monotonic()
        await build_image(docker_host, project_root / kind / name / "Dockerfile", tags[name], project_root)
        _log.info("built %s in %.1fs", tags[name], time.monotonic() - started)
    return tags


async def copy_image(src_host: str, dst_host: str, tag: str) -> None:
    """Copy an image between engines with ``docker save | docker load``."""
    log = _log_for(f"copy-{tag}")
    log.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    env = _docker_env()
    with log.open("ab") as fh:
        save = await asyncio.create_subprocess_exec(
            *_docker(src_host, "save", tag), stdout=write_fd, stderr=fh, env=env, start_new_session=True
        )
        load = await asyncio.create_subprocess_exec(
            *_docker(dst_host, "load", "-q"),
            stdin=read_fd,
            stdout=fh,
            stderr=fh,
            env=env,
            start_new_session=True,
        )
        os.close(write_fd)
        os.close(read_fd)
        try:
            save_code, load_code = await asyncio.gather(save.wait(), load.wait())
        except BaseException:
            await kill_and_reap(save)
            await kill_and_reap(load)
            raise
    if save_code or load_code:
        raise ProcessError(f"copying {tag} failed (save {save_code}, load {load_code}); log {log}:\n{tail(log)}")
