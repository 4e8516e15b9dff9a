"""API key material: random, prefixed, hashed deterministically, shown only by prefix."""

import hashlib
import re
import string

from wgs_api.domain.accounts.keys import KEY_PREFIX, display_prefix, generate_key, hash_key

URLSAFE = set(string.ascii_letters + string.digits + "-_")


def test_keys_are_unique():
    keys = {generate_key() for _ in range(1000)}
    assert len(keys) == 1000


def test_key_format():
    key = generate_key()
    assert KEY_PREFIX == "wgs_"
    assert key.startswith("wgs_")
    secret = key.removeprefix("wgs_")
    assert set(secret) <= URLSAFE
    # base64url carries 6 bits a character: 43 characters hold at least 256 bits.
    assert len(secret) * 6 >= 256
    assert len(secret) >= 43


def test_random_parts_differ_not_just_prefix():
    a, b = generate_key(), generate_key()
    assert a[4:] != b[4:]
    assert a[4:16] != b[4:16]


def test_hash_is_sha256_hex():
    key = generate_key()
    digest = hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hashlib.sha256(key.encode()).hexdigest()


def test_hash_is_deterministic_and_distinguishes_keys():
    key = generate_key()
    assert hash_key(key) == hash_key(key)
    assert hash_key(key) != hash_key(generate_key())
    assert hash_key(key) != hash_key(key + "x")
    assert key not in hash_key(key)


def test_display_prefix_shows_only_twelve_characters():
    key = generate_key()
    prefix = display_prefix(key)
    assert prefix == key[:12]
    assert len(prefix) == 12
    assert prefix.startswith("wgs_")
    assert prefix != key
    assert len(prefix) < len(key)
