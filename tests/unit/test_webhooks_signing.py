"""Standard Webhooks signatures, checked against the specification's test vector and the documented receiver."""

import runpy
from pathlib import Path

import pytest
from wgs_webhooks.signing import signature, signed_headers

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = runpy.run_path(str(DOCS / "webhook_receiver_example.py"))
verify_webhook = EXAMPLE["verify_webhook"]
InvalidWebhook = EXAMPLE["InvalidWebhook"]

# The test vector of the Standard Webhooks reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'


def test_signature_matches_the_standard_webhooks_test_vector():
    assert signature(SECRET, MSG_ID, TIMESTAMP, PAYLOAD) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_of_a_webhook_request():
    headers = signed_headers(SECRET, MSG_ID, TIMESTAMP, PAYLOAD)
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(TIMESTAMP)
    assert headers["webhook-signature"] == signature(SECRET, MSG_ID, TIMESTAMP, PAYLOAD)
    assert headers["content-type"] == "application/json"


def test_a_rotated_out_secret_in_its_grace_signs_too():
    previous = "whsec_" + "B" * 32
    headers = signed_headers(SECRET, MSG_ID, TIMESTAMP, PAYLOAD, previous_secret=previous)
    assert headers["webhook-signature"] == " ".join(
        [signature(SECRET, MSG_ID, TIMESTAMP, PAYLOAD), signature(previous, MSG_ID, TIMESTAMP, PAYLOAD)]
    )
    for secret in (SECRET, previous):
        verify_webhook(secret, headers, PAYLOAD, now=TIMESTAMP)


def test_documented_receiver_accepts_our_signature_and_rejects_tampering():
    headers = signed_headers(SECRET, MSG_ID, TIMESTAMP, PAYLOAD)
    verify_webhook(SECRET, headers, PAYLOAD, now=TIMESTAMP + 10)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, headers, PAYLOAD + b" ", now=TIMESTAMP)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, {**headers, "webhook-id": "msg_other"}, PAYLOAD, now=TIMESTAMP)
    with pytest.raises(InvalidWebhook):
        verify_webhook("whsec_" + "A" * 32, headers, PAYLOAD, now=TIMESTAMP)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, headers, PAYLOAD, now=TIMESTAMP + 301)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, PAYLOAD)
    rotated = {**headers, "webhook-signature": "v1,bm90IGl0 " + headers["webhook-signature"]}
    verify_webhook(SECRET, rotated, PAYLOAD, now=TIMESTAMP)


def test_the_docs_show_the_tested_receiver_verbatim():
    assert (DOCS / "webhook_receiver_example.py").read_text() in (DOCS / "webhooks.md").read_text()
