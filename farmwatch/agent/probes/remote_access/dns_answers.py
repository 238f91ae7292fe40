"""Relay addresses learned from the DNS answers this machine receives, for catalogued domains only.

A remote-access tool renamed to ``notepad.exe`` still resolves its vendor's relay
(``relay-….net.anydesk.com``) before connecting. :class:`DnsAnswerListener` reads DNS answers as they
arrive (a raw ``AF_PACKET`` socket on Linux, which needs CAP_NET_RAW; a kernel filter passes only UDP
packets from port 53, so the agent never sees other traffic), and :class:`RelayAddresses` keeps an
address only when a name in the answer is a catalogued relay domain, and then only that catalogued
domain: every other name is dropped as soon as the packet is parsed, so browsing never leaves the
laptop, nor even the agent's memory. DNS over HTTPS/TLS (browsers' secure DNS) is not seen.
"""

from __future__ import annotations

import array
import ipaddress
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from farmwatch.agent.probes.remote_access.catalog import Catalog

MAX_ADDRESSES = 4096  # relay addresses kept; the oldest go first
KEEP_SECONDS = 24 * 3600.0  # a relay connection outlives the answer's TTL by hours


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at ``offset`` and the offset after it. Raises ValueError."""
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounds pointer loops
        if offset >= len(message):
            raise ValueError("name runs past the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise ValueError("truncated pointer")
            end = offset + 2 if end is None else end
            offset = ((length & 0x3F) << 8) | message[offset + 1]
        elif length == 0:
            return ".".join(labels).lower(), offset + 1 if end is None else end
        elif length > 63:
            raise ValueError("bad label length")
        else:
            labels.append(message[offset + 1:offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
    raise ValueError("name pointer loop")


def parse_answers(message: bytes) -> list[tuple[list[str], str]]:
    """Each A/AAAA address in a DNS response with every name that leads to it (CNAME chains included).

    Raises ValueError on a malformed message; a query (not a response) gives nothing.
    """
    if len(message) < 12:
        raise ValueError("shorter than a DNS header")
    flags, questions, answers = struct.unpack("!HHH", message[2:8])
    if not flags & 0x8000:
        return []
    offset = 12
    for _ in range(questions):
        _, offset = _read_name(message, offset)
        offset += 4
    aliases: dict[str, str] = {}  # CNAME target -> the name pointing to it
    addresses: list[tuple[str, str]] = []
    for _ in range(answers):
        owner, offset = _read_name(message, offset)
        if offset + 10 > len(message):
            raise ValueError("truncated record")
        kind, _, _, length = struct.unpack("!HHIH", message[offset:offset + 10])
        data = message[offset + 10:offset + 10 + length]
        if len(data) != length:
            raise ValueError("truncated record data")
        if kind == 1 and length == 4:
            addresses.append((owner, str(ipaddress.IPv4Address(data))))
        elif kind == 28 and length == 16:
            addresses.append((owner, str(ipaddress.IPv6Address(data))))
        elif kind == 5:
            aliases[_read_name(message, offset + 10)[0]] = owner
        offset += 10 + length
    found = []
    for owner, address in addresses:
        names = [owner]
        while names[-1] in aliases and len(names) < 16:
            names.append(aliases[names[-1]])
        found.append((names, address))
    return found


class RelayAddresses:
    """Address → (tool, catalogued domain), learned from DNS answers; bounded and thread-safe."""

    def __init__(self, catalog: Catalog, clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.clock = clock
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    def learn(self, names: list[str], address: str) -> None:
        """Keep ``address`` if one of ``names`` is under a catalogued domain; forget the names either way."""
        for name in names:
            match = self.catalog.by_domain(name)
            if match:
                with self._lock:
                    self._known[address] = (*match, self.clock())
                    self._known.move_to_end(address)
                    while len(self._known) > MAX_ADDRESSES:
                        self._known.popitem(last=False)
                return

    def learn_message(self, message: bytes) -> None:
        """Learn from one DNS message; a malformed one is ignored."""
        try:
            answers = parse_answers(message)
        except (ValueError, UnicodeError):
            return
        for names, address in answers:
            self.learn(names, address)

    def lookup(self, address: str) -> tuple[str, str] | None:
        """(tool, domain) a recent answer gave for ``address``."""
        with self._lock:
            entry = self._known.get(address)
            if entry is None:
                return None
            if self.clock() - entry[2] > KEEP_SECONDS:
                del self._known[address]
                return None
            return entry[0], entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._known)


def _udp_source_port_53() -> bytes:
    """A classic BPF program (struct sock_fprog's instructions) passing IPv4/IPv6 UDP packets from port 53.

    The socket is SOCK_DGRAM, so offsets start at the network header. Fragments after the first
    and IPv6 extension headers are dropped (DNS answers seldom use either).
    """
    program = [
        (0x30, 0, 0, 0),        # 0: A = ip[0]
        (0x54, 0, 0, 0xF0),     # 1: A &= 0xf0 (version)
        (0x15, 0, 7, 0x40),     # 2: IPv4? else 10
        (0x30, 0, 0, 9),        # 3: A = protocol
        (0x15, 0, 11, 17),      # 4: UDP? else drop
        (0x28, 0, 0, 6),        # 5: A = flags/fragment offset
        (0x45, 9, 0, 0x1FFF),   # 6: a later fragment: drop
        (0xB1, 0, 0, 0),        # 7: X = IPv4 header length
        (0x48, 0, 0, 0),        # 8: A = UDP source port
        (0x15, 5, 6, 53),       # 9: 53? accept : drop
        (0x15, 0, 5, 0x60),     # 10: IPv6? else drop
        (0x30, 0, 0, 6),        # 11: A = next header
        (0x15, 0, 3, 17),       # 12: UDP? else drop
        (0x28, 0, 0, 40),       # 13: A = UDP source port
        (0x15, 0, 1, 53),       # 14: 53? accept : drop
        (0x06, 0, 0, 0xFFFF),   # 15: accept
        (0x06, 0, 0, 0),        # 16: drop
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


def udp_payload(packet: bytes) -> bytes:
    """The UDP payload of an IPv4 or IPv6 packet (network header first)."""
    if packet and packet[0] >> 4 == 4:
        return packet[(packet[0] & 0x0F) * 4 + 8:]
    return packet[48:]


class DnsAnswerListener:
    """A thread that feeds the DNS answers arriving on any interface into a :class:`RelayAddresses`."""

    ETH_P_ALL = 0x0003
    SO_ATTACH_FILTER = 26

    def __init__(self, relays: RelayAddresses) -> None:
        self.relays = relays
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self) -> None:
        """Open the socket (raises PermissionError without CAP_NET_RAW) and start listening."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(self.ETH_P_ALL))
        code = _udp_source_port_53()
        # struct sock_fprog points at the filter; an array's buffer_info() gives that address without
        # ctypes, whose import held ~0.4 MB of the agent's resident memory (issue 13). The kernel copies
        # the program during setsockopt, while ``filter_code`` is alive.
        filter_code = array.array("B", code)
        program = struct.pack("HL", len(code) // 8, filter_code.buffer_info()[0])
        sock.setsockopt(socket.SOL_SOCKET, self.SO_ATTACH_FILTER, program)
        sock.settimeout(0.5)
        self._socket, self._stop = sock, threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns-answers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                packet = self._socket.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.relays.learn_message(udp_payload(packet))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._socket = None


# Get-DnsClientCache (DnsClient module): one line per cached record, "Entry<TAB>Name<TAB>Type<TAB>Data".
WINDOWS_RESOLVER_CACHE = [
    "powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
    "Get-DnsClientCache | ForEach-Object { \"$($_.Entry)`t$($_.Name)`t$($_.Type)`t$($_.Data)\" }",
]


def learn_windows_resolver_cache(output: str, relays: RelayAddresses) -> None:
    """Feed Windows' resolver cache into ``relays``: A (1) and AAAA (28) records, each with the name
    that was looked up (``Entry``) and the record's own name (the end of a CNAME chain)."""
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or fields[2].strip() not in ("1", "28", "A", "AAAA"):
            continue
        entry, name, _, data = (field.strip() for field in fields)
        try:
            address = str(ipaddress.ip_address(data))
        except ValueError:
            continue
        relays.learn([entry, name], address)
