"""The command line in-process: exit codes, check-config, render, routes test and oncall at fixed instants."""

import json
import logging
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alert2voice.cli import main
from bench.procs import free_port

SPEAK = "{http://www.w3.org/2001/10/synthesis}speak"
AT = "2026-11-26T15:00:00+00:00"  # 07:00 in Los Angeles, 15:00 in London: alice's rotation week
NIGHT_LA = "2026-11-26T08:00:00+00:00"  # 00:00 PST: alice's quiet hours
SHIFT_47 = "shift 47 of payments-primary (alice, bob), 2026-11-23 09:00 → 2026-11-30 09:00 Europe/London"


@pytest.fixture(autouse=True)
def _restore_logging():
    # main() installs a stderr handler on the root logger; capsys's stderr is gone after each test.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run `alert2voice ARGV` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (0 if code is None else code), out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def speak_blocks(text: str) -> list[ET.Element]:
    """Every SSML document printed in `text`, parsed as XML."""
    return [ET.fromstring(block) for block in re.findall(r"<speak\b.*?</speak>", text, flags=re.S)]


MINIMAL = 'provider: {service_key: k, caller_id: "+15550001234", callback: {allow_unauthenticated: true}}\n'


# ------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize(
    "argv",
    [[], ["serve"], ["check-config"], ["render"], ["routes"], ["routes", "test"], ["oncall"], ["fire"],
     ["test-call"], ["simulator"]],
    ids=lambda argv: " ".join(argv) or "alert2voice",
)
def test_help_of_every_subcommand_exits_0(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert out.startswith("usage: alert2voice")


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert (code, out.split()[0]) == (0, "alert2voice")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["routes"], id="routes-without-subcommand"),
        pytest.param(["check-config"], id="check-config-without-file"),
        pytest.param(["render", "payload.json"], id="render-without-config"),
        pytest.param(["oncall"], id="oncall-without-config"),
        pytest.param(["oncall", "--config", "c.yaml", "--next", "three"], id="next-not-a-number"),
        pytest.param(["--log-format", "xml", "check-config", "c.yaml"], id="bad-choice"),
        pytest.param(["check-config", "c.yaml", "--bogus"], id="unknown-flag"),
    ],
)
def test_bad_usage_exits_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage:" in err


# ------------------------------------------------------------------------------------------ check-config


def test_check_config_of_the_example(capsys, example_config_path):
    code, out, err = run(capsys, "check-config", example_config_path)
    assert code == 0
    assert out.startswith(f"{example_config_path}: OK")
    assert "3 routes, 3 contacts, 1 rotations" in out
    assert "warning" not in err


def test_check_config_takes_config_as_every_other_command_does(capsys, example_config_path, tmp_path):
    code, out, _ = run(capsys, "check-config", "--config", example_config_path)
    assert code == 0 and out.startswith(f"{example_config_path}: OK")
    other = write(tmp_path / "other.yaml", example_config_path.read_text())
    code, _, err = run(capsys, "check-config", "--config", example_config_path, other)
    assert code == 1 and "two config files given" in err


def test_check_config_warns_when_no_route_calls_anyone(capsys, tmp_path):
    code, out, err = run(capsys, "check-config", write(tmp_path / "c.yaml", MINIMAL))  # no routes at all
    assert code == 0 and ": OK — 0 routes" in out
    assert "warning: no route calls anyone" in err


def test_check_config_warns_without_webhook_auth(capsys, tmp_path):
    code, out, err = run(capsys, "check-config", write(tmp_path / "c.yaml", MINIMAL))
    assert code == 0
    assert ": OK" in out
    assert "webhook_auth" in err


def test_check_config_refuses_a_config_without_callback_credentials(capsys, tmp_path):
    path = write(tmp_path / "c.yaml", 'provider:\n  service_key: k\n  caller_id: "+15550001234"\n'
                                      "  callback: {auth_id: A2V}\n")
    code, out, err = run(capsys, "check-config", path)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:4: provider.callback: no callback credential")
    assert "allow_unauthenticated: true" in err


