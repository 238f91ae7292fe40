"""Networks: which egress belongs to the company, and which country a peer address is registered in."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import iptocc
import numpy as np
import pandas as pd

from farmwatch.detectors.frame import Frames


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def corporate_mask(frames: Frames, cidrs: tuple[str, ...]) -> np.ndarray:
    """Per record: True when it left through the company's own network (office or corporate VPN)."""
    reports = frames.reports
    mask = (reports["network_kind"] == "corporate").to_numpy()
    if not cidrs:
        return mask
    networks = _networks(cidrs)
    unique = pd.unique(reports["source_ip"].dropna())
    inside = set()
    for text in unique:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if any(address in network for network in networks):
            inside.add(text)
    return mask | reports["source_ip"].isin(inside).to_numpy()


@lru_cache(maxsize=65536)
def peer_country(address: str) -> str | None:
    """ISO country of a public address from the regional registries' delegations (``iptocc``, offline);
    None for private, reserved or malformed addresses. Registration country, not a street address:
    VPN exits and proxies move it, so it is evidence about the path, never proof about a person."""
    try:
        code: str | None = iptocc.country_code(address)
    except ValueError:
        return None
    return code
