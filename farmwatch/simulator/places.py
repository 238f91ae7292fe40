"""Where the simulated company's people, farms and operators are, and what latency that costs.

Coordinates are city centres (public gazetteer values, rounded). Latency follows the physics in
:mod:`farmwatch.detectors.distance`: light in fibre bounds distance to RTT x 100 km; real paths run at 40-76.5 km per ms of RTT (CBG/Octant range
up to the empirical maximum), plus a few ms of access network. East Asia to the US costs 118-178 ms
(Oregon/N. California/us-east-1 to Seoul), so operator sessions there are drawn from that range
plus the operator's own VPN detour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from farmwatch.detectors.distance import great_circle_km


@dataclass(frozen=True)
class City:
    name: str
    country: str
    latitude: float
    longitude: float
    timezone: str


CITIES = (
    City("New York", "US", 40.71, -74.01, "America/New_York"),
    City("Boston", "US", 42.36, -71.06, "America/New_York"),
    City("Atlanta", "US", 33.75, -84.39, "America/New_York"),
    City("Raleigh", "US", 35.78, -78.64, "America/New_York"),
    City("Miami", "US", 25.76, -80.19, "America/New_York"),
    City("Chicago", "US", 41.88, -87.63, "America/Chicago"),
    City("Austin", "US", 30.27, -97.74, "America/Chicago"),
    City("Minneapolis", "US", 44.98, -93.27, "America/Chicago"),
    City("Denver", "US", 39.74, -104.99, "America/Denver"),
    City("Phoenix", "US", 33.45, -112.07, "America/Phoenix"),
    City("Seattle", "US", 47.61, -122.33, "America/Los_Angeles"),
    City("San Francisco", "US", 37.77, -122.42, "America/Los_Angeles"),
    City("Portland", "US", 45.52, -122.68, "America/Los_Angeles"),
)
"""Where the company's employees live (and claim to)."""

FARM_TOWNS = (
    # Public laptop-farm cases: Litchfield Park AZ (Chapman, DOJ 2024), Nashville TN (Knoot, DOJ 2024),
    # Edison NJ (DOJ 2025); plus two more US towns so farms are not all in those three.
    City("Litchfield Park", "US", 33.49, -112.36, "America/Phoenix"),
    City("Nashville", "US", 36.16, -86.78, "America/Chicago"),
    City("Edison", "US", 40.52, -74.41, "America/New_York"),
    City("Columbus", "US", 39.96, -83.00, "America/New_York"),
    City("Sacramento", "US", 38.58, -121.49, "America/Los_Angeles"),
)

TRAVEL_ABROAD = (
    City("London", "GB", 51.51, -0.13, "Europe/London"),
    City("Mexico City", "MX", 19.43, -99.13, "America/Mexico_City"),
    City("Toronto", "CA", 43.65, -79.38, "America/Toronto"),
    City("Seoul", "KR", 37.57, 126.98, "Asia/Seoul"),
)

# Anchors: latency-probe targets in US cloud regions (documentation addresses, RFC 5737).
ANCHORS = (
    ("us-east", "203.0.113.10", 443, 39.04, -77.49),  # Ashburn, VA
    ("us-central", "203.0.113.20", 443, 32.78, -96.80),  # Dallas, TX
    ("us-west", "203.0.113.30", 443, 37.34, -121.89),  # San Jose, CA
    ("us-north", "203.0.113.40", 443, 41.88, -87.63),  # Chicago, IL
    ("us-northwest", "203.0.113.50", 443, 45.60, -121.18),  # The Dalles, OR
)

CORPORATE_NETWORK = "198.51.100.0/24"
"""The company's own egress (offices and the corporate VPN), as configured in ``[geo]``."""
VPN_CONCENTRATOR = (39.04, -77.49)
"""Corporate VPN hub in Ashburn: a laptop on the VPN reaches anchors through it (a hairpin)."""

OPERATOR_RTT_MS = (150.0, 230.0)
"""Minimum RTT from a US laptop to an operator in North-East Asia, through the operator's VPN:
118-178 ms US-Seoul (measured cloud-region RTTs, see :mod:`farmwatch.detectors.distance`) plus a VPN detour."""

KM_PER_RTT_MS = (50.0, 76.5)
"""Realistic path speeds: CBG/Octant 40-60 km/ms (Gueye et al., IMC 2004; Octant, NSDI 2007), empirical maximum 76.5."""
ACCESS_MS = (1.5, 9.0)
"""Home access network RTT before the path leaves the ISP (cable/fibre/Wi-Fi)."""


def path_rtt_ms(rng: np.random.Generator, km: float) -> float:
    """A realistic minimum RTT over ``km`` of path: never below the light bound (km / 100)."""
    return float(rng.uniform(*ACCESS_MS) + km / rng.uniform(*KM_PER_RTT_MS))


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(great_circle_km(a[0], a[1], b[0], b[1]))


def salted_hash(seed: int, name: str) -> str:
    """A stand-in for the agent's salted SHA-256 of a MAC or BSSID."""
    return hashlib.sha256(f"farmwatch-sim:{seed}:{name}".encode()).hexdigest()
