"""Resource quantities as tenants write them ("0.5" CPUs, "512m" memory) and as Docker wants them."""

import re
from typing import Final

MEMORY_PATTERN: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)[bB]?\s*$")
MEMORY_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
NANO: Final = 1_000_000_000


class InvalidQuantity(ValueError):
    """A CPU or memory quantity that cannot be understood."""


def parse_memory(text: str) -> int:
    """Bytes in a memory quantity like `512m`, `1g`, `256k` or `1048576`; raise on anything else."""
    match = MEMORY_PATTERN.match(text)
    if not match:
        raise InvalidQuantity(f"memory must look like 512m or 1g, got {text!r}")
    value = float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()]
    if value < 1:
        raise InvalidQuantity("memory must be positive")
    return int(value)


def normalize_memory(text: str) -> str:
    """The canonical spelling of a memory quantity: `"1 G"` and `"1gb"` become `"1g"`."""
    parse_memory(text)
    match = MEMORY_PATTERN.match(text)
    assert match is not None
    return f"{match.group(1)}{match.group(2).lower()}"


def parse_cpu(value: str | float | int) -> int:
    """Nano-CPUs in a CPU quantity like `0.5` or `2`; raise unless it is a positive number."""
    if isinstance(value, bool):
        raise InvalidQuantity("cpu must be a positive number")
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise InvalidQuantity(f"cpu must be a positive number, got {value!r}") from None
    if not cpus > 0 or cpus != cpus or cpus == float("inf"):
        raise InvalidQuantity(f"cpu must be a positive number, got {value!r}")
    nanos = round(cpus * NANO)
    if nanos < 1_000_000:
        raise InvalidQuantity("cpu must be at least 0.001")
    return nanos


def format_cpu(nanos: int) -> str:
    """`"0.5"` for 500_000_000 nano-CPUs: the seed's `cpuLimit` string."""
    return f"{nanos / NANO:g}"
