"""The simulated company: employees with the confounders real fleets have, and laptop farms of every kind.

Each device gets a profile (who really holds it, where it is, how it is driven). ``make_fleet`` is
deterministic for a seed. The kinds are the issue's list; their shares are our illustrative choice
(no public base rates exist). Farm behaviours follow the public cases (DOJ 2024-2025, Microsoft
Jasper Sleet, Mandiant UNC5267).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from farmwatch.simulator.places import CITIES, FARM_TOWNS, TRAVEL_ABROAD, City, salted_hash

LEGIT_KINDS = {
    # kind: share of legitimate devices. "plain" carries ordinary variety (trackpads, slow typists).
    "plain": 0.30,
    "helpdesk": 0.08,  # approved tool, a helpdesk session or two with injected input
    "own-desktop": 0.05,  # reaches their own desktop: an unapproved tool, outbound, local input
    "traveller": 0.08,  # a few days in another US city or abroad
    "bilingual": 0.05,  # Korean/Chinese/Russian input configured
    "night-owl": 0.05,  # works 13:00-01:00 local
    "couple": 0.06,  # two employees in one household (devices come in pairs)
    "coworking": 0.06,  # a few colleagues share a coworking space two days a week
    "office": 0.12,  # works from a corporate office (company egress) three days a week
    "corporate-vpn": 0.08,  # always on the corporate VPN (company egress, hairpinned RTTs)
    "macro": 0.03,  # AutoHotkey-style macros inject input
    "desk-kvm": 0.02,  # a desk KVM switch, external monitor, lid closed
    "big-lan": 0.02,  # a large home LAN (dozens of neighbours)
}

FARM_KINDS = {
    "rmm-direct": 0.2,  # AnyDesk/RustDesk reached directly from abroad (inbound peer)
    "rmm-relay": 0.2,  # TeamViewer/AnyDesk through the vendor relay (outbound peer)
    "rdp-vpn": 0.15,  # RDP over a VPN the farm laptop joins
    "ipkvm-default": 0.15,  # PiKVM/TinyPilot/JetKVM/NanoKVM with their default identities
    "ipkvm-spoofed": 0.15,  # re-branded IP-KVM: ordinary-looking USB ids and EDID
    "single-facilitator": 0.15,  # one laptop at a facilitator's home, relayed RMM
}

OPERATOR_PEERS = (
    # Addresses a direct session arrives from, checked against the registries with iptocc: the DPRK's
    # own block (175.45.176.0/22) is rare in practice; operators mostly come through China, Russia
    # or a rented VPS/VPN exit (Mandiant UNC5267; Microsoft, Jasper Sleet).
    "175.45.176.71", "113.200.0.9", "221.192.0.7", "95.165.0.4", "45.76.10.20", "210.152.0.5",
)
RMM_TOOLS = {"anydesk": "AnyDesk.exe", "rustdesk": "rustdesk.exe", "teamviewer": "TeamViewer.exe"}
RELAY_PORTS = {"anydesk": 443, "rustdesk": 21117, "teamviewer": 5938}  # vendor relay ports (vendors' firewall documentation)
KVM_DEFAULTS = (
    # (vendor_id, product_id, manufacturer, product, EDID name): detectors/data/ipkvm.csv, with sources.
    ("1d6b", "0104", "PiKVM", "PiKVM Composite Device", "PiKVM V4 Plus"),
    ("1d6b", "0104", "tinypilot", "Multifunction USB Device", "TinyPilot"),
    ("1d6b", "0104", "JetKVM", "JetKVM USB Emulation Device", "JetKVM"),
    ("3346", "1009", "sipeed", "NanoKVM", "NanoKVM"),
)


@dataclass
class Network:
    """A place a laptop reports from: its egress and LAN identities."""

    name: str
    city: City
    source_ip: str
    network_kind: str
    asn: int
    asn_org: str
    gateway_mac_hash: str | None
    wifi_bssid_hash: str | None
    lan_neighbors: int
    corporate_vpn: bool = False
    gateway_ip: str = "192.168.1.1"
    # Shared egress (``shared_egress.py``): the public addresses this network's traffic leaves from
    # (a carrier's CGNAT pool, a VPN's exits) and how many hours one mapping lasts. Empty: ``source_ip``.
    egress_pool: tuple[str, ...] = ()
    egress_hold_hours: int = 1

    def egress_at(self, slot: int) -> str:
        """The public address of this network in 5-minute ``slot``: every laptop behind one router
        gets the same one (the mapping is keyed on the network), a stranger in the pool its own."""
        if not self.egress_pool:
            return self.source_ip
        block = slot // (12 * self.egress_hold_hours)
        digest = hashlib.sha256(f"{self.name}:{block}".encode()).digest()
        return self.egress_pool[int.from_bytes(digest[:4], "big") % len(self.egress_pool)]


@dataclass
class Device:
    device_id: str
    employee_id: str
    label: str  # legit | farm
    kind: str
    claimed: City
    home: Network
    os: str
    approved_tools: list[str] = field(default_factory=list)
    timezone: str = ""
    layouts: list[str] = field(default_factory=lambda: ["00000409"])
    input_methods: list[str] = field(default_factory=list)
    schedule: str = "day"  # day | night-owl | operator-asia | operator-us
    always_on: bool = False
    key_p10: float = 70.0
    mouse_rate: float = 110.0
    helpdesk_days: tuple[int, ...] = ()
    own_desktop_days: tuple[int, ...] = ()
    trip: tuple[Network, int, int] | None = None  # (where, first day, days)
    other_place: tuple[Network, tuple[int, ...]] | None = None  # (coworking/office, weekdays)
    macro_share: float = 0.0
    docked: bool = False
    tool: str | None = None  # farm RMM tool
    path: str | None = None  # direct | relay | rdp-vpn | ipkvm
    kvm: tuple[str, str, str, str, str] | None = None
    operator_rtt_ms: float = 0.0
    operator_ip: str = ""
    vpn_product: str | None = None
    seq_reset_day: int | None = None  # the agent reinstalled on the running system that day (records.py)
    # How the agent lives (records.py): switched off at night (a new boot each morning), slot ranges
    # [first, last) in which its agent was not running, a re-enrolment after IT reimaged it (slot),
    # and (from slot, count) reports the collector refused because their seq was taken.
    shuts_down: bool = False
    agent_stops: tuple[tuple[int, int], ...] = ()
    agent_restarts: int = 0  # brief restarts (upgrades) at random awake windows: one window lost each
    reenrol_slot: int | None = None
    seq_conflicts: tuple[int, int] | None = None
    paste_share: float = 0.0  # IP-KVM: share of operated windows typed by "paste as keys" (too regular)
    local_like: float = 0.0  # farms: share of operator windows whose input looks local (a good link)


class _Ids:
    """Deterministic addresses and identifiers for the simulated world."""

    def __init__(self, seed: int, rng: np.random.Generator) -> None:
        self.seed, self.rng, self.count = seed, rng, 0

    def network(self, city: City, kind: str = "residential", org: str = "Cox Communications") -> Network:
        self.count += 1
        n = self.count
        ip = f"{(n >> 16) % 200 + 20}.{(n >> 8) % 256}.{n % 256}.{self.rng.integers(2, 250)}"
        if kind == "mobile":
            ip = f"172.58.{n % 256}.{self.rng.integers(2, 250)}"
        return Network(
            name=f"net{n}", city=city, source_ip=ip, network_kind=kind, asn=7000 + n % 50, asn_org=org,
            gateway_mac_hash=salted_hash(self.seed, f"gw{n}"), wifi_bssid_hash=salted_hash(self.seed, f"ap{n}"),
            lan_neighbors=int(self.rng.integers(2, 12)),
        )


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> list[str]:
    """``n`` kinds: first every kind once (in random order, as far as ``n`` allows), then draws by share."""
    names = list(shares)
    weights = np.array([shares[k] for k in names])
    rest = rng.choice(names, size=max(n - len(names), 0), p=weights / weights.sum())
    return [str(kind) for kind in rng.permutation(names)[:n]] + [str(kind) for kind in rest]


def make_fleet(seed: int, legit: int, farms: int, days: int, stealthy: bool = False) -> list[Device]:
    """``legit`` legitimate and ``farms`` farm devices, deterministic for ``seed``.

    ``stealthy`` farms do everything the simulator knows to hide: own lines, operators on the
    employee's hours, the roster's address at the farm, no foreign input settings, a good link
    (40-80 % of operated windows look local) and laptops that sleep half the time. A stress test
    of where detection ends, not a model of typical farms."""
    rng = np.random.default_rng(seed)
    ids = _Ids(seed, rng)
    office_city = CITIES[0]
    office = Network("office", office_city, "198.51.100.20", "corporate", 64500, "Example Corp",
                     salted_hash(seed, "office-gw"), salted_hash(seed, "office-ap"), 180)
    cowork = {c.name: ids.network(c, "residential", "WeWork-like coworking") for c in CITIES}
    devices: list[Device] = []

    def new_device(label: str, kind: str, claimed: City, home: Network, employee: str | None = None) -> Device:
        n = len(devices)
        device = Device(
            device_id=f"dev-{salted_hash(seed, f'dev{n}')[:10]}", employee_id=employee or f"E{10000 + n}",
            label=label, kind=kind, claimed=claimed, home=home, os=str(rng.choice(["windows", "darwin", "linux"],
                                                                                     p=[0.6, 0.3, 0.1])),
            timezone=claimed.timezone, key_p10=float(rng.uniform(45, 110)),
            mouse_rate=float(rng.choice([60.0, 90.0, 125.0])) + float(rng.normal(0, 5)),
        )
        devices.append(device)
        return device

    for kind in _pick(rng, LEGIT_KINDS, legit):
        if len(devices) >= legit:
            break
        city = office_city if kind == "office" else CITIES[int(rng.integers(len(CITIES)))]
        home = ids.network(city)
        device = new_device("legit", kind, city, home)
        _legit_traits(device, kind, rng, ids, days, office, cowork)
        if kind == "couple" and len(devices) < legit:
            new_device("legit", kind, city, home)  # the partner: same household, own laptop
    farm_kinds = _pick(rng, FARM_KINDS, farms)
    placed = site = 0
    while placed < farms:
        kind = farm_kinds[site]
        site += 1
        town = FARM_TOWNS[int(rng.integers(len(FARM_TOWNS)))]
        room = farms - placed - max(len(FARM_KINDS) - site, 0)  # leave a laptop for every kind not yet placed
        size = 1 if kind == "single-facilitator" else min(int(rng.integers(2, 7)), max(room, 1))
        own_line = kind != "single-facilitator" and rng.random() < 0.2
        shared = ids.network(town, "residential", "Comcast")
        operator_asia = rng.random() < 0.7
        for _ in range(size):
            claimed = town if rng.random() < 0.35 else CITIES[int(rng.integers(len(CITIES)))]
            home = ids.network(town, "residential", "Comcast") if own_line else shared
            device = new_device("farm", kind + ("/own-line" if own_line else ""), claimed, home)
            _farm_traits(device, kind, rng, operator_asia)
            if stealthy:
                _hide(device, town, rng)
            placed += 1
            if placed >= farms:
                break
    return devices


def _legit_traits(device: Device, kind: str, rng: np.random.Generator, ids: _Ids, days: int,
                  office: Network, cowork: dict[str, Network]) -> None:
    day = lambda: int(rng.integers(0, max(days, 1)))  # noqa: E731 - a tiny local helper reads best here
    if kind == "helpdesk" or rng.random() < 0.1:
        device.approved_tools = ["teamviewer"]
        if kind == "helpdesk":
            device.helpdesk_days = tuple(sorted({day() for _ in range(int(rng.integers(1, 3)))}))
    if kind == "own-desktop":
        device.own_desktop_days = tuple(sorted({day() for _ in range(int(rng.integers(1, 4)))}))
    elif kind == "traveller":
        abroad = rng.random() < 0.35
        where = TRAVEL_ABROAD[int(rng.integers(len(TRAVEL_ABROAD)))] if abroad else \
            CITIES[int(rng.integers(len(CITIES)))]
        hotel = ids.network(where, "residential", "Hotel broadband")
        start = int(rng.integers(0, max(days - 2, 1)))
        device.trip = (hotel, start, int(rng.integers(2, 4)))
    elif kind == "bilingual":
        device.layouts = ["00000409", str(rng.choice(["00000412", "00000804", "00000419"]))]
        device.input_methods = ["Microsoft IME (Korean)"] if device.layouts[1] == "00000412" else []
    elif kind == "night-owl":
        device.schedule = "night-owl"
    elif kind == "coworking":
        device.other_place = (cowork[device.claimed.name], (1, 3))
    elif kind == "office":
        device.other_place = (office, (0, 1, 3))
    elif kind == "corporate-vpn":
        device.home.corporate_vpn = True
    elif kind == "macro":
        device.macro_share = float(rng.uniform(0.1, 0.4))
    elif kind == "desk-kvm":
        device.docked = True
    elif kind == "big-lan":
        device.home.lan_neighbors = int(rng.integers(25, 70))
    if rng.random() < 0.15:
        device.docked = True  # plenty of people work docked with the lid closed


def _farm_traits(device: Device, kind: str, rng: np.random.Generator, operator_asia: bool) -> None:
    device.schedule = "operator-asia" if operator_asia else "operator-us"
    device.always_on = rng.random() < 0.85  # racked laptops stay on (DOJ: Chapman's "laptop farm" photos)
    device.os = "windows"
    device.operator_rtt_ms = float(rng.uniform(150.0, 230.0))
    device.local_like = float(rng.uniform(0.1, 0.5))
    device.operator_ip = str(rng.choice(OPERATOR_PEERS))
    if kind in ("rmm-direct", "rmm-relay", "single-facilitator"):
        device.tool = str(rng.choice(["anydesk", "rustdesk"] if kind == "rmm-direct" else ["anydesk", "teamviewer"]))
        device.path = "direct" if kind == "rmm-direct" else "relay"
    elif kind == "rdp-vpn":
        device.path = "rdp-vpn"
        device.vpn_product = str(rng.choice(["wireguard", "astrill", "openvpn"]))
    else:
        device.path = "ipkvm"
        if kind == "ipkvm-default":
            device.kvm = KVM_DEFAULTS[int(rng.integers(len(KVM_DEFAULTS)))]
        else:
            device.kvm = ("046d", "c31c", "Logitech", "USB Keyboard", "DELL P2419H")
    if rng.random() < 0.25:
        device.input_methods = ["Microsoft IME (Korean)"]
        device.layouts = ["00000409", "00000412"]
    if operator_asia and rng.random() < 0.2:
        device.timezone = "Asia/Seoul"  # the operator set the clock to their own zone
    if rng.random() < 0.1:
        device.seq_reset_day = 1  # agent state wiped and reinstalled once


def _hide(device: Device, town: City, rng: np.random.Generator) -> None:
    """Make a farm laptop as quiet as the simulator allows (see ``make_fleet``)."""
    device.claimed, device.timezone = town, town.timezone
    device.schedule = "operator-us"
    device.home = Network(**{**vars(device.home), "name": device.device_id,
                             "source_ip": f"98.{rng.integers(0, 250)}.{rng.integers(0, 250)}.{rng.integers(2, 250)}",
                             "gateway_mac_hash": salted_hash(int(rng.integers(1 << 30)), device.device_id),
                             "wifi_bssid_hash": salted_hash(int(rng.integers(1 << 30)), device.device_id + "ap")})
    device.local_like = float(rng.uniform(0.4, 0.8))
    device.input_methods, device.layouts = [], ["00000409"]
    device.seq_reset_day = None
    device.always_on = rng.random() < 0.5
    device.vpn_product = None if device.vpn_product == "astrill" else device.vpn_product
