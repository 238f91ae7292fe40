"""The v1 wire contract: report, ingest record and verdict (exported as JSON Schema to farmwatch/schema/).

Agent, collector and detectors all import these models, so the three sides cannot drift apart.
Field names are the contract: add fields freely, never rename or drop one. Unknown fields in a
report are kept (forward compatibility); missing required fields and wrong types are rejected,
and :func:`field_errors` turns the rejection into ``[{field, message}]`` that names each field.

Parsing is strict (``strict=True``): ``"5"`` is not an int and ``1`` is not a string, so an agent
bug shows up as a 422 at the collector instead of silently coerced data.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from farmwatch.times import EARLIEST, LATEST

REPORT_SCHEMA = "farmwatch.report/v1"

SALTED_HASH = r"^[0-9a-f]{64}$"
"""Salted SHA-256 hex: how identifiers of networks or people outside the company travel."""

# --- What the store and the detectors can hold -------------------------------------------------
# One hostile device must not be able to send a value that a later stage cannot hold: a time past
# pandas' datetime64[ns] range (2262) broke every scoring run, a seq of 2^63 overflowed BIGINT.
# So every value is bounded here, once, and the JSON Schema export carries the same bounds.

INT_LIMIT = 2**53 - 1
"""Largest integer magnitude accepted anywhere in a report: exact as a float64 (pandas holds an integer
column with gaps as float64) and far inside int64 (SQLite INTEGER, PostgreSQL BIGINT, numpy), so
``seq + 1`` never overflows either. The same bound as I-JSON's interoperable integers (RFC 7493 §2.2)."""
NOT_AFTER = "not_after"
"""Validation-context key: the latest acceptable time (the collector passes receipt time + allowed
clock skew), e.g. ``Report.model_validate_json(body, context={NOT_AFTER: limit})``."""
NO_NUL = r"^[^\x00]*$"
"""Text never holds NUL: PostgreSQL cannot store it in a text column."""
_YEARS = r"^20[0-9]{2}-"
"""The JSON Schema form of EARLIEST..LATEST (an RFC 3339 string starting with a year 2000-2099)."""
_TIME_BOUNDS = (
    "RFC 3339 with a time zone, from 2000-01-01T00:00:00Z to before 2100-01-01T00:00:00Z; the collector "
    "also refuses a time more than its allowed clock skew after the report's receipt"
)


