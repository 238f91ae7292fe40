"""``[console.oidc]`` in collector.toml: a good table is read whole; anything else is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmwatch.collector.config import ConfigError, load_config

GOOD = """
[console.oidc]
issuer = "https://id.example.com/"
client_id = "farmwatch"
client_secret_file = "{secret}"
[console.oidc.analysts]
"alice@example.com" = "alice"
"""


def _load(tmp_path: Path, oidc: str, public_url: str | None = "https://farmwatch.example.com") -> object:
    (tmp_path / "secret").write_text("s" * 20)
    (tmp_path / "token").write_text("t" * 24)
    (tmp_path / "client-secret").write_text("a client secret\n")
    collector = f'public_url = "{public_url}"\n' if public_url else ""
    config_file = tmp_path / "collector.toml"
    config_file.write_text(f'[collector]\nenroll_secret_file = "{tmp_path / "secret"}"\n'
                           f'analyst_token_file = "{tmp_path / "token"}"\n{collector}\n'
                           + oidc.format(secret=tmp_path / "client-secret"))
    return load_config(config_file)


def test_a_good_table_is_read_with_its_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    oidc = config.oidc  # type: ignore[attr-defined]
    assert oidc.issuer == "https://id.example.com"  # without the trailing slash the provider's iss has none
    assert (oidc.client_id, oidc.client_secret) == ("farmwatch", "a client secret")
    assert (oidc.claim, oidc.scopes) == ("email", ("openid", "email"))
    assert oidc.analysts == {"alice@example.com": "alice"}
    assert "a client secret" not in repr(oidc)


def test_no_table_no_oidc(tmp_path: Path) -> None:
    assert _load(tmp_path, "").oidc is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(('client_id = "farmwatch"', 'client_id = "farmwatch"\nauto_provision = true'),
                 "unknown key(s) auto_provision",
                 id="unknown-key"),
    pytest.param(("https://id.example.com/", "http://id.example.com"), "must be https://", id="plain-http-issuer"),
    pytest.param(('= "alice"', '= "not a name!"'), "not an analyst name", id="bad-analyst-name"),
    pytest.param(('client_secret_file = "{secret}"\n', 'client_secret_file = "/nonexistent/secret"\n'),
                 "cannot read /nonexistent/secret", id="unreadable-secret"),
    pytest.param(('client_id = "farmwatch"\n', 'client_id = "farmwatch"\nscopes = ["email"]\n'),
                 "including openid", id="scopes-without-openid"),
    pytest.param(('[console.oidc.analysts]\n"alice@example.com" = "alice"\n', ""), "missing analysts",
                 id="no-mapping"),
])
def test_a_bad_table_is_refused_naming_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    with pytest.raises(ConfigError, match="console.oidc") as refused:
        _load(tmp_path, GOOD.replace(old, new, 1))
    assert message in str(refused.value)


def test_a_loopback_provider_may_use_http(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD.replace("https://id.example.com/", "http://127.0.0.1:9000"))
    assert config.oidc.issuer == "http://127.0.0.1:9000"  # type: ignore[attr-defined]


def test_oidc_needs_the_public_url_it_sends_people_back_to(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs \[collector\] public_url"):
        _load(tmp_path, GOOD, public_url=None)


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = [block for block in readme.split("```toml\n")[1:] if block.startswith("[console.oidc]")]
    example = example.split("```")[0].replace("/etc/farmwatch/oidc-client-secret", "{secret}")
    oidc = _load(tmp_path, example).oidc  # type: ignore[attr-defined]
    assert (oidc.issuer, oidc.claim, oidc.analysts) == ("https://login.example.com", "email",
                                                        {"alice@example.com": "alice"})
