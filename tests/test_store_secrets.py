"""A store's password is never shown, and ``confab serve`` passes it on only where libpq reads it.

``without_password`` is checked against every form a PostgreSQL connection string can take,
with libpq itself (``conninfo_to_dict``) confirming that each generated string really carries
the password, so that the property is about real passwords, not about strings that merely
look like them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from confab.runtime.config import load_config, split_password, without_password
from confab.runtime.store import StoreError
from confab.runtime.store.postgres import PostgresStore
from confab.tools.serve import shard_settings, store_password_to_environment

# Passwords of any characters (no NUL: libpq's strings end there), at least 3 long so that one
# cannot be a piece of the host's or the user's name by chance too often.
PASSWORDS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), min_size=3)
NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
SCHEMES = st.sampled_from(["postgresql://", "postgres://"])
OTHER_PARAMETERS = st.lists(
    st.sampled_from(["sslmode=verify-full", "sslrootcert=/etc/confab/ca.pem", "application_name=confab"]),
    max_size=3,
)


def libpq_password(conninfo: str) -> str:
    return str(conninfo_to_dict(conninfo).get("password") or "")


def hidden(password: str, shown: str, *, rest: str) -> None:
    """``password`` (and its percent-encoding) is nowhere in ``shown``, unless it was already a
    piece of the rest of the string, where it is no secret."""
    for form in {password, quote(password, safe="")}:
        assume(form not in rest)
        assert form not in shown


@given(SCHEMES, NAMES, PASSWORDS, NAMES, OTHER_PARAMETERS)
def test_a_password_in_the_user_part_of_a_url_is_never_shown(
    scheme: str, user: str, password: str, host: str, parameters: list[str]
) -> None:
    query = "?" + "&".join(parameters) if parameters else ""
    url = f"{scheme}{user}:{quote(password, safe='')}@{host}:5432/confab{query}"
    assert libpq_password(url) == password
    shown = without_password(url)
    assert shown == f"{scheme}{user}:***@{host}:5432/confab{query}"
    hidden(password, shown, rest=shown)


@given(SCHEMES, NAMES, st.text("abcdefghijklmnopqrstuvwxyz0123456789/?@:#%", min_size=3), NAMES)
def test_a_raw_password_with_the_urls_own_characters_is_never_shown(
    scheme: str, user: str, password: str, host: str
) -> None:
    # Not percent-encoded, as a hurried operator writes it: whatever libpq makes of it, none of
    # it may be shown.
    url = f"{scheme}{user}:{password}@{host}/confab"
    hidden(password, without_password(url), rest=f"{scheme}{user}:@{host}/confab")


@given(
    SCHEMES,
    NAMES,
    PASSWORDS,
    st.sampled_from(["password", "PASSWORD", "Password", "%70assword", "pass%77ord"]),
    OTHER_PARAMETERS,
    st.booleans(),
)
def test_a_password_query_parameter_is_never_shown(
    scheme: str, host: str, password: str, key: str, parameters: list[str], first: bool
) -> None:
    given_as = f"{key}={quote(password, safe='')}"
    ordered = [given_as, *parameters] if first else [*parameters, given_as]
    url = f"{scheme}{host}/confab?" + "&".join(ordered)
    if unquote(key) == "password":  # libpq reads its keys percent-decoded, in lower case only
        assert libpq_password(url) == password
    shown = without_password(url)
    assert shown == url.replace(given_as, f"{key}=***")
    hidden(password, shown, rest=shown)


def keyword_value(password: str, quoted: bool) -> str:
    if not quoted:
        return "".join("\\" + c if c in "\\' \t\n\r\f\v" else c for c in password)
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(NAMES, PASSWORDS, st.booleans(), st.sampled_from(["=", " = ", "= ", " ="]), st.booleans())
def test_a_password_in_a_libpq_keyword_string_is_never_shown(
    host: str, password: str, quoted: bool, equals: str, last: bool
) -> None:
    value = keyword_value(password, quoted)
    parts = [f"host={host}", f"password{equals}{value}", "dbname=confab"]
    if last:
        parts.append(parts.pop(1))
    conninfo = " ".join(parts)
    assert libpq_password(conninfo) == password
    shown = without_password(conninfo)
    assert shown == conninfo.replace(f"password{equals}{value}", f"password{equals}***")
    hidden(password, shown, rest=shown)


def test_what_is_not_a_password_is_shown_as_it_is() -> None:
    for location in [
        "/var/lib/confab/confab.sqlite3",
        "postgresql://confab@db.internal:5432/confab?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgresql://db/confab?application_name=a@b",
        "postgresql:///confab?host=/run/postgresql",
        "host=db dbname=confab sslmode=verify-full",
    ]:
        assert without_password(location) == location


# Split off once by confab serve ---------------------------------------------------------------


@given(SCHEMES, NAMES, PASSWORDS, NAMES, OTHER_PARAMETERS, st.booleans())
def test_split_password_leaves_libpq_everything_but_the_password(
    scheme: str, user: str, password: str, host: str, parameters: list[str], in_query: bool
) -> None:
    encoded = quote(password, safe="")
    if in_query:
        url = f"{scheme}{user}@{host}:5432/confab?" + "&".join([*parameters, f"password={encoded}"])
    else:
        url = f"{scheme}{user}:{encoded}@{host}:5432/confab" + (
            "?" + "&".join(parameters) if parameters else ""
        )
    rest, split = split_password(url)
    assert split == password
    before = conninfo_to_dict(url)
    del before["password"]
    assert conninfo_to_dict(rest) == before  # sslmode, sslrootcert and the rest pass through
    hidden(password, rest, rest=rest)


def test_serve_puts_the_password_in_its_environment_and_nowhere_in_the_shards_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = "postgresql://confab:s3cr%2Ft%20pw@db.internal:5432/confab?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    config = load_config(None, **{"store.path": url, "data_dir": str(tmp_path)})
    store_password_to_environment(config)
    assert os.environ["PGPASSWORD"] == "s3cr/t pw"
    settings = shard_settings(config, tmp_path)
    expected = "postgresql://confab@db.internal:5432/confab?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert settings.store_path == expected
    pickled = pickle.dumps(settings)  # what every shard process is sent
    assert b"s3cr" not in pickled
    assert config.store_shown == expected


def test_serve_leaves_a_url_without_a_password_and_a_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-the-operator")
    for path in ["postgresql://confab@db/confab", "confab.sqlite3"]:
        config = load_config(None, **{"store.path": path, "data_dir": str(tmp_path)})
        store_password_to_environment(config)
        assert config.store.path == path
        assert os.environ["PGPASSWORD"] == "from-the-operator"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgresql://u:p%zzsecret@127.0.0.1:1/db", "invalid percent-encoded token"),
        ("postgresql://u@127.0.0.1:1/db?password=s%zzecret", "invalid percent-encoded token"),
        ("postgresql://u:sec ret@127.0.0.1:1/db", "unexpected spaces found"),
    ],
)
def test_a_url_libpq_cannot_read_is_refused_without_quoting_its_password(url: str, complaint: str) -> None:
    # libpq quotes the piece it could not read, which here is the password itself.
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    text = str(caught.value)
    assert complaint in text and "\n" not in text
    assert "secret" not in text and "ecret" not in text and "sec ret" not in text
