"""The one masking function: every URL form a password takes, junk in, never an exception out."""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sweep.redact import MASK, credential_free, mask_url, redact, secrets_in

SCHEMES = ["postgresql+psycopg", "postgresql", "postgres", "mysql+pymysql", "mssql+pyodbc", "http", "https"]
SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
HOSTS = st.sampled_from(["127.0.0.1:5432", "db.example.org", "[::1]:5000", "mlflow:5000", "h"])
PATHS = st.sampled_from(["/db", "/sweep?sslmode=require", "", "/", "/mlflow?application_name=sweep&connect_timeout=5"])
ANY_TEXT = st.text(max_size=40)
QUERY_KEYS = st.sampled_from(["password", "PASSWORD", "sslpassword", "pwd", "token", "access_token", "api_key",
                              "client_secret", "sig", "X-Amz-Signature", "auth"])


@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none(), st.lists(st.text())))
@example("://@")
@example("postgresql://:@")
@example("http://@@@/")
@example("a://b:c@d://e:f@g")
def test_masking_is_total(junk):
    for fn in (mask_url, credential_free, redact):
        assert isinstance(fn(junk), str)
    assert isinstance(secrets_in(junk), list)


def test_an_object_whose_str_fails_is_shown_by_its_type():
    class Bad:
        def __str__(self):
            raise RuntimeError("no")

    assert mask_url(Bad()) == "<Bad>"


@given(st.sampled_from(SCHEMES), SAFE, ANY_TEXT.filter(bool), HOSTS, PATHS)
def test_userinfo_password_percent_encoded_is_masked_exactly(scheme, user, password, host, path):
    url = f"{scheme}://{user}:{quote(password, safe='')}@{host}{path}"
    assert mask_url(url) == f"{scheme}://{user}:{MASK}@{host}{path}"


@given(st.sampled_from(SCHEMES), SAFE, st.text(alphabet=st.characters(blacklist_characters="/?#"), min_size=1),
       HOSTS, PATHS)
@example("postgresql", "bob", "p@ss:w@rd", "h", "/db")
def test_userinfo_password_with_raw_at_and_colon_is_masked_exactly(scheme, user, password, host, path):
    # Written raw (as users do), '@' and ':' in a password still end at the last '@' before the host.
    url = f"{scheme}://{user}:{password}@{host}{path}"
    assert mask_url(url) == f"{scheme}://{user}:{MASK}@{host}{path}"


@given(st.sampled_from(SCHEMES), SAFE, ANY_TEXT.filter(bool), HOSTS, PATHS)
@example("postgresql", "u", "a/b", "h", "/db")
@example("postgresql", "u", "a?b@c", "h", "/db")
@settings(max_examples=300, deadline=None)
def test_no_parser_finds_the_password_in_the_masked_url(scheme, user, password, host, path):
    """Whatever SQLAlchemy or urllib (requests, libpq alike) read as the password is gone, even for
    passwords with unescaped '/', '?', '#' or '@', where the parsers disagree on where it ends."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = f"{scheme}://{user}:{password}@{host}{path}"
    seen = set()
    try:
        seen.add(make_url(url).password)
    except (ArgumentError, ValueError):
        pass
    try:
        seen.add(urlsplit(url).password)
    except ValueError:
        pass
    masked = mask_url(url)
    for pw in seen - {None, ""}:
        assume(url.count(pw) == 1 and "*" not in pw)
        assert pw not in masked, (url, masked)


@given(st.sampled_from(SCHEMES), SAFE, HOSTS, QUERY_KEYS, SAFE.map(lambda s: "Zq" + s))
def test_secret_query_parameters_are_masked_and_others_kept(scheme, user, host, key, secret):
    url = f"{scheme}://{user}@{host}/db?sslmode=require&{key}={secret}&connect_timeout=5"
    masked = mask_url(url)
    assert secret not in masked
    assert f"{key}={MASK}" in masked and "sslmode=require" in masked and "connect_timeout=5" in masked
    shown_user = MASK if scheme.startswith("http") else user  # a bare HTTP userinfo is a token
    assert f"{shown_user}@{host}/db" in masked
    free = credential_free(url)
    assert secret not in free and key not in free and free.endswith("/db?sslmode=require&connect_timeout=5")


@pytest.mark.parametrize(("url", "masked", "free"), [
    ("postgresql+psycopg://bob:hunter2@127.0.0.1:5432/db", "postgresql+psycopg://bob:***@127.0.0.1:5432/db",
     "postgresql+psycopg://bob@127.0.0.1:5432/db"),
    ("postgresql+psycopg://bob@h/db?password=hunter2", "postgresql+psycopg://bob@h/db?password=***",
     "postgresql+psycopg://bob@h/db"),
    ("http://alice:hunter2@mlflow:5000", "http://alice:***@mlflow:5000", "http://mlflow:5000"),
    ("https://ghp_hunter2@mlflow.example.org/", "https://***@mlflow.example.org/", "https://mlflow.example.org/"),
    ("sqlite:///sweep.db", "sqlite:///sweep.db", "sqlite:///sweep.db"),
    ("sqlite:////tmp/odd@name.db", "sqlite:////tmp/odd@name.db", "sqlite:////tmp/odd@name.db"),
    ("host=db user=bob password=hunter2 dbname=x", "host=db user=bob password=*** dbname=x",
     "host=db user=bob  dbname=x"),
    ("mysql://u:hunter2@h/d?x=1&password=hunter3#f", "mysql://u:***@h/d?x=1&password=***#f", "mysql://u@h/d?x=1#f"),
    ("databricks", "databricks", "databricks"),
    ("", "", ""),
])
def test_known_forms(url, masked, free):
    assert mask_url(url) == masked
    assert credential_free(url) == free


def test_credential_free_database_urls_parse_without_a_password():
    from sqlalchemy.engine import make_url

    for url in ("postgresql+psycopg://bob:pw@h:5432/db?password=x&sslmode=require", "mysql://u:p@h/d"):
        parsed = make_url(credential_free(url))
        assert parsed.password is None and "password" not in parsed.query and parsed.host == "h"


def test_redact_masks_urls_and_the_secrets_they_and_the_environment_hold(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "envsecret")
    url = "postgresql://bob:p%40ss@h/db"
    message = ("API request to http://alice:hunter2@mlflow:5000/api/2.0 failed; could not log in to "
               "postgresql://bob:p%40ss@h/db as bob with p@ss (PGPASSWORD envsecret); token=abc123")
    text = redact(message, url)
    for secret in ("hunter2", "p%40ss", "p@ss", "envsecret", "abc123"):
        assert secret not in text, text
    assert "http://alice:***@mlflow:5000/api/2.0" in text and "bob:***@h/db" in text


def test_resolve_tracking_uri_makes_sqlite_absolute_and_moves_http_credentials_to_the_environment(
        tmp_path, monkeypatch):
    from sweep.preflight import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///sub/m.db?timeout=5") == f"sqlite:///{tmp_path}/sub/m.db?timeout=5"
    assert resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "old")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "old")
    assert resolve_tracking_uri("http://alice:p%40ss@mlflow:5000") == "http://mlflow:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "p@ss")