def test_check_config_warns_when_callbacks_are_unauthenticated(capsys, tmp_path):
    code, out, err = run(capsys, "check-config", write(tmp_path / "c.yaml", MINIMAL))
    assert code == 0 and ": OK" in out
    assert "warning: provider.callback.allow_unauthenticated is true" in err


def test_check_config_of_a_broken_config_names_file_line_and_key(capsys, tmp_path, example_config_path):
    text = example_config_path.read_text(encoding="utf-8")
    text = text.replace("max_in_flight: 8", "max_in_fligth: 8").replace("- {call: bob,", "- {call: bobby,")
    lines = text.splitlines()
    misspelt = next(i for i, line in enumerate(lines, 1) if "max_in_fligth" in line)
    bobby = next(i for i, line in enumerate(lines, 1) if "bobby" in line)
    path = write(tmp_path / "broken.yaml", text)

    code, out, err = run(capsys, "check-config", path)

    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:{misspelt}: provider.max_in_fligth: unknown key (check the spelling against config.example.yaml)",
        f"{path}: 1 problem(s)",
    ]
    # Cross-references are checked once every section is valid on its own.
    path = write(tmp_path / "broken.yaml", text.replace("max_in_fligth: 8", "max_in_flight: 8"))
    code, _, err = run(capsys, "check-config", path)
    assert code == 1
    assert err.splitlines()[0].startswith(f"{path}:{bobby}: routes.0.escalation.1.call: unknown contact 'bobby'")


def test_check_config_of_a_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "check-config", tmp_path / "nope.yaml")
    assert code == 1
    assert f"{tmp_path / 'nope.yaml'}" in err
    assert "cannot read" in err


@pytest.fixture
def simulator_url():
    """The simulator on a loopback port, served by its own event loop in a thread (the CLI runs its own loop)."""
    import asyncio
    import contextlib
    import threading

    from alert2voice.simulator import run_simulator

    loop, listening, urls = asyncio.new_event_loop(), threading.Event(), []
    serving = loop.create_task(run_simulator("127.0.0.1", 0, service_key="sim-key",
                                             on_listening=lambda url: (urls.append(url), listening.set())))

    def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serving)
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert listening.wait(10)
    yield urls[0]
    loop.call_soon_threadsafe(serving.cancel)
    thread.join(10)


def test_check_config_probe_says_whether_the_provider_takes_the_key(capsys, tmp_path, simulator_url):
    def probe(key: str, base_url: str = simulator_url) -> tuple[int, str, str]:
        config = MINIMAL.replace("service_key: k", f"service_key: {key}, base_url: '{base_url}'")
        return run(capsys, "check-config", "--config", write(tmp_path / "c.yaml", config), "--probe")

    code, out, _ = probe("sim-key")
    assert code == 0 and "provider ok: healthy: the service key is accepted" in out
    code, out, err = probe("a-revoked-key")
    assert code == 1 and "provider auth: service key refused (auth HTTP 403 code 7001" in err
    assert "a-revoked-key" not in out + err
    port = free_port()
    code, _, err = probe("sim-key", f"http://127.0.0.1:{port}")
    assert code == 1 and f"provider unreachable: cannot connect to http://127.0.0.1:{port}" in err


def test_check_config_without_probe_sends_nothing(capsys, tmp_path):
    config = MINIMAL.replace("service_key: k", f"service_key: k, base_url: 'http://127.0.0.1:{free_port()}'")
    code, _, err = run(capsys, "check-config", write(tmp_path / "c.yaml", config))
    assert code == 0 and "provider unreachable" not in err


@pytest.mark.parametrize("command", [["oncall"], ["routes", "test"]])
def test_other_commands_refuse_a_broken_config(capsys, tmp_path, command):
    path = write(tmp_path / "c.yaml", MINIMAL + "dedup: {window: 4 hours}\n")
    code, out, err = run(capsys, *command, "--config", path, "--at", AT)
    assert code == 1
    assert out == ""
    assert f"{path}:2: dedup.window: invalid duration" in err


