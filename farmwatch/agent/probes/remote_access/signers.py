"""Who signed an executable: Authenticode on Windows, ``codesign`` on macOS (Linux has no such thing).

Only a signature the OS itself accepts counts (Authenticode status ``Valid``; a macOS chain that ends
at Apple's root and is not ad hoc): anyone can make a self-signed certificate naming a vendor, and a
tool found by signer is then matched against the roster as that vendor's tool.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from farmwatch.agent.probes.base import RunCommand

# Get-AuthenticodeSignature (Microsoft.PowerShell.Security) for each path: "path<TAB>status<TAB>subject".
_AUTHENTICODE = (
    "$ErrorActionPreference = 'SilentlyContinue'; foreach ($p in @({paths})) {{ "
    "$s = Get-AuthenticodeSignature -LiteralPath $p; "
    "\"$p`t$($s.Status)`t$($s.SignerCertificate.Subject)\" }}"
)


def common_name(subject: str) -> str | None:
    """The CN of an X.500 subject such as ``CN="Foo, Inc.", O=Foo, C=US``."""
    found = re.search(r'(?:^|,\s*)CN=("(?:[^"]|"")*"|[^,]*)', subject)
    if not found:
        return None
    value = found.group(1).strip()
    return value[1:-1].replace('""', '"') if value.startswith('"') else value or None


def authenticode_command(paths: Sequence[str]) -> list[str]:
    """The PowerShell command that prints every path's signature status and signer subject."""
    quoted = ",".join("'" + p.replace("'", "''") + "'" for p in paths)
    script = _AUTHENTICODE.format(paths=quoted)
    return ["powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand",
            base64.b64encode(script.encode("utf-16-le")).decode("ascii")]


def parse_authenticode(output: str) -> dict[str, str]:
    """Path → signer common name, for the paths whose signature Windows reports ``Valid``."""
    signers = {}
    for line in output.splitlines():
        path, _, rest = line.partition("\t")
        status, _, subject = rest.partition("\t")
        name = common_name(subject.strip())
        if status.strip() == "Valid" and name:
            signers[path] = name
    return signers


def parse_codesign(output: str) -> str | None:
    """The developer a ``codesign -dvv`` answer names, when Apple's root anchors the chain.

    ``Authority=Developer ID Application: TeamViewer Germany GmbH (H7UGFBUGV6)`` gives
    ``TeamViewer Germany GmbH``.
    """
    if re.search(r"^Signature=adhoc", output, re.MULTILINE):
        return None
    authorities = re.findall(r"^Authority=(.+)$", output, re.MULTILINE)
    if not authorities or authorities[-1].strip() != "Apple Root CA":
        return None
    leaf = re.sub(r"^[^:]+:\s*", "", authorities[0].strip())  # "Developer ID Application: "
    return re.sub(r"\s*\([A-Z0-9]{10}\)$", "", leaf) or None


def read_signers(paths: Sequence[str], platform: str, run: RunCommand) -> dict[str, str]:
    """Path → signer for ``paths`` on Windows and macOS; nothing elsewhere. Raises what ``run`` raises."""
    if not paths:
        return {}
    if platform == "win32":
        return parse_authenticode(run(authenticode_command(paths)))
    if platform == "darwin":
        signers = {}
        for path in paths:
            # codesign writes its description to stderr; the shell folds it into what run() returns.
            signer = parse_codesign(run(["/bin/sh", "-c", 'exec /usr/bin/codesign -dvv -- "$1" 2>&1', "sh", path]))
            if signer:
                signers[path] = signer
        return signers
    return {}
