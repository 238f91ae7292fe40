"""The v1 wire contract (``report-v1.md``): report, ingest record and verdict.

Agent, collector and detectors all import these models, so the three sides cannot drift apart.
Field names are the contract: add fields freely, never rename or drop one. Unknown fields in a
report are kept (forward compatibility); missing required fields and wrong types are rejected,
and :func:`field_errors` turns the rejection into ``[{field, message}]`` that names each field.

Parsing is strict (``strict=True``): ``"5"`` is not an int and ``1`` is not a string, so an agent
bug shows up as a 422 at the collector instead of silently coerced data.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

REPORT_SCHEMA = "farmwatch.report/v1"

SALTED_HASH = r"^[0-9a-f]{64}$"
"""Salted SHA-256 hex: how identifiers of networks or people outside the company travel."""


def _require_timezone(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone (RFC 3339, e.g. 2026-11-28T04:05:00Z)")
    return value.astimezone(timezone.utc)


UtcTime = Annotated[datetime, AfterValidator(_require_timezone)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Port = Annotated[int, Field(ge=0, le=65535)]
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
SaltedHash = Annotated[str, Field(pattern=SALTED_HASH)]


class _Section(BaseModel):
    """A closed section of the report: every named field present, null where unknown."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=False)


class AgentInfo(_Section):
    version: str
    os: Literal["linux", "windows", "darwin"]
    os_version: str
    hostname: str


class LoggedInUser(_Section):
    name: str
    terminal: str | None
    remote_host: str | None


class HostFacts(_Section):
    timezone: str | None  # IANA name, e.g. "America/Chicago"
    utc_offset_minutes: int | None
    locale: str | None
    keyboard_layouts: list[str]
    input_methods: list[str]
    boot_time: UtcTime | None
    users: list[LoggedInUser]


class Connection(_Section):
    remote_ip: str
    remote_port: Port
    local_port: Port
    state: str
    direction: Literal["inbound", "outbound"]
    rtt_ms: NonNegative | None = None  # kernel smoothed RTT of this TCP connection
    min_rtt_ms: NonNegative | None = None  # kernel minimum RTT: the distance bound


class RemoteAccessTool(_Section):
    tool: str  # catalogue id, e.g. "anydesk"
    process: str  # process name as seen (never the command line)
    pid: int
    started_at: UtcTime | None
    listening: list[Port]
    connections: list[Connection]


class Session(_Section):
    kind: Literal["rdp", "ssh", "vnc", "x11", "console"]
    user: str | None
    remote_ip: str | None
    rtt_ms: NonNegative | None = None
    min_rtt_ms: NonNegative | None = None


class Interface(_Section):
    name: str
    kind: Literal["ethernet", "wifi", "vpn", "virtual", "loopback", "other"]
    vpn_product: str | None


class LatencyProbe(_Section):
    target: str  # anchor name
    address: str
    method: Literal["tcp", "icmp"]
    sent: Annotated[int, Field(ge=0)]
    received: Annotated[int, Field(ge=0)]
    rtt_min_ms: NonNegative | None
    rtt_median_ms: NonNegative | None
    rtt_max_ms: NonNegative | None


class NetworkFacts(_Section):
    interfaces: list[Interface]
    gateway_ip: str | None
    gateway_mac_hash: SaltedHash | None
    wifi_bssid_hash: SaltedHash | None
    lan_neighbors: Annotated[int, Field(ge=0)] | None
    probes: list[LatencyProbe]


InputSource = Literal["x11", "evdev", "pynput"]


class InputTiming(_Section):
    """Timing aggregates of one window; never key codes, characters or positions."""

    seconds_observed: NonNegative
    active_seconds: NonNegative
    key_events: Annotated[int, Field(ge=0)]
    mouse_events: Annotated[int, Field(ge=0)]
    injected_events: Annotated[int, Field(ge=0)]
    virtual_devices: list[str]
    key_interval_ms_p10: NonNegative | None
    key_interval_ms_p50: NonNegative | None
    key_interval_ms_p90: NonNegative | None
    key_burst_fraction: Fraction | None  # share of key events < 5 ms after the previous one
    mouse_rate_hz_median: NonNegative | None  # median mouse-move rate while moving
    mouse_jump_fraction: Fraction | None  # share of mouse moves > 200 px in one event
    # Added to v1 (optional): the listener behind these figures. "evdev" reads the kernel's devices
    # and cannot see input injected inside a display server (XTest, xrdp), so its zero means less.
    source: InputSource | None = None


class UsbDevice(_Section):
    vendor_id: HexId
    product_id: HexId
    manufacturer: str | None
    product: str | None
    interface_classes: list[str]


class Display(_Section):
    name: str | None
    manufacturer: str | None
    serial_hash: SaltedHash | None


class HardwareFacts(_Section):
    usb: list[UsbDevice]
    displays: list[Display]


class ProbeError(_Section):
    probe: str
    message: str


class Report(_Section):
    """One agent report (agent -> collector), ``POST /api/v1/reports``."""

    schema_: Literal["farmwatch.report/v1"] = Field(alias="schema")
    device_id: Annotated[str, Field(min_length=1, max_length=128)]
    seq: Annotated[int, Field(ge=1)]
    window_start: UtcTime
    window_end: UtcTime
    agent: AgentInfo
    host: HostFacts | None = None
    remote_access: list[RemoteAccessTool] | None = None
    sessions: list[Session] | None = None
    network: NetworkFacts | None = None
    input: InputTiming | None = None
    hardware: HardwareFacts | None = None
    errors: list[ProbeError] = Field(default_factory=list)

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class Geo(_Section):
    country: str | None  # ISO 3166-1 alpha-2
    asn: int | None
    asn_org: str | None
    network_kind: Literal["residential", "hosting", "vpn", "mobile", "corporate", "unknown"]


class IngestRecord(_Section):
    """What the collector stores and exports, one JSON object per line."""

    received_at: UtcTime
    source_ip: str
    geo: Geo
    report: Report


Severity = Literal["info", "low", "medium", "high", "critical"]
VerdictLabel = Literal["clear", "review", "farm"]


class Finding(_Section):
    detector: str
    severity: Severity
    score: Fraction
    summary: str  # one human sentence
    evidence: dict[str, Any]
    attack: str | None  # MITRE ATT&CK id, e.g. "T1219"
    first_seen: UtcTime | None
    last_seen: UtcTime | None


class Verdict(_Section):
    device_id: str
    employee_id: str | None
    scored_at: UtcTime
    risk: Fraction
    verdict: VerdictLabel
    findings: list[Finding]


class RosterEntry(_Section):
    """One row of the HR/IT roster CSV."""

    device_id: str
    employee_id: str
    country: str | None
    city: str | None
    latitude: float | None
    longitude: float | None
    timezone: str | None
    approved_tools: list[str]


class Anchor(_Section):
    """A latency-probe target and where it stands."""

    name: str
    address: str
    port: Port
    latitude: float
    longitude: float


def field_errors(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Name every rejected field as a dotted path with list indices, e.g. ``network.probes[2].sent``."""
    named: list[dict[str, str]] = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += ("." if path else "") + str(part)
        got = item.get("input")
        detail = item["msg"]
        if item["type"] != "missing" and not isinstance(got, (dict, list)):
            detail += f", got {got!r}"[:200]
        named.append({"field": path or "(body)", "message": detail})
    return named


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict of a contract model, with the contract's field names."""
    return model.model_dump(mode="json", by_alias=True)
