"""Which form of the pairing QR a client gets (`GET /api/instances/{id}/qr`): the PNG, as the original
API always answered, unless its `Accept` header rates JSON higher."""

import pytest
from wgs_api.domain.messaging.services import media_quality, prefers_json


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/json, */*;q=0.8",
        "application/json;q=0.9, image/png;q=0.5",
        "text/html;q=0.5, application/*",
        "APPLICATION/JSON",
    ],
)
def test_clients_preferring_json_get_json(accept: str) -> None:
    assert prefers_json(accept)


@pytest.mark.parametrize(
    "accept",
    [
        "",  # no Accept header
        "*/*",
        "image/png",
        "application/json, text/plain, */*",  # axios's default: a tie keeps the original PNG
        "application/json, image/*",
        "application/json;q=0.5, image/png",
        "application/json;q=nonsense, */*",
        "text/html",
    ],
)
def test_other_clients_get_the_png(accept: str) -> None:
    assert not prefers_json(accept)


def test_the_most_specific_range_decides_the_quality() -> None:
    assert media_quality("*/*;q=0.1, image/*;q=0.5, image/png;q=0.9", "image/png") == 0.9
    assert media_quality("image/png;q=0.9, image/*;q=0.5", "image/png") == 0.9  # order does not matter
    assert media_quality("*/*;q=0.1, image/*;q=0.5", "image/png") == 0.5
    assert media_quality("text/html", "image/png") == 0.0
    assert media_quality("image/png;q=0", "image/png") == 0.0
