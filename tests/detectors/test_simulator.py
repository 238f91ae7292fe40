"""farmwatch-simulate: valid wire records, every kind present, deterministic per seed."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from farmwatch.contract import IngestRecord
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.fleet import FARM_KINDS, LEGIT_KINDS

SIMULATE = Path(sys.executable).with_name("farmwatch-simulate")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    return write_fleet(tmp_path_factory.mktemp("fleet"), seed=3, legit=40, farms=12, days=2)


def test_every_record_validates_against_the_contract(fleet) -> None:
    lines = fleet.records.read_bytes().splitlines()
    assert len(lines) == fleet.count > 1000
    for line in lines:
        IngestRecord.model_validate_json(line)


def test_roster_anchors_and_labels_load(fleet) -> None:
    roster = load_roster(fleet.roster)
    anchors = load_anchors(fleet.anchors)
    with fleet.labels.open() as handle:
        labels = list(csv.DictReader(handle))
    assert len(roster) == len(labels) == 52 and len(anchors) == 5
    assert sum(row["label"] == "farm" for row in labels) == 12
    kinds = {row["kind"].split("/")[0] for row in labels}
    assert kinds == set(LEGIT_KINDS) | set(FARM_KINDS)


def test_same_seed_same_bytes_other_seed_other_fleet(tmp_path: Path) -> None:
    digests = []
    for seed, folder in ((8, "a"), (8, "b"), (9, "c")):
        files = write_fleet(tmp_path / folder, seed=seed, legit=15, farms=13, days=1)
        digests.append(hashlib.sha256(files.records.read_bytes() + files.roster.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_cli_writes_the_four_files(tmp_path: Path) -> None:
    done = subprocess.run([str(SIMULATE), "--out", str(tmp_path), "--seed", "2", "--legit", "14", "--farms", "6",
                           "--days", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchors.csv", "labels.csv", "records.jsonl", "roster.csv"]
    assert "14 legitimate and 6 farm devices" in done.stdout


@pytest.mark.parametrize("args", [pytest.param(["--help"], id="help"), pytest.param(["--days", "0", "--out", "x"], id="bad")])
def test_cli_help_and_bad_input(args: list[str]) -> None:
    done = subprocess.run([str(SIMULATE), *args], capture_output=True, text=True, timeout=60)
    if args == ["--help"]:
        assert done.returncode == 0 and "laptop farms" in done.stdout
    else:
        assert done.returncode == 2 and "--days" in done.stderr and "Traceback" not in done.stderr


def test_stealthy_farms_hide_what_the_simulator_knows() -> None:
    from farmwatch.simulator.fleet import make_fleet
    from farmwatch.simulator.places import FARM_TOWNS

    farms = [d for d in make_fleet(4, legit=10, farms=12, days=1, stealthy=True) if d.label == "farm"]
    assert len(farms) == 12
    assert all(d.claimed in FARM_TOWNS and d.timezone == d.claimed.timezone for d in farms)
    assert all(d.schedule == "operator-us" and d.input_methods == [] and 0.4 <= d.local_like <= 0.8 for d in farms)
    assert len({d.home.gateway_mac_hash for d in farms}) == 12  # every laptop on its own line


def test_shared_egress_variant_puts_strangers_behind_one_address_and_farms_behind_one_router(
        tmp_path: Path) -> None:
    """--shared-egress: converted employees share public addresses with other employees' different
    routers, their mappings churning; a farm behind 5G shares one router while its egress churns."""
    import orjson

    files = write_fleet(tmp_path, seed=3, legit=100, farms=12, days=2, shared_egress=True)
    with files.labels.open() as handle:
        kinds = {row["device_id"]: row["kind"] for row in csv.DictReader(handle)}
    records = [orjson.loads(line) for line in files.records.read_bytes().splitlines()]
    for line in files.records.read_bytes().splitlines()[:200]:
        IngestRecord.model_validate_json(line)
    converted = {d for d, kind in kinds.items() if "/cgnat-" in kind or "/consumer-vpn" in kind}
    assert converted and all(kinds[d].startswith("plain/") for d in converted)
    by_address: dict[str, set[tuple[str, str | None]]] = {}
    addresses: dict[str, set[str]] = {}
    for record in records:
        device = record["report"]["device_id"]
        if device in converted:
            by_address.setdefault(record["source_ip"], set()).add((device, record["report"]["network"]["gateway_mac_hash"]))
            addresses.setdefault(device, set()).add(record["source_ip"])
    # Strangers: one address carries several employees with different (or unreported) gateways.
    assert any(len({device for device, _ in seen}) >= 2 and len({gw for _, gw in seen if gw}) >= 2
               for seen in by_address.values())
    # Every CGNAT subscriber's mapping churns (a VPN user's exit is picked once a day: it may repeat).
    assert all(len(seen) > 1 for device, seen in addresses.items() if "/cgnat-" in kinds[device])
    behind_5g = [d for d, kind in kinds.items() if kind.endswith("/behind-5g")]
    assert len(behind_5g) >= 2
    sites: dict[str, list[dict]] = {}
    for record in records:
        if record["report"]["device_id"] in behind_5g:
            sites.setdefault(record["report"]["network"]["gateway_mac_hash"], []).append(record)
    for site in sites.values():  # one router per site, its laptops together on each churning address
        assert len({r["report"]["device_id"] for r in site}) >= 2 and len({r["source_ip"] for r in site}) > 1
        assert {r["geo"]["network_kind"] for r in site} == {"mobile"}
        at = {}
        for r in site:
            at.setdefault(r["report"]["window_end"], set()).add(r["source_ip"])
        assert all(len(addresses) == 1 for addresses in at.values())