# ------------------------------------------------------------------------------------------------ render

FIXTURE_ROUTES = {
    # fixture -> [(route, contact called)] at AT with config.example.yaml; resolved groups cause no call
    "firing_DiskFull.json": [("everything-else", None)],
    "firing_HighCPU.json": [("infra-critical", "carol"), ("everything-else", None)],
    "mixed_step1_firing.json": [("everything-else", None), ("infra-critical", "carol")],
    "mixed_step2_firing.json": [("infra-critical", "carol")],
    "mixed_step3_resolved.json": [],
    "prometheus_firing_FlipTargetDown.json": [("infra-critical", "carol")],
    "prometheus_resolved_FlipTargetDown.json": [],
    "resolved_HighCPU.json": [],
}


@pytest.fixture
def payloads_dir(fixtures_dir) -> Path:
    return fixtures_dir / "alertmanager"


@pytest.mark.parametrize("name", sorted(FIXTURE_ROUTES))
def test_render_every_fixture(capsys, example_config_path, payloads_dir, name):
    payload = payloads_dir / name
    assert payload.is_file(), f"fixture {payload} is missing"

    code, out, err = run(capsys, "render", "--config", example_config_path, payload, "--at", AT, "--json")

    assert code == 0, err
    calls = json.loads(out)
    assert [(c["route"], c["contact"]) for c in calls] == FIXTURE_ROUTES[name]
    for call in calls:
        # The first call of a page is attempt 1, with the correlationId the dispatcher will send.
        assert re.fullmatch(rf"a2v-{call['page_key'][:24]}-[0-9a-f]{{8}}-1", call["correlation_id"])
        if call["contact"] is None:
            assert "ssml" not in call
            continue
        assert call["text_format"] == "SSML"
        assert call["number"] != "+14155550199"  # masked
        assert ET.fromstring(call["ssml"]).tag == SPEAK

    # The text output prints the same SSML documents, each well-formed.
    code, text, err = run(capsys, "render", "--config", example_config_path, payload, "--at", AT)
    assert code == 0, err
    assert [ET.tostring(e) for e in speak_blocks(text)] == [
        ET.tostring(ET.fromstring(c["ssml"])) for c in calls if c.get("ssml")]
    if not calls:
        assert text.startswith("no call")


def test_render_text_output(capsys, example_config_path, payloads_dir):
    code, out, _ = run(capsys, "render", "--config", example_config_path, payloads_dir / "firing_HighCPU.json",
                       "--at", AT)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "# call 1: route infra-critical"
    assert lines[1] == "contact:        carol +14*****0199"
    assert lines[2] == "why:            named in step 1"
    assert re.fullmatch(r"correlationId:  a2v-[0-9a-f]{24}-[0-9a-f]{8}-1", lines[3])
    assert lines[4] == "SSML:"
    assert "# call 2: route everything-else" in lines
    assert "+14155550199" not in out


def test_render_escapes_label_values(capsys, example_config_path, payloads_dir, tmp_path):
    body = json.loads((payloads_dir / "firing_DiskFull.json").read_text(encoding="utf-8"))
    evil = '<b>&"'
    alert = body["alerts"][0]
    alert["labels"].update(severity="critical", cluster=evil)
    alert["annotations"]["summary"] = f"summary {evil} ends"
    path = write(tmp_path / "evil.json", json.dumps(body))

    code, out, err = run(capsys, "render", "--config", example_config_path, path, "--at", AT, "--json")

    assert code == 0, err
    [call] = json.loads(out)
    assert call["route"] == "infra-critical"
    root = ET.fromstring(call["ssml"])  # the characters never break the document
    assert root.tag == SPEAK
    text = "".join(root.itertext())
    assert evil in text
    assert f"summary {evil} ends" in text
    assert not [e for e in root.iter() if e.tag.endswith("}b") or e.tag == "b"]  # nothing injected


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param('{"version": "4", "alerts": [', "malformed JSON", id="truncated-json"),
        pytest.param("not json at all", "malformed JSON", id="not-json"),
        pytest.param('{"version": "4"}', "receiver", id="missing-fields"),
        pytest.param('{"version": "3", "receiver": "r", "status": "firing", "alerts": [], "groupKey": "g"}',
                     "version", id="unsupported-version"),
        pytest.param(None, "cannot read", id="missing-file"),
    ],
)
def test_render_of_a_malformed_payload_is_one_clear_line(capsys, example_config_path, tmp_path, content, fragment):
    path = tmp_path / "payload.json"
    if content is not None:
        write(path, content)

    code, out, err = run(capsys, "render", "--config", example_config_path, path, "--at", AT)

    assert code == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("alert2voice: ")
    assert str(path) in line
    assert fragment in line


