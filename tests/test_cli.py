"""The command line as scripts use it: --version, papermill's -p KEY VALUE and -f params.yaml, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

from runbook_lib.sandbox import stage_database_pressure
from tests.test_runner import run_cli


def test_version_is_the_installed_package_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"runbook {metadata.version('runbook-notebooks')}"


def test_parameters_from_a_file_and_papermill_style_p_then_json_everywhere(sandbox, tmp_path):
    params = tmp_path / "incident.yaml"
    params.write_text("window_start: -30m\nsample_seconds: 5\nthresholds: {idle_in_transaction_warn_s: 1}\n")
    arch = str(tmp_path / "arch")
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        first = run_cli("run", "database_pressure", "--incident", "CLI-1", "--archive", arch, "-f", str(params),
                        "-p", "sample_seconds", "0.2", "--json", env=sandbox.env())
    finally:
        staged.stop()
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)  # stdout is one JSON document and nothing else
    assert out["status"] == "ok" and out["incident"] == "CLI-1" and out["worst"] == "crit"
    assert out["verdict"].startswith("Verdict: CRITICAL") and out["counts"]["crit"] >= 1
    run = json.loads(open(f"{out['record']}/run.json").read())
    assert run["parameters"]["sample_seconds"] == 0.2  # -p wins over the file
    window_start = datetime.fromisoformat(run["parameters"]["window_start"])  # -30m, resolved when the run began
    assert abs(datetime.now(timezone.utc) - timedelta(minutes=30) - window_start) < timedelta(minutes=2)
    assert run["parameters"]["thresholds"] == {"idle_in_transaction_warn_s": 1}

    second = run_cli("run", "database_pressure", "--incident", "CLI-1", "--archive", arch, "-p", "sample_seconds=0.2",
                     "--json", env=sandbox.env())
    assert second.returncode == 0, second.stderr
    listed = json.loads(run_cli("archive", "list", "CLI-1", "--archive", arch, "--json").stdout)
    assert [r["path"] for r in listed] == [out["record"], json.loads(second.stdout)["record"]]
    assert {r["mode"] for r in listed} == {"papermill"}
    shown = json.loads(run_cli("archive", "show", "CLI-1", "--archive", arch, "--json").stdout)
    assert shown["path"] == listed[-1]["path"] and shown["verdict"] == json.loads(second.stdout)["verdict"]
    compared = json.loads(run_cli("compare", out["record"], "CLI-1", "--archive", arch, "--json").stdout)
    changes = {c["key"]: c["change"] for c in compared["changes"]}
    assert any(k.startswith("pg.blocking:pid:") and v == "resolved" for k, v in changes.items())
    piped = run_cli("archive", "show", out["record"], "--archive", arch)
    assert "Verdict: CRITICAL" in piped.stdout and "\x1b[" not in piped.stdout  # piped: plain text
    on_terminal = run_on_terminal("archive", "show", out["record"], "--archive", arch)
    assert "\x1b[31m\x1b[1mVerdict: CRITICAL" in on_terminal and "\x1b[31m\x1b[1m[CRIT ]" in on_terminal
    no_color = run_on_terminal("archive", "show", out["record"], "--archive", arch, env={"NO_COLOR": "1"})
    assert "Verdict: CRITICAL" in no_color and "\x1b[" not in no_color
    verified = run_cli("archive", "verify", "--archive", arch, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["records"] == 2
    assert json.loads(verified.stdout)["intact"] is True


def run_on_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """What ``runbook`` writes to a terminal (a pseudo-terminal as its stdout)."""
    import pty

    leader, follower = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | (env or {})
    proc = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", *args], stdout=follower,
                            stderr=subprocess.PIPE, env=full_env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode()


def test_bad_parameter_input_is_one_line(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    for args, message in ((["-f", str(listed)], "expected a mapping of parameter names"),
                          (["-f", str(tmp_path / "missing.yaml")], "cannot read parameters file"),
                          (["-p", "a", "b", "c"], "unexpected extra argument (c)"),
                          (["-p", "a"], "expected KEY=VALUE or KEY VALUE"),
                          (["-p", "=1"], "the parameter has no name")):
        proc = run_cli("run", "database_pressure", "--incident", "CLI-2", "--archive", str(tmp_path), *args)
        assert proc.returncode == 2 and proc.stdout == "", (args, proc.stdout)
        [line] = proc.stderr.strip().splitlines()
        assert message in line, (args, line)


def test_shell_completion_offers_commands_options_choices_and_notebooks(tmp_path):
    """click's own completion: the script asks ``runbook`` at each TAB, so it is run in a real bash with the
    installed ``runbook`` on PATH."""
    script = run_cli("completion", "bash")
    assert script.returncode == 0 and "_RUNBOOK_COMPLETE=bash_complete" in script.stdout
    (tmp_path / "runbook.bash").write_text(script.stdout)
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "runbook").exists(), "the package's console script is installed next to this Python"
    probe = ('source "$1"; shift\n'
             't() { COMPREPLY=(); COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _runbook_completion runbook; '
             'echo "${COMPREPLY[*]}"; }\n'
             "t runbook ar; t runbook run da; t runbook run database_pressure --inc; t runbook archive v; "
             "t runbook archive verify --j; t runbook schema ''; t runbook run database_pressure --fail-on w\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "-c", probe, "probe", str(tmp_path / "runbook.bash")], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["archive", "database_pressure", "--incident", "verify", "--json",
                                       "env alerts", "warn"]
    for shell, marker in (("zsh", "compdef _runbook_completion runbook"), ("fish", "complete --no-files --command "
                                                                           "runbook")):
        other = run_cli("completion", shell)
        assert other.returncode == 0 and marker in other.stdout, other.stdout


def test_a_verdict_with_nothing_reported_is_not_painted_as_ok(monkeypatch):
    """On a terminal the verdict takes the worst finding's colour; "no check reported anything" has none, and must
    not borrow ok's green."""
    from runbook_lib import console
    from runbook_lib.findings import Finding, Severity

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(console.sys.stdout, "isatty", lambda: True)
    assert console.painted_verdict([]) == "Verdict: UNKNOWN: no check reported anything"
    ok = console.painted_verdict([Finding("pg.connections", "", Severity.OK, "Connections within limits")])
    assert ok.startswith("\x1b[32m") and "nothing wrong found by the 1 checks" in ok
