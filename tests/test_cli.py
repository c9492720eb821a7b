"""The command line as scripts use it: --version, papermill's -p KEY VALUE and -f params.yaml, --json output."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from importlib import metadata

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
    verified = run_cli("archive", "verify", "--archive", arch, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["records"] == 2
    assert json.loads(verified.stdout)["intact"] is True


def test_bad_parameter_input_is_one_line(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    for args, message in ((["-f", str(listed)], "expected a mapping of parameter names"),
                          (["-f", str(tmp_path / "missing.yaml")], "cannot read parameters file"),
                          (["-p", "a", "b", "c"], "expected KEY=VALUE or KEY VALUE"),
                          (["-p", "=1"], "the parameter has no name")):
        proc = run_cli("run", "database_pressure", "--incident", "CLI-2", "--archive", str(tmp_path), *args)
        assert proc.returncode == 2 and proc.stdout == "", (args, proc.stdout)
        [line] = proc.stderr.strip().splitlines()
        assert message in line, (args, line)


def test_bash_completion_offers_commands_options_and_notebooks(tmp_path):
    script = run_cli("completion", "bash")
    assert script.returncode == 0
    (tmp_path / "runbook.bash").write_text(script.stdout)
    probe = ('source "$1"; shift\n'
             't() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _runbook; echo "${COMPREPLY[*]}"; }\n'
             "t runbook ar; t runbook run da; t runbook run database_pressure --inc; t runbook archive v; "
             "t runbook archive verify --j; t runbook schema ''; t runbook nosuch --\n")
    out = subprocess.run(["bash", "-c", probe, "probe", str(tmp_path / "runbook.bash")], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["archive", "database_pressure", "--incident", "verify", "--json",
                                       "--help alerts env", "--help --version"]