def test_render_rejects_a_bad_at(capsys, example_config_path, payloads_dir):
    code, _, err = run(capsys, "render", "--config", example_config_path, payloads_dir / "firing_HighCPU.json",
                       "--at", "tomorrow")
    assert code == 1
    [line] = err.splitlines()
    assert "--at 'tomorrow'" in line


# ------------------------------------------------------------------------------------------- routes test


# What `routes test` says of the example config's throttle, after each route's steps.
EXAMPLE_LIMITS = ("  per-number limit: 3 calls per 15m, 7 calls per 1h; all numbers: 60 calls per 1m; held calls move"
                  " on after max_hold 1m (a resolved call is dropped); storm: past 5 calls per 2m, one summary call")


def test_routes_test_shows_route_contacts_and_why(capsys, example_config_path):
    code, out, err = run(capsys, "routes", "test", "--config", example_config_path, "team=payments",
                         "severity=critical", "--at", AT)
    assert code == 0, err
    assert out.splitlines() == [
        "route payments-critical",
        f"  step 1: rotation:payments-primary -> alice (calls; 2 attempt(s), 3m apart) — {SHIFT_47}",
        "  step 2: bob -> bob (calls; 1 attempt(s), 5m apart) — named in step 2",
        EXAMPLE_LIMITS,
    ]


def test_routes_test_skips_a_contact_in_quiet_hours(capsys, example_config_path):
    # 00:00 in Los Angeles: alice is on call but in quiet hours, and "page" is not exempt; bob is called.
    code, out, _ = run(capsys, "routes", "test", "--config", example_config_path, "team=payments",
                       "severity=page", "--at", NIGHT_LA)
    assert code == 0
    step1, step2 = out.splitlines()[1:3]
    assert step1.startswith("  step 1: rotation:payments-primary -> alice (SKIPPED, quiet hours;")
    assert step1.endswith(f"{SHIFT_47}; in quiet hours (00:00 PST, severity page)")
    assert step2.startswith("  step 2: bob -> bob (calls;")


def test_routes_test_critical_wakes_the_quiet_contact(capsys, example_config_path):
    code, out, _ = run(capsys, "routes", "test", "--config", example_config_path, "team=payments",
                       "severity=critical", "--at", NIGHT_LA)
    assert code == 0
    assert "-> alice (calls;" in out.splitlines()[1]


def test_routes_test_rotation_override(capsys, example_config_path):
    code, out, _ = run(capsys, "routes", "test", "--config", example_config_path, "team=payments",
                       'severity="critical"', "--at", "2026-12-25T12:00:00+00:00")
    assert code == 0
    assert "-> bob (calls; 2 attempt(s), 3m apart) — override for bob until 2026-12-27 00:00 Europe/London" in out


def test_routes_test_empty_escalation(capsys, example_config_path):
    code, out, _ = run(capsys, "routes", "test", "--config", example_config_path, "team=web", "--at", AT)
    assert code == 0
    assert out.splitlines() == ["route everything-else", "  nobody is called (empty escalation)"]


NO_CATCH_ALL = MINIMAL + textwrap.dedent("""\
    contacts: {bob: {number: "+442071838750", timezone: Europe/London}}
    routes:
      - name: audit
        matchers: ['team=~".+"']
        continue: true
        escalation: []
      - name: payments
        matchers: ['team="payments"']
        escalation: [{call: bob}]
    """)


