"""Checks on a create request; each failure is a 422 naming the field."""

import re
from dataclasses import dataclass

from wgs_contracts.messages import Provider
from wgs_contracts.resources import InvalidQuantity, format_cpu, normalize_memory, parse_cpu, parse_memory

from wgs_api.domain.instances.schemas import InstanceCreate
from wgs_api.errors import Invalid

PHONE = re.compile(r"^\+?[1-9][0-9]{5,14}$")
NAME_MAX = 256


@dataclass(frozen=True, kw_only=True)
class ValidInstance:
    """A create request after validation and normalisation."""

    phone: str
    provider: Provider
    name: str | None
    webhook: str | None
    cpu_limit: str
    memory_limit: str
    nano_cpus: int
    memory_bytes: int


def validate_create(
    data: InstanceCreate, *, default_cpu: str, default_memory: str, min_memory_bytes: int
) -> ValidInstance:
    """Validate and normalise a create request (the phone loses its `+`); the `webhook` URL is
    checked apart (`webhooks.urls.validate_url`: it resolves the host)."""
    phone = data.phone.strip()
    if not PHONE.match(phone):
        raise Invalid("phone: expected 6-15 digits, optionally starting with +", field="phone")
    try:
        provider = Provider(data.provider)
    except ValueError:
        known = ", ".join(p.value for p in Provider)
        raise Invalid(f"provider: unknown provider, expected one of {known}", field="provider") from None
    if data.name is not None and not 0 < len(data.name) <= NAME_MAX:
        raise Invalid(f"name: 1-{NAME_MAX} characters", field="name")
    resources = data.resources
    cpu = default_cpu if resources is None or resources.cpu is None else resources.cpu
    memory = default_memory if resources is None or resources.memory is None else resources.memory
    try:
        nano_cpus = parse_cpu(cpu)
    except InvalidQuantity as exc:
        raise Invalid(f"resources.cpu: {exc}", field="resources.cpu") from None
    try:
        memory_bytes = parse_memory(memory)
    except InvalidQuantity as exc:
        raise Invalid(f"resources.memory: {exc}", field="resources.memory") from None
    if memory_bytes < min_memory_bytes:
        raise Invalid(f"resources.memory: at least {min_memory_bytes // 2**20}m", field="resources.memory")
    return ValidInstance(
        phone=phone.lstrip("+"),
        provider=provider,
        name=data.name,
        webhook=data.webhook,
        cpu_limit=format_cpu(nano_cpus),
        memory_limit=normalize_memory(memory),
        nano_cpus=nano_cpus,
        memory_bytes=memory_bytes,
    )


def check_fits_largest_node(valid: ValidInstance, largest_nano_cpus: int | None, largest_memory: int | None) -> None:
    """422 when the request exceeds what even the largest node offers (it could never run)."""
    if largest_nano_cpus and valid.nano_cpus > largest_nano_cpus:
        raise Invalid(
            f"resources.cpu: {valid.cpu_limit} exceeds the node maximum ({format_cpu(largest_nano_cpus)})",
            field="resources.cpu",
        )
    if largest_memory and valid.memory_bytes > largest_memory:
        raise Invalid(
            f"resources.memory: {valid.memory_limit} exceeds the node maximum ({largest_memory // 2**20}m)",
            field="resources.memory",
        )
