"""Secrets out of sight: the one place that masks passwords in storage and tracking URLs.

Every URL the sweep shows, logs, tags or stores goes through :func:`mask_url` (for people) or
:func:`credential_free` (for what a study stores: a worker adds its own credentials from its
environment). Both understand every form a password takes in the URLs we meet:

* userinfo: ``postgresql+psycopg://user:pw@host/db``, ``mysql://user:pw@host/db``, and HTTP basic
  auth in an MLflow tracking URI, ``http://user:pw@host:5000`` (a bare ``https://token@host`` too);
* query parameters: ``...?password=pw``, ``?sslpassword=``, ``?token=``, ``?sig=`` and friends;
* libpq keyword/value strings: ``host=db password=pw``.

Parsers disagree on odd URLs (a password with an unescaped ``@``, ``/`` or ``?``: SQLAlchemy,
libpq and urllib split them differently), so the masked part is the union of what any of them
would call the password. Both functions are total: junk in, a string out, never an exception.
Pure standard library (no SQLAlchemy, no MLflow).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

MASK = "***"
# Query/keyword names whose value is a secret (matched anywhere in the name, any case).
_SECRET_NAME = r"[\w.\-]*(?:pass|pwd|secret|token|sig|credential|api_?key|access_?key|auth)[\w.\-]*"
_KEY_VALUE = re.compile(rf"(?i)(?P<key>{_SECRET_NAME})(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;#'\"]*)")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# Environment variables that hold credentials the sweep's URLs may be combined with.
SECRET_ENV = ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MYSQL_PWD")
_HTTP = ("http://", "https://")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - total: an object whose __str__ fails is shown as its type
        return f"<{type(value).__name__}>"


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the userinfo of ``rest`` (the URL after ``scheme://``), or -1.

    The union of the parsers' views: urllib/urllib3/libpq (the last ``@`` before the first ``/?#``)
    and SQLAlchemy (the password runs from the first ``:`` to the next ``@``, across ``/`` and ``?``),
    extended to the last ``@`` before the next ``/`` after it.
    """
    if rest.startswith("/"):
        return -1  # no authority: sqlite:///path, file:///path
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    ends = [rest.rfind("@", 0, cut)]
    colon = rest.find(":")
    if colon >= 0 and "/" not in rest[:colon]:
        first = rest.find("@", colon)
        if first >= 0:
            slash = rest.find("/", first)
            ends.append(rest.rfind("@", 0, slash if slash >= 0 else len(rest)))
    return max(ends)


def _mask_userinfo(url: str, *, keep_user: bool) -> tuple[str, list[str]]:
    """(url with its userinfo password masked or removed, the secrets found)."""
    out, found, pos = [], [], 0
    for m in _SCHEME.finditer(url):
        if m.start() < pos:
            continue
        start = m.end()
        rest = url[start:]
        end = _userinfo_end(rest)
        if end < 0:
            continue
        userinfo = rest[:end]
        user, colon, password = userinfo.partition(":")
        http = m.group("scheme").lower() in _HTTP
        if colon:
            found.append(password)
            shown = (f"{user}:{MASK}@" if keep_user else f"{user}@") if user else (f":{MASK}@" if keep_user else "")
            if http and not keep_user:
                shown = ""  # credentials for an HTTP store come from MLFLOW_TRACKING_USERNAME/PASSWORD
        elif http:
            found.append(user)  # https://TOKEN@host: a bare HTTP userinfo is usually a token
            shown = f"{MASK}@" if keep_user else ""
        else:
            shown = f"{userinfo}@"  # a database user name alone: not a secret
        out.append(url[pos:start] + shown)
        pos = start + end + 1
    out.append(url[pos:])
    return "".join(out), found


def _mask_key_values(text: str, *, drop: bool) -> tuple[str, list[str]]:
    found: list[str] = []

    def sub(m: re.Match[str]) -> str:
        value = m.group("value").strip("'\"")
        if value:
            found.append(value)
        return "" if drop else f"{m.group('key')}{m.group('eq')}{MASK}"

    masked = _KEY_VALUE.sub(sub, text)
    if drop:  # tidy the query left behind: "?&a=1&&" -> "?a=1", "?" -> ""
        masked = re.sub(r"([?&;])[&;]+", r"\1", masked)
        masked = re.sub(r"[?&;]+(?=$|#)", "", masked)
    return masked, found


def mask_url(url: Any) -> str:
    """``url`` with every password, token and secret query value replaced by ``***``.

    Safe to print, log, tag and store. Never raises: anything that is not a string is shown as
    ``str(url)``, masked all the same.
    """
    text, _ = _mask_userinfo(_text(url), keep_user=True)
    return _mask_key_values(text, drop=False)[0]


def credential_free(url: Any) -> str:
    """``url`` without its credentials: the userinfo password (all of an HTTP userinfo) and secret
    query parameters removed. What a study stores; a process using it supplies the credentials
    from its environment (``PGPASSWORD``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), or passes
    the full URL in ``SWEEP_STORAGE`` / ``MLFLOW_TRACKING_URI``."""
    text, _ = _mask_userinfo(_text(url), keep_user=False)
    return _mask_key_values(text, drop=True)[0]


def secrets_in(url: Any) -> list[str]:
    """The secret values ``url`` carries (raw and percent-decoded), longest first."""
    text = _text(url)
    _, found = _mask_userinfo(text, keep_user=True)
    found += _mask_key_values(text, drop=False)[1]
    values = {v for s in found for v in (s, unquote(s)) if v}
    return sorted(values, key=len, reverse=True)


def redact(text: Any, *urls: Any, env: Iterable[str] = SECRET_ENV) -> str:
    """``text`` (an error message, a log line) with every URL in it masked, and every secret that
    ``urls`` or the credential variables of the environment hold replaced by ``***``, wherever it
    appears (drivers quote passwords in their own words)."""
    message = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), _text(text))
    message = _mask_key_values(message, drop=False)[0]
    secrets = [s for u in urls for s in secrets_in(u)]
    secrets += [os.environ[name] for name in env if os.environ.get(name)]
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message
