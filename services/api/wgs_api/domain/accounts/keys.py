"""API key material: random keys shown once, stored as SHA-256 hashes."""

import hashlib
import secrets

KEY_PREFIX = "wgs_"


def generate_key() -> str:
    """A new random API key (`wgs_` + 43 url-safe characters, 256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 stored for a key (keys are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show in listings."""
    return key[:12]
