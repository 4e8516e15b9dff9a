"""Everything that crosses a process boundary: message types, subjects, streams, error codes.

This package does no I/O. Every service imports its wire types from here, so a
change to the contract is a change in exactly one place.
"""

from wgs_contracts.messages import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
