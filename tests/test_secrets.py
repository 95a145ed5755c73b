"""Secrets never reach synth's outputs: a server that echoes the key in its errors, a key pasted into a
recipe or an override, a password in a base URL. The run folder, the report and the terminal are searched."""

from __future__ import annotations

import json
import textwrap

import pytest

from synth.errors import redact
from tests.cli_helpers import one_line_error, run_cli

KEY = "sk-proxy-SECRET-9f8e7d6c5b4a"
PASSWORD = "pw-SECRET-0a1b2c3d"


def every_file_text(folder) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


def write_recipe(tmp_path, server, key_env: str = "PROXY_AUTH", password: bool = False):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"instruction": t}) + "\n"
                             for t in [f"Question number {i}" for i in range(6)] + ["BOOM please"]))
    # a password in the URL: httpx sends it as basic auth (a proxy's login) instead of the bearer key
    base_url = server.base_url.replace("http://", f"http://user:{PASSWORD}@") if password else server.base_url
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: secrets
        backends:
          default:
            backend: openai
            model: test-model
            base_url: {base_url}
            api_key_env: {key_env}
            max_retries: 0
        stages:
          - {{type: source, name: tasks, path: {tasks}}}
          - {{type: generate, name: answers, input: tasks, max_tokens: 16}}
        """), encoding="utf-8")
    return path


def test_redact_hides_env_keys_url_passwords_and_auth_headers(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    text = (f"401: key {KEY} rejected; Authorization: Bearer sk-other-0123456789 at "
            f"https://me:{PASSWORD}@host/v1?api_key=q1w2e3r4t5 (token hf_abcdefghijklmnop); x-api-key: abc123456789")
    clean = redact(text)
    for secret in (KEY, "sk-other-0123456789", PASSWORD, "q1w2e3r4t5", "hf_abcdefghijklmnop", "abc123456789"):
        assert secret not in clean, clean
    assert "https://me:***@host/v1" in clean and "401: key *** rejected" in clean
    assert redact("Basic dXNlcjpwYXNz (user:pass)").startswith("Basic *** ")
    for plain in ("a plain message about 16 tokens", "Token indices sequence length is longer",
                  "Basic information", "max_tokens: 16", "backends.default.api_key: secrets never go in a recipe"):
        assert redact(plain) == plain


def test_an_echoed_key_reaches_no_file_report_or_terminal(tmp_path, llm_server_factory, monkeypatch):
    server = llm_server_factory(echo_auth=True)
    server.fault("status", status=400, marker="BOOM")
    monkeypatch.setenv("PROXY_AUTH", KEY)
    recipe = write_recipe(tmp_path, server)
    runs = tmp_path / "runs"
    result = run_cli("run", recipe, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # the key did go out
    failures = (runs / "secrets" / "answers" / "failures.jsonl").read_text()
    assert "Authorization: Bearer ***" in failures  # the server echoed it; synth wrote it redacted
    report = run_cli("report", runs / "secrets" / "answers", "-o", tmp_path / "report.html")
    assert report.exit_code == 0, report.output
    status = run_cli("run", "--status", "secrets", "--runs-dir", runs)
    for text in (every_file_text(runs), (tmp_path / "report.html").read_text(), result.output, report.output,
                 status.output):
        assert KEY not in text and PASSWORD not in text


@pytest.mark.parametrize("password", [False, True])
def test_a_refused_key_echoed_in_the_error_stays_out_of_the_error_line(tmp_path, llm_server_factory, monkeypatch,
                                                                        password):
    import base64

    server = llm_server_factory(echo_auth=True, api_key="sk-the-right-one")
    monkeypatch.setenv("PROXY_AUTH", KEY)
    recipe = write_recipe(tmp_path, server, password=password)
    runs = tmp_path / "runs"
    result = run_cli("run", recipe, "--runs-dir", runs)
    # the source stage's progress line comes first; the run then stops with one error line
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("error:"), result.output
    line = result.output.strip().splitlines()[-1]
    assert result.output.count("error:") == 1 and "401" in line and "PROXY_AUTH" in line
    assert ("Basic ***" if password else "Bearer ***") in line
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    status = run_cli("run", "--status", "secrets", "--runs-dir", runs)
    assert "401" in status.output
    for text in (line, every_file_text(runs), status.output):
        assert KEY not in text and PASSWORD not in text and basic not in text


@pytest.mark.parametrize("override", ["backends.default.api_key", "backends.default.api_key_env",
                                      "backends.default.token"])
def test_a_key_given_with_s_is_refused_without_repeating_it(tmp_path, llm_server, override):
    recipe = write_recipe(tmp_path, llm_server)
    for command in (("run", recipe, "--runs-dir", tmp_path / "runs"), ("run", recipe, "--dry-run")):
        line = one_line_error(run_cli(*command, "-s", f"{override}={KEY}"), "env")
        assert KEY not in line and "sk-proxy" not in line
    assert not (tmp_path / "runs").exists()


def test_a_key_pasted_as_api_key_env_is_refused(tmp_path, llm_server):
    recipe = write_recipe(tmp_path, llm_server, key_env=KEY)
    line = one_line_error(run_cli("run", recipe, "--runs-dir", tmp_path / "runs"),
                          f"{recipe}:7: backends.default.api_key_env", "name of the environment variable")
    assert KEY not in line and "sk-proxy" not in line
    assert not (tmp_path / "runs").exists()
    recipe = write_recipe(tmp_path, llm_server, key_env="not a name")
    one_line_error(run_cli("run", recipe, "--dry-run"), f"{recipe}:7: backends.default.api_key_env")


def test_a_base_url_password_is_stored_redacted(tmp_path, llm_server, monkeypatch):
    monkeypatch.delenv("PROXY_AUTH", raising=False)
    recipe = write_recipe(tmp_path, llm_server, password=True)
    runs = tmp_path / "runs"
    result = run_cli("run", recipe, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    stored = (runs / "secrets" / "recipe.yaml").read_text()
    assert "http://user:***@127.0.0.1" in stored
    assert PASSWORD not in every_file_text(runs) and PASSWORD not in result.output
