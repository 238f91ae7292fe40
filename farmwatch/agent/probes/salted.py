"""Salted SHA-256 of identifiers that could name a network or person outside the company.

The salt is per company (agent config, ``ProbeContext.salt``), so equal values compare equal
across the fleet while the raw value (a display serial, a MAC) cannot be read back or looked up.
"""

from __future__ import annotations

import hashlib


def salted_sha256(salt: str, value: str) -> str:
    """Hex SHA-256 of ``salt`` and ``value``, separated so ("ab","c") and ("a","bc") differ."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()
