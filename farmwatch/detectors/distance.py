"""Distance on the globe and what a round-trip time says about it.

Light in fibre covers ~200 km per ms one way, so a round trip of ``r`` ms bounds the distance to
``r * 100`` km: a physical limit that congestion and detours can only make looser, never tighter
(zackw/active-geolocator ``calibration.py``). Real paths are slower: the empirical
maximum is ~76.5 km per ms of RTT and constraint-based geolocation (Gueye et al., IMC 2004 "CBG";
Octant, NSDI 2007) works with 40-60 km/ms. Measured: US coast to coast 70-78 ms, us-east-1 to Seoul
178 ms, Oregon to Seoul 118 ms (public cloud inter-region latency tables).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
LIGHT_KM_PER_RTT_MS = 100.0
"""Physical bound: distance <= RTT x 100 km (fibre, ~2/3 c, there and back)."""
SLOW_PATH_KM_PER_RTT_MS = 40.0
"""Low end of the CBG/Octant range: a heavily inflated but still realistic path."""
ACCESS_OVERHEAD_MS = 20.0
"""RTT a path spends before it goes anywhere (home Wi-Fi, DSL/cable access, the app's own queueing)."""

Number = float | npt.NDArray[np.float64]


def great_circle_km(lat1: Number, lon1: Number, lat2: Number, lon2: Number) -> Number:
    """Haversine distance in km between points given in degrees (scalars or numpy arrays)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    result = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(result) if np.ndim(result) == 0 else result


def max_distance_km(rtt_ms: Number) -> Number:
    """The farthest a peer answering in ``rtt_ms`` can be (light bound)."""
    return np.asarray(rtt_ms) * LIGHT_KM_PER_RTT_MS if np.ndim(rtt_ms) else float(rtt_ms) * LIGHT_KM_PER_RTT_MS


def light_floor_ms(distance_km: Number) -> Number:
    """The smallest RTT physics allows over ``distance_km``."""
    return distance_km / LIGHT_KM_PER_RTT_MS


def likely_min_distance_km(rtt_ms: Number) -> Number:
    """A conservative lower estimate of the distance behind a minimum RTT.

    Assumes the worst realistic path (``ACCESS_OVERHEAD_MS`` spent locally, then 40 km per ms):
    a peer at least this far is what the RTT makes likely. Evidence, not proof: a pathological local
    path could be slower still, which is why findings built on it never claim certainty.
    """
    return np.maximum(np.asarray(rtt_ms, dtype=float) - ACCESS_OVERHEAD_MS, 0.0) * SLOW_PATH_KM_PER_RTT_MS