def _bounded_time(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone (RFC 3339, e.g. 2026-11-28T04:05:00Z)")
    # Compared before astimezone: 9999-12-31T23:30:00-05:00 has no UTC form, and that overflow was a 500.
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must lie from {_wire(EARLIEST)} to before {_wire(LATEST)}")
    value = value.astimezone(timezone.utc)
    not_after = (info.context or {}).get(NOT_AFTER)
    if not_after is not None and value > not_after:
        raise ValueError(f"lies {_seconds(value - not_after)} s past the latest time accepted now ({_wire(not_after)}); "
                         "is the device clock ahead?")
    return value


def _wire(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(span: timedelta) -> int:
    return math.ceil(span.total_seconds())


def _holdable(value: Any, path: str = "") -> Any:
    """Check a value of an unknown (extra) field: the same bounds as the declared ones, at any depth."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not -INT_LIMIT <= value <= INT_LIMIT:
            raise ValueError(f"{path or 'value'}: integer outside -(2^53-1)..2^53-1")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'}: must be a finite number, got {value!r}")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path or 'value'}: text must not contain NUL (\\u0000)")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _holdable(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _holdable(key, f"{path}: the key {key!r}" if path else f"the key {key!r}")
            _holdable(item, f"{path}.{key}" if path else key)
    return value


UtcTime = Annotated[
    datetime,
    AfterValidator(_bounded_time),
    Field(json_schema_extra={"pattern": _YEARS, "description": _TIME_BOUNDS}),
]
Text = Annotated[str, Field(pattern=NO_NUL)]
Count = Annotated[int, Field(ge=0, le=INT_LIMIT)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
SaltedHash = Annotated[str, Field(pattern=SALTED_HASH)]
WireValue = Annotated[
    Any,
    AfterValidator(_holdable),
    Field(description="an unknown field, kept: finite numbers, integers within -(2^53-1)..2^53-1, text without NUL"),
]


class _Section(BaseModel):
    """A closed section of the report: every named field present, null where unknown."""

    model_config = ConfigDict(
        strict=True, extra="allow", frozen=False, json_schema_extra={"propertyNames": {"pattern": NO_NUL}}
    )
    __pydantic_extra__: dict[str, WireValue] = Field(init=False)

    @model_validator(mode="after")
    def _names_hold(self) -> _Section:
        """An unknown field's own name is text too: no NUL (its value is checked by WireValue)."""
        for name in self.model_extra or {}:
            if "\x00" in name:
                raise ValueError(f"the unknown field name {name!r} contains NUL (\\u0000)")
        return self


class AgentInfo(_Section):
    version: Text
    os: Literal["linux", "windows", "darwin"]
    os_version: Text
    hostname: Text
    # Added to v1 (optional, issue 16): the keyed machine hash the agent enrols with, in every report,
    # so one device identity used from two machines (a copied state dir) shows as two hardware ids.
    hardware_id: Text | None = None


class LoggedInUser(_Section):
    name: Text
    terminal: Text | None
    remote_host: Text | None


class HostFacts(_Section):
    timezone: Text | None  # IANA name, e.g. "America/Chicago"
    utc_offset_minutes: Annotated[int, Field(ge=-1440, le=1440)] | None
    locale: Text | None
    keyboard_layouts: list[Text]
    input_methods: list[Text]
    boot_time: UtcTime | None
    users: list[LoggedInUser]


class Connection(_Section):
    remote_ip: Text
    remote_port: Port
    local_port: Port
    state: Text
    direction: Literal["inbound", "outbound"]
    rtt_ms: NonNegative | None = None  # kernel smoothed RTT of this TCP connection
    min_rtt_ms: NonNegative | None = None  # kernel minimum RTT: the distance bound
    domain: Text | None = None  # catalogued relay domain a DNS answer gave for remote_ip (others never kept)
    # Added to v1 (optional, issue 16): when the agent's socket watcher saw the connection established
    # (polls of the kernel's socket table through the window). ``state`` "CLOSED" marks one that ended
    # inside the window; its RTTs are the last the kernel gave (min_rtt_ms: the least over the polls).
    first_seen: UtcTime | None = None  # first poll that saw it established (may precede window_start)
    last_seen: UtcTime | None = None  # last poll that saw it established
    duration_seconds: NonNegative | None = None  # last_seen - first_seen: observed, short by < one poll


MatchedBy = Literal["name", "path", "signer", "service", "domain"]
"""How the agent recognised a remote-access tool: process name, executable inside a catalogued
install folder, code-signing subject, a running catalogued service/unit, or a connection to an
address a DNS answer gave for a catalogued relay domain."""


class RemoteAccessTool(_Section):
    tool: Text  # catalogue id, e.g. "anydesk"
    process: Text  # process name as seen (never the command line)
    pid: Count
    started_at: UtcTime | None
    listening: list[Port]
    connections: list[Connection]
    matched_by: list[MatchedBy] = Field(default_factory=list)  # empty in reports from older agents


class Session(_Section):
    kind: Literal["rdp", "ssh", "vnc", "x11", "console"]
    user: Text | None
    remote_ip: Text | None
    rtt_ms: NonNegative | None = None
    min_rtt_ms: NonNegative | None = None
    # Added to v1 (optional, issue 16), as on Connection: "ESTABLISHED" at the window's end or "CLOSED"
    # (ended inside the window, seen by the socket watcher); None from older agents means established.
    state: Text | None = None
    first_seen: UtcTime | None = None
    last_seen: UtcTime | None = None
    duration_seconds: NonNegative | None = None


class Interface(_Section):
    name: Text
    kind: Literal["ethernet", "wifi", "vpn", "virtual", "loopback", "other"]
    vpn_product: Text | None


class LatencyProbe(_Section):
    target: Text  # anchor name
    address: Text
    method: Literal["tcp", "icmp"]
    sent: Count
    received: Count
    rtt_min_ms: NonNegative | None
    rtt_median_ms: NonNegative | None
    rtt_max_ms: NonNegative | None


class NetworkFacts(_Section):
    interfaces: list[Interface]
    gateway_ip: Text | None
    gateway_mac_hash: SaltedHash | None
    wifi_bssid_hash: SaltedHash | None
    lan_neighbors: Count | None
    probes: list[LatencyProbe]


InputSource = Literal["x11", "evdev", "pynput"]


class InputTiming(_Section):
    """Timing aggregates of one window; never key codes, characters or positions."""

    seconds_observed: NonNegative
    active_seconds: NonNegative
    key_events: Count
    mouse_events: Count
    injected_events: Count
    virtual_devices: list[Text]
    key_interval_ms_p10: NonNegative | None
    key_interval_ms_p50: NonNegative | None
    key_interval_ms_p90: NonNegative | None
    key_burst_fraction: Fraction | None  # share of key events < 5 ms after the previous one
    mouse_rate_hz_median: NonNegative | None  # median mouse-move rate while moving
    mouse_jump_fraction: Fraction | None  # share of mouse moves > 200 px in one event
    # Added to v1 (optional): the listener behind these figures. "evdev" reads the kernel's devices
    # and cannot see input injected inside a display server (XTest, xrdp), so its zero means less.
    source: InputSource | None = None
    # Added to v1 (optional): set when per-user input helpers sent these figures to the agent's
    # service over its local socket; the uids (never names) the kernel gave for their connections
    # (Windows: over a named pipe; the RID, the SID's last part, of each pipe client's account).
    helper_uids: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] | None = None


class UsbDevice(_Section):
    vendor_id: HexId
    product_id: HexId
    manufacturer: Text | None
    product: Text | None
    interface_classes: list[Text]


class Display(_Section):
    name: Text | None
    manufacturer: Text | None
    serial_hash: SaltedHash | None


class HardwareFacts(_Section):
    usb: list[UsbDevice]
    displays: list[Display]


class ProbeError(_Section):
    probe: Text
    message: Text


class Report(_Section):
    """One agent report (agent -> collector), ``POST /api/v1/reports``."""

    schema_: Literal["farmwatch.report/v1"] = Field(alias="schema")
    device_id: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]
    seq: Annotated[int, Field(ge=1, le=INT_LIMIT)]
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

    @field_validator("window_end")
    @classmethod
    def _ends_after_it_starts(cls, window_end: datetime, info: ValidationInfo) -> datetime:
        window_start = info.data.get("window_start")
        if window_start is not None and window_end < window_start:
            raise ValueError(f"must not lie before window_start ({_wire(window_start)})")
        return window_end