def test_routes_test_without_a_match(capsys, tmp_path):
    path = write(tmp_path / "c.yaml", NO_CATCH_ALL)
    code, out, _ = run(capsys, "routes", "test", "--config", path, "severity=critical", "--at", AT)
    assert code == 0
    assert out.startswith("no route matches")
    assert "severity" in out
    assert "audit, payments" in out  # which routes exist

    code, _, _ = run(capsys, "routes", "test", "--config", path, "severity=critical", "--at", AT,
                     "--expect", "payments")
    assert code == 1


@pytest.mark.parametrize(
    ("labels", "expect", "code"),
    [
        (["team=payments"], "audit,payments", 0),
        (["team=payments"], "payments", 1),
        (["team=web"], "audit", 0),
        (["team=web"], "audit,payments", 1),
    ],
)
def test_routes_test_expect(capsys, tmp_path, labels, expect, code):
    path = write(tmp_path / "c.yaml", NO_CATCH_ALL)
    got, out, err = run(capsys, "routes", "test", "--config", path, *labels, "--at", AT, "--expect", expect)
    assert got == code
    assert "route audit (continue: true)" in out
    if code:
        assert f"expected {expect}, got " in err


def test_routes_test_rejects_a_bad_label(capsys, example_config_path):
    code, out, err = run(capsys, "routes", "test", "--config", example_config_path, "team", "--at", AT)
    assert code == 1
    assert out == ""
    [line] = err.splitlines()
    assert "label=value" in line


# ------------------------------------------------------------------------------------------------ oncall


def test_oncall_override(capsys, example_config_path):
    code, out, _ = run(capsys, "oncall", "--config", example_config_path, "--at", "2026-12-25T12:00:00+00:00")
    assert code == 0
    assert out.splitlines() == ["payments-primary: bob — override for bob until 2026-12-27 00:00 Europe/London"]


@pytest.mark.parametrize(
    ("instant", "line"),
    [
        # Clocks go forward on Sunday 2026-03-29; the Monday handover stays at 09:00 London time (08:00 UTC).
        ("2026-03-29T12:00:00+00:00",
         "payments-primary: bob — shift 12 of payments-primary (alice, bob), 2026-03-23 09:00 → 2026-03-30 09:00 "
         "Europe/London"),
        ("2026-03-30T07:59:00+00:00",
         "payments-primary: bob — shift 12 of payments-primary (alice, bob), 2026-03-23 09:00 → 2026-03-30 09:00 "
         "Europe/London"),
        ("2026-03-30T08:00:00+00:00",
         "payments-primary: alice — shift 13 of payments-primary (alice, bob), 2026-03-30 09:00 → 2026-04-06 09:00 "
         "Europe/London"),
        ("2026-03-30T08:59:00+01:00",
         "payments-primary: bob — shift 12 of payments-primary (alice, bob), 2026-03-23 09:00 → 2026-03-30 09:00 "
         "Europe/London"),
    ],
)
def test_oncall_either_side_of_the_dst_change(capsys, example_config_path, instant, line):
    code, out, _ = run(capsys, "oncall", "--config", example_config_path, "--at", instant)
    assert code == 0
    assert out.splitlines() == [line]


def test_oncall_next_lists_shifts_across_dst(capsys, example_config_path):
    code, out, _ = run(capsys, "oncall", "--config", example_config_path, "--at", "2026-03-20T12:00:00+00:00",
                       "--next", "3")
    assert code == 0
    assert out.splitlines() == [
        "payments-primary: alice — shift 11 of payments-primary (alice, bob), 2026-03-16 09:00 → 2026-03-23 09:00 "
        "Europe/London",
        "  then bob from 2026-03-23 09:00 GMT until 2026-03-30 09:00 BST",
        "  then alice from 2026-03-30 09:00 BST until 2026-04-06 09:00 BST",
        "  then bob from 2026-04-06 09:00 BST until 2026-04-13 09:00 BST",
    ]


