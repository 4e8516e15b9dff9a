"""API key material: random keys shown once, stored as SHA-256 hashes."""

import hashlib
import re
import secrets

KEY_PREFIX = "wgs_"
IMPORTED_KEY = re.compile(r"^[\x21-\x7e]{16,512}$")  # visible ASCII: what an HTTP `Bearer` token can carry


def check_imported_key(key: str) -> None:
    """A key taken over from elsewhere must be 16-512 visible ASCII characters (`ValueError` otherwise)."""
    if not IMPORTED_KEY.match(key):
        raise ValueError("key: 16-512 visible ASCII characters (no spaces)")


def generate_key() -> str:
    """A new random API key (`wgs_` + 43 url-safe characters, 256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 stored for a key (keys are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show in listings: 12 of a key made here (its random
    part starts after `wgs_`), 4 of one taken over, which may be as short as 16."""
    return key[:12] if key.startswith(KEY_PREFIX) else key[:4]
