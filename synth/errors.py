"""The one exception type users see: a message that says what went wrong, where, and what to do; and
`redact`, which every text synth writes or prints about a failure goes through (secrets never leave)."""

from __future__ import annotations

import base64
import errno
import os
import re
from typing import Any


class SynthError(Exception):
    """A user-facing error. The CLI prints it as one red line and exits with code 1. Its message is
    redacted (a server's reply quoted in it may repeat the key)."""

    def __init__(self, *args: Any):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class BackendUnavailable(SynthError):
    """The LLM endpoint cannot serve any request (server down, wrong URL, key or model): the run stops.

    Raised by a backend's `complete`/`acomplete` instead of returning a failure for every record.
    `url` names the endpoint(s); `kind` is the `Completion.error_kind` of the failure that tripped it
    (e.g. "connection", "http_401", "http_404", "bad_response", "http_503", "timeout").
    """

    def __init__(self, message: str, *, url: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.url = redact(url) if url else url
        self.kind = kind


def validation_message(error, source: str) -> str:
    """One line from a pydantic ValidationError: where (source + field path) and what."""
    parts = []
    for item in error.errors()[:3]:
        loc = ".".join(str(x) for x in item.get("loc", ())) or "<root>"
        msg = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        parts.append(f"{loc}: {msg}")
    more = "" if error.error_count() <= 3 else f" (+{error.error_count() - 3} more)"
    return f"{source}: " + "; ".join(parts) + more


# ---------------------------------------------------------------- secrets

REDACTED = "***"
#: env vars whose value is a secret by their name: OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD...
SECRET_ENV_NAME = re.compile(r"(^|_)(KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
#: shorter env values ("1", "true") are settings, not secrets, and would redact ordinary words
MIN_SECRET_LENGTH = 8
#: env vars a backend reads its key from (`api_key_env` may name any variable)
_key_env_names: set[str] = set()

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@", re.IGNORECASE)
#: an Authorization value: "Bearer sk-..." (a credential has a digit or is long; a word has not) or
#: "Basic dXNlcjpwYXNz" (base64 of user:password)
_BEARER = re.compile(r"\b([Bb]earer)(\s+)(?=[A-Za-z0-9._~+/=-]*\d|[A-Za-z0-9._~+/=-]{16})[A-Za-z0-9._~+/=-]{6,}")
_BASIC = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})")
_KEY_FIELD = re.compile(
    r"""(\b(?:x-api-key|api[-_]?key|access[-_]?token|auth[-_]?token|password|passwd|client[-_]?secret)\b"""
    r"""["']?\s*[:=]\s*["']?)"""
    r"""(?=[^\s"'&,;)}]*\d)[^\s"'&,;)}]{6,}""", re.IGNORECASE)  # with a digit: a value, not a word


#: an env var name (what `api_key_env` takes)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: how API keys and tokens start (OpenAI, Anthropic, Hugging Face, GitHub, Slack, AWS, Google)
_KEY_PREFIX = re.compile(r"^(sk-|sk_|pk-|rk-|hf_|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AKIA|AIza|Bearer\s)")


def looks_like_key(value: str) -> bool:
    """A value that is a key, not a name: a known key prefix, or long and random-looking (digits, and no
    '_', '/' or space, which names and paths have)."""
    if not any(c.isdigit() for c in value):
        return False
    if _KEY_PREFIX.match(value):
        return len(value) >= 10
    return len(value) >= 20 and not any(c in value for c in "_/ \\")


def check_key_env_name(value: str) -> None:
    """`api_key_env` names the env var that holds the key; a key pasted there is refused, never repeated."""
    if looks_like_key(value):
        raise ValueError("this looks like a key, not the name of the environment variable that holds it: "
                         "put the key in an env var (export OPENAI_API_KEY=...) and write its name here "
                         "(api_key_env: OPENAI_API_KEY)")
    if not ENV_NAME.match(value):
        raise ValueError("expected the name of the environment variable that holds the key "
                         "(letters, digits and '_', e.g. OPENAI_API_KEY)")


def register_key_env(name: str) -> None:
    """A backend reads its key from `name`: its value is redacted wherever synth writes or prints."""
    _key_env_names.add(name)


def known_secrets() -> list[str]:
    """The secret values in this process's environment, longest first (so a key's prefix is not matched first)."""
    values = {value for name, value in os.environ.items()
              if (name in _key_env_names or SECRET_ENV_NAME.search(name)) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` without secrets: values of key env vars, URL passwords, Authorization values and key=value
    fields become ``***``. Applied wherever a failure becomes text (errors, failure records, the report,
    the run folder), since servers and proxies may quote the request back."""
    if not text:
        return text
    for secret in known_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    text = _BASIC.sub(lambda m: m.group(1) + REDACTED if _is_basic_credential(m.group(2)) else m.group(0), text)
    return _KEY_FIELD.sub(rf"\1{REDACTED}", text)


def _is_basic_credential(value: str) -> bool:
    try:
        return b":" in base64.b64decode(value, validate=True)
    except ValueError:
        return False


def redact_data(value: Any, secrets: list[str] | None = None) -> Any:
    """`redact` on every string inside dicts, lists and tuples (keys too); other values as they are."""
    if secrets is None:
        secrets = known_secrets()
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v, secrets) for v in value)
    return value


# ---------------------------------------------------------------- a full disk

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "StorageFull", "database or disk is full")


def disk_full_error(exc: BaseException | None) -> BaseException | None:
    """The error in `exc`'s chain (itself, its ``__cause__``/``__context__``, ...) that says the disk is full
    or the quota is used up; None when it is something else. Libraries wrap it (datasets'
    DatasetGenerationError) or only keep its text (pyarrow, safetensors, sqlite), so the text counts too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull):
            return exc
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return exc
        if not isinstance(exc, SynthError) and any(text in str(exc) for text in _DISK_FULL_TEXT):
            return exc
        exc = exc.__cause__ if exc.__cause__ is not None else None if exc.__suppress_context__ else exc.__context__
    return None


class DiskFull(SynthError):
    """Writing `path` failed because the disk (or the user's quota) is full; nothing half-written is left.
    The CLI names the option that picks another place (``-o``, ``--runs-dir``, ...)."""

    def __init__(self, path, where: str = "another output location"):
        self.path = str(path)
        self.where = where
        super().__init__(f"disk full while writing {self.path}: free space or choose {where}")

    def __reduce__(self):  # rebuilt from its fields when it crosses a process boundary (executors)
        return (type(self), (self.path, self.where))
