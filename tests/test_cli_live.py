"""`fire`, `test-call` and `render --wav` as a user runs them, against a live service and simulator."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_support import Stack, alert2voice_command, in_ci, running_stack


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(request, tmp_path_factory.mktemp("cli"), store="sqlite") as s:
        yield s


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*alert2voice_command(), *args], capture_output=True, text=True, timeout=60, check=False)


def sim_calls(stack: Stack) -> list[dict]:
    import urllib.request

    with urllib.request.urlopen(f"{stack.sim_url}/_sim/calls", timeout=5) as resp:
        return json.load(resp)


def test_fire_places_one_call_then_duplicate_then_resolve(stack: Stack):
    stack.reset_simulator()
    args = ["fire", "--url", f"{stack.a2v_url}/alerts", "--token", stack.token, "team=payments",
            "severity=critical", "alertname=CliFire", "--annotation", "summary=fired from the CLI"]
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("200 ") and '"called"' in first.stdout
    second = run(*args)
    assert second.returncode == 0 and '"duplicate"' in second.stdout
    resolved = run(*args, "--resolve")
    assert resolved.returncode == 0, resolved.stderr


@pytest.mark.parametrize(("backdate", "spoken"), [((), "less than a minute"), (("--backdate", "10m"), "10 minutes")],
                         ids=["a-new-alert", "backdated"])
def test_fire_sends_a_new_alert_unless_backdated(stack: Stack, backdate: tuple[str, ...], spoken: str):
    stack.reset_simulator()
    out = run("fire", "--url", f"{stack.a2v_url}/alerts", "--token", stack.token, "team=payments",
              "severity=critical", f"alertname=CliAge{len(backdate)}", *backdate)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while not (calls := sim_calls(stack)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the call is placed by the service's dispatcher, after the 200
    [call] = calls
    assert spoken in json.dumps(call), call


def test_fire_with_a_wrong_token_exits_1(stack: Stack):
    out = run("fire", "--url", f"{stack.a2v_url}/alerts", "--token", "wrong", "alertname=X")
    assert out.returncode == 1
    assert out.stdout.startswith("401 ")


def test_fire_unreachable_exits_1_with_one_line():
    out = run("fire", "--url", "http://127.0.0.1:9/alerts", "alertname=X")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("alert2voice: cannot reach") and out.stderr.count("\n") == 1


def test_test_call_reaches_the_provider(stack: Stack):
    stack.reset_simulator()
    out = run("test-call", "--config", str(stack.config_path), "alice")
    assert out.returncode == 0, out.stderr
    assert "accepted: messageId" in out.stdout
    assert stack.service_key not in out.stdout + out.stderr
    [call] = sim_calls(stack)
    assert call["dialed_number"] == stack.number
    assert call["correlation_id"].startswith("a2v-test-")
    # Its receipts reach the service (no page is theirs): the status page tells how the test call went.
    import urllib.request

    deadline, html = time.monotonic() + 20, ""
    while "answered" not in html and time.monotonic() < deadline:
        time.sleep(0.1)  # the simulator's receipts come after its callback delay
        request = urllib.request.Request(f"{stack.a2v_url}/", headers=stack.admin)
        with urllib.request.urlopen(request, timeout=5) as resp:
            html = resp.read().decode()
    row = html[html.index('id="test-call"'):].split("</td>")[0]
    assert call["correlation_id"] in row and "answered" in row, row


def test_test_call_speaks_the_configured_language(stack: Stack, tmp_path: Path):
    # The request is the dispatcher's: the contact's language in the SSML too, not a hard-coded en-US.
    import yaml

    config = yaml.safe_load(stack.config_path.read_text())
    config["speech"] = {"language": "de-DE", "voice": "KatjaNeural"}
    config["contacts"]["alice"]["speech"] = {"gender": "MALE"}
    german = tmp_path / "german.yaml"
    german.write_text(yaml.safe_dump(config, sort_keys=False))
    stack.reset_simulator()
    out = run("test-call", "--config", str(german), "alice")
    assert out.returncode == 0, out.stderr
    [call] = sim_calls(stack)
    audio = call["audio"]
    assert (audio["language"], audio["voice"], audio["gender"]) == ("de-DE", "KatjaNeural", "MALE")
    assert 'xml:lang="de-DE"' in audio["text"] and "en-US" not in audio["text"]
    assert call["callback_url"] == config["server"]["public_url"] + "/callbacks/webex"


def test_test_call_unknown_contact(stack: Stack):
    out = run("test-call", "--config", str(stack.config_path), "nobody")
    assert out.returncode == 1
    assert "unknown contact 'nobody'" in out.stderr


def test_render_wav_speaks_with_espeak(tmp_path: Path, fixtures_dir: Path):
    if shutil.which("espeak-ng") is None:
        if in_ci():
            pytest.fail("espeak-ng is missing: `make test` installs it")
        pytest.skip("espeak-ng is not installed")
    out_wav = tmp_path / "call.wav"
    fixture = fixtures_dir / "alertmanager" / "firing_HighCPU.json"
    repo = Path(__file__).resolve().parents[1]
    out = run("render", "--config", str(repo / "config.example.yaml"), str(fixture), "--wav", str(out_wav),
              "--at", "2026-11-26T15:00:00+00:00")
    assert out.returncode == 0, out.stderr
    with wave.open(str(out_wav)) as w:
        assert w.getnframes() / w.getframerate() > 2.0  # seconds of speech, not an empty file


def test_a_reader_that_goes_away_ends_the_command_quietly(example_config_path):
    # `alert2voice oncall ... | head -1`: the pipe closes while thousands of lines are still to come.
    proc = subprocess.Popen([*alert2voice_command(), "oncall", "--config", str(example_config_path), "--next", "20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err


def test_pages_commands_list_show_acknowledge_and_escalate_as_amtool_would(stack: Stack, tmp_path: Path):
    stack.reset_simulator()
    req = urllib.request.Request(f"{stack.sim_url}/_sim/numbers/{stack.number}", method="PUT",
                                 data=json.dumps({"outcome": "no_answer"}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).close()  # nobody answers: the pages stay active
    token = tmp_path / "admin-token"
    token.write_text(stack.admin_token + "\n")
    admin = ["--url", stack.a2v_url, "--token-file", str(token)]
    for name in ("CliAckMe", "CliEscalateMe"):
        fired = run("fire", "--url", f"{stack.a2v_url}/alerts", "--token", stack.token, "team=payments",
                    "severity=critical", f"alertname={name}")
        assert fired.returncode == 0, fired.stderr
    listed = run("pages", "list", *admin)
    assert listed.returncode == 0, listed.stderr
    keys = {}
    for line in listed.stdout.splitlines()[1:]:
        for name in ("CliAckMe", "CliEscalateMe"):
            if f" {name} " in f"{line} " or line.rstrip().endswith(name):
                keys[name] = line.split()[0]
    assert set(keys) == {"CliAckMe", "CliEscalateMe"}, listed.stdout
    # A 12-character prefix, as `list` prints it, names the page.
    acked = run("pages", "ack", keys["CliAckMe"], "--by", "dana", "--comment", "on it", *admin)
    assert (acked.returncode, acked.stdout.split()[1:]) == (0, ["acknowledged:", "acknowledged"]), acked.stderr
    again = run("pages", "ack", keys["CliAckMe"], *admin)
    assert again.returncode == 0 and "unchanged" in again.stdout
    shown = run("pages", "show", keys["CliAckMe"], *admin)
    assert shown.returncode == 0 and "acknowledged by dana (api)" in shown.stdout and ": on it" in shown.stdout
    escalated = run("pages", "escalate", keys["CliEscalateMe"], "--step", "1", *admin)
    assert escalated.returncode == 0 and "escalated" in escalated.stdout, escalated.stderr
    # Exit codes that mean something: an unknown page, wrong credentials, nobody listening.
    assert run("pages", "show", "0123456789ab", *admin).returncode == 1
    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope")
    refused = run("pages", "list", "--url", stack.a2v_url, "--token-file", str(wrong))
    assert refused.returncode == 1 and refused.stderr.startswith("alert2voice: 401")
    assert run("pages", "list", "--url", "http://127.0.0.1:9").returncode == 1
    assert run("pages", "ack").returncode == 2
