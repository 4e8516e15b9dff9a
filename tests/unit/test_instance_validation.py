"""validate_create / check_fits_largest_node: normalisation and the field named by each 422."""

from typing import Any

import pytest
from wgs_api.domain.instances.schemas import InstanceCreate, Resources
from wgs_api.domain.instances.validation import ValidInstance, check_fits_largest_node, validate_create
from wgs_api.errors import Invalid
from wgs_contracts.messages import Provider

MIB = 2**20
GIB = 2**30


def validate(data: InstanceCreate) -> ValidInstance:
    return validate_create(data, default_cpu="1", default_memory="512m", min_memory_bytes=32 * MIB)


def body(**overrides: Any) -> InstanceCreate:
    fields: dict[str, Any] = {
        "phone": "+491701234567",
        "provider": "sandbox",
        "name": "support line",
        "webhook": "https://example.com/hook",
        "resources": Resources(cpu="0.5", memory="1G"),
    }
    fields.update(overrides)
    return InstanceCreate(**fields)


def test_valid_body_is_normalised():
    valid = validate(body())
    assert valid == ValidInstance(
        phone="491701234567",
        provider=Provider.SANDBOX,
        name="support line",
        webhook="https://example.com/hook",
        cpu_limit="0.5",
        memory_limit="1g",
        nano_cpus=500_000_000,
        memory_bytes=GIB,
    )
    assert isinstance(valid.provider, Provider)


def test_phone_without_plus_and_with_spaces():
    assert validate(body(phone=" 491701234567 ")).phone == "491701234567"


def test_numeric_cpu():
    valid = validate(body(resources=Resources(cpu=0.25, memory="256m")))
    assert valid.nano_cpus == 250_000_000
    assert valid.cpu_limit == "0.25"
    assert valid.memory_limit == "256m"
    assert valid.memory_bytes == 256 * MIB


def test_defaults_when_resources_missing():
    valid = validate(body(resources=None, name=None, webhook=None))
    assert valid.cpu_limit == "1"
    assert valid.nano_cpus == 1_000_000_000
    assert valid.memory_limit == "512m"
    assert valid.memory_bytes == 512 * MIB
    assert valid.name is None
    assert valid.webhook is None


def test_defaults_per_missing_resource():
    only_cpu = validate(body(resources=Resources(cpu="2")))
    assert (only_cpu.cpu_limit, only_cpu.memory_limit) == ("2", "512m")
    only_memory = validate(body(resources=Resources(memory="64m")))
    assert (only_memory.cpu_limit, only_memory.memory_limit) == ("1", "64m")


def test_minimum_memory_is_accepted():
    assert validate(body(resources=Resources(memory="32m"))).memory_bytes == 32 * MIB


def test_the_webhook_is_kept_as_given_for_the_url_check():
    """`validate_create` leaves the URL to `validate_url` (integration tests), which resolves it."""
    assert validate(body(webhook="http://10.0.0.1:8080/x")).webhook == "http://10.0.0.1:8080/x"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"phone": "12ab"}, "phone"),
        ({"phone": "123"}, "phone"),
        ({"phone": "mig-test-123"}, "phone"),
        ({"phone": ""}, "phone"),
        ({"phone": "0491701234567"}, "phone"),
        ({"phone": "+1234567890123456"}, "phone"),
        ({"provider": "telegram"}, "provider"),
        ({"provider": "SANDBOX"}, "provider"),
        ({"resources": Resources(cpu="0")}, "resources.cpu"),
        ({"resources": Resources(cpu="-1")}, "resources.cpu"),
        ({"resources": Resources(cpu="x")}, "resources.cpu"),
        ({"resources": Resources(memory="512")}, "resources.memory"),
        ({"resources": Resources(memory="lots")}, "resources.memory"),
        ({"resources": Resources(memory="31m")}, "resources.memory"),
        ({"name": ""}, "name"),
        ({"name": "n" * 257}, "name"),
    ],
)
def test_invalid_names_field(overrides, field):
    with pytest.raises(Invalid) as caught:
        validate(body(**overrides))
    assert caught.value.field == field
    assert caught.value.status_code == 422
    assert caught.value.message.startswith(field)


def test_phone_checked_before_provider():
    with pytest.raises(Invalid) as caught:
        validate(body(phone="x", provider="telegram"))
    assert caught.value.field == "phone"


def test_invalid_default_is_reported_as_resource_field():
    with pytest.raises(Invalid) as caught:
        validate_create(body(resources=None), default_cpu="1", default_memory="nope", min_memory_bytes=0)
    assert caught.value.field == "resources.memory"


def valid(cpu: str = "2", memory: str = "2g") -> ValidInstance:
    return validate(body(resources=Resources(cpu=cpu, memory=memory)))


def test_fits_largest_node_passes_when_unknown():
    check_fits_largest_node(valid(cpu="64", memory="512g"), None, None)


def test_fits_largest_node_passes_when_equal():
    check_fits_largest_node(valid(), 2_000_000_000, 2 * GIB)


def test_cpu_above_largest_node():
    with pytest.raises(Invalid) as caught:
        check_fits_largest_node(valid(), 1_999_999_999, 4 * GIB)
    assert caught.value.field == "resources.cpu"


def test_memory_above_largest_node():
    with pytest.raises(Invalid) as caught:
        check_fits_largest_node(valid(), 4_000_000_000, 2 * GIB - 1)
    assert caught.value.field == "resources.memory"
    assert "2g" in caught.value.message


def test_memory_checked_when_cpu_unknown():
    with pytest.raises(Invalid) as caught:
        check_fits_largest_node(valid(), None, GIB)
    assert caught.value.field == "resources.memory"
