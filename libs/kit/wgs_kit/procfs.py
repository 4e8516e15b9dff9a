"""What Linux's `/proc/<pid>/stat` says of a process: alive, stopped by a signal, started when."""


def stat_fields(pid: int) -> list[str] | None:
    """The fields of `/proc/<pid>/stat` after the command name, its state first; None without such a
    process. (The name is in parentheses and may itself hold spaces and parentheses: the fields
    start after the last `)`.)"""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split() or None
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is neither a zombie nor dead."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def pid_stopped(pid: int) -> bool:
    """True when the process is stopped by a signal (SIGSTOP)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] == "T"


def pid_start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): a pid reused by another process differs."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None