NetworkKind = Literal["residential", "hosting", "vpn", "mobile", "corporate", "unknown", "cgnat"]
"""``geo.network_kind``; "cgnat" (carrier-grade NAT, RFC 6598) was added to v1 by issue 16."""


class Geo(_Section):
    country: Text | None  # ISO 3166-1 alpha-2
    asn: Annotated[int, Field(ge=0, le=2**32 - 1)] | None  # ASNs are 32-bit (RFC 6793)
    asn_org: Text | None
    network_kind: NetworkKind


class IngestRecord(_Section):
    """What the collector stores and exports, one JSON object per line."""

    received_at: UtcTime
    source_ip: Text
    geo: Geo
    report: Report
    # Added to v1 (optional): report.window_end minus received_at in seconds. Positive: the device
    # clock runs ahead (bounded by the collector's allowed skew); negative: the report waited (spool).
    clock_skew_seconds: Finite | None = None
    # Added to v1 (optional, issue 16), what the collector knew of the device when it stored the
    # report: how many times it had enrolled (2 or more: it enrolled again as the same machine), and
    # how many of its reports had been refused because their seq was stored with other content (a
    # sequence that restarted: the agent renumbers and re-sends them, so only this count keeps it).
    enrolments: Count | None = None
    seq_conflicts: Count | None = None


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
    latitude: Finite | None
    longitude: Finite | None
    timezone: str | None
    approved_tools: list[str]


class Anchor(_Section):
    """A latency-probe target and where it stands."""

    name: str
    address: str
    port: Port
    latitude: Finite
    longitude: Finite


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
