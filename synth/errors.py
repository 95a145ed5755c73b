"""The one exception type users see: a message that says what went wrong, where, and what to do."""


class SynthError(Exception):
    """A user-facing error. The CLI prints it as one red line and exits with code 1."""


class BackendUnavailable(SynthError):
    """The LLM endpoint cannot serve any request (server down, wrong URL, key or model): the run stops.

    Raised by a backend's `complete`/`acomplete` instead of returning a failure for every record.
    `url` names the endpoint(s); `kind` is the `Completion.error_kind` of the failure that tripped it
    (e.g. "connection", "http_401", "http_404", "bad_response", "http_503", "timeout").
    """

    def __init__(self, message: str, *, url: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.url = url
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