def test_oncall_next_includes_overrides(capsys, example_config_path):
    code, out, _ = run(capsys, "oncall", "--config", example_config_path, "--at", "2026-12-23T12:00:00+00:00",
                       "--next", "3")
    assert code == 0
    assert out.splitlines()[1:] == [
        "  then bob from 2026-12-24 00:00 GMT until 2026-12-27 00:00 GMT",
        "  then alice from 2026-12-27 00:00 GMT until 2026-12-28 09:00 GMT",
        "  then bob from 2026-12-28 09:00 GMT until 2027-01-04 09:00 GMT",
    ]


def test_oncall_before_the_rotation_starts(capsys, example_config_path):
    code, out, _ = run(capsys, "oncall", "--config", example_config_path, "--at", "2025-12-31T12:00:00+00:00")
    assert code == 0
    assert out.splitlines() == [
        "payments-primary: nobody — rotation has not started yet (first shift 2026-01-05 09:00 Europe/London)"]


def test_oncall_without_rotations(capsys, tmp_path):
    code, out, _ = run(capsys, "oncall", "--config", write(tmp_path / "c.yaml", MINIMAL), "--at", AT)
    assert (code, out) == (0, "no rotations configured\n")


def test_oncall_rejects_a_bad_at(capsys, example_config_path):
    code, out, err = run(capsys, "oncall", "--config", example_config_path, "--at", "2026-13-01")
    assert code == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("alert2voice: --at '2026-13-01'")


def test_routes_test_prints_intervals_as_durations(capsys, tmp_path):
    path = write(tmp_path / "c.yaml", MINIMAL + textwrap.dedent("""\
        contacts: {bob: {number: "+442071838750", timezone: Europe/London}}
        routes:
          - name: fast
            escalation: [{call: bob, attempts: 3, interval: 90s}, {call: bob, attempts: 2, interval: 30s}]
        """))
    code, out, _ = run(capsys, "routes", "test", "--config", path, "team=x", "--at", AT)
    assert code == 0
    step1, step2 = out.splitlines()[1:3]
    assert "3 attempt(s), 1m30s apart" in step1
    assert "2 attempt(s), 30s apart" in step2


def test_check_config_reports_template_problems(capsys, tmp_path):
    (tmp_path / "tpl").mkdir()
    write(tmp_path / "tpl" / "bad.ssml.j2",
          '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">\n'
          "{{ nope }}\n</speak>\n")
    path = write(tmp_path / "c.yaml", MINIMAL + "templates: {directory: tpl}\nroutes:\n  - name: r\n"
                                                "    template: bad.ssml.j2\n")
    code, out, err = run(capsys, "check-config", path)
    assert code == 1
    assert out == ""
    assert err.splitlines()[0] == f"{path}:5: routes.0.template: bad.ssml.j2:2: 'nope' is undefined"


def test_check_config_lists_the_heartbeats(capsys, example_config_path):
    code, out, _ = run(capsys, "check-config", example_config_path)
    assert code == 0
    assert out.splitlines()[1] == (
        'heartbeat alertmanager-watchdog: pages after 5m without a refresh (alerts matching alertname="Watchdog" or '
        "POST /heartbeats/alertmanager-watchdog); calls rotation:payments-primary")


def test_routes_test_says_a_heartbeat_takes_the_alert(capsys, example_config_path):
    code, out, err = run(capsys, "routes", "test", "--config", example_config_path, "alertname=Watchdog",
                         "severity=none", "--at", AT, "--expect", "heartbeat:alertmanager-watchdog")
    assert code == 0, err
    assert out.splitlines() == [
        "heartbeat alertmanager-watchdog: a firing alert with these labels refreshes it and is not routed "
        "(no refresh for 5m: a page on route heartbeat:alertmanager-watchdog)",
        f"  step 1: rotation:payments-primary -> alice (calls; 1 attempt(s), 5m apart) — {SHIFT_47}",
        EXAMPLE_LIMITS,
    ]
    code, _, err = run(capsys, "routes", "test", "--config", example_config_path, "alertname=Watchdog",
                       "--expect", "everything-else")
    assert code == 1 and "got heartbeat:alertmanager-watchdog" in err
