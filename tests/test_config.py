"""Configuration: the example loads, defaults, and every problem named by file, line and key path."""

import textwrap
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from alert2voice.config import Config
from alert2voice.config_file import ConfigError, Problem, load_config, parse_config, secrets_of
from alert2voice.units import Rate

FILE = "config.yaml"
# A provider section without its callback: a config must say how callbacks authenticate.
BARE = textwrap.dedent("""\
    provider:
      service_key: minimal-service-key
      caller_id: "+15550001234"
    """)
# The smallest valid config: everything else has a default.
MINIMAL = BARE + "  callback: {allow_unauthenticated: true}\n"


def line_of(text: str, needle: str) -> int:
    """The 1-based line where `needle` (which must occur exactly once) starts."""
    assert text.count(needle) == 1, f"{needle!r} occurs {text.count(needle)} times"
    return text[: text.index(needle)].count("\n") + 1


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the example config"
    return text.replace(old, new)


def problems_of(text: str, **kwargs) -> list[Problem]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, file=FILE, **kwargs)
    assert raised.value.problems, "a ConfigError must list at least one problem"
    return raised.value.problems


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def example_text(example_config_path) -> str:
    return example_config_path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ the example


def test_example_config_loads_with_its_values_and_defaults(example_config_path):
    config = load_config(example_config_path, env={})
    here = example_config_path.parent

    assert config.server.listen == "127.0.0.1:9095"
    assert config.server.host_port == ("127.0.0.1", 9095)
    assert config.server.max_body_bytes == 4 * 1024 * 1024
    assert config.server.shutdown_grace == timedelta(seconds=10)
    assert [t.get_secret_value() for t in config.webhook_auth.bearer_tokens] == ["example-webhook-token"]

    provider = config.provider
    assert provider.url == "http://127.0.0.1:9096"
    assert provider.service_key.get_secret_value() == "simulator-service-key"
    assert provider.caller_id == "+15550001234"
    assert provider.mode == "message"
    assert provider.callback.auth_id == "A2VSIM01"
    assert provider.callback.bearer_token.get_secret_value() == "example-callback-token"
    assert provider.callback.deadline == timedelta(minutes=2)
    assert provider.rate_limit == Rate(10, timedelta(seconds=1))
    assert (provider.retry.initial, provider.retry.max, provider.retry.give_up_after) == (
        timedelta(seconds=1), timedelta(minutes=1), timedelta(minutes=15))

    assert config.templates.directory is None
    assert (config.templates.firing, config.templates.resolved) == ("firing.ssml.j2", "resolved.ssml.j2")
    assert config.store.backend == "sqlite"
    assert config.store.path == here / "alert2voice.db"  # relative to the config file, not the cwd
    assert config.dedup.window == timedelta(hours=4)
    assert config.dedup.ignore_labels == ["replica", "prometheus_replica"]

    alice = config.contacts["alice"]
    assert alice.number == "+14155550101"
    assert str(alice.timezone) == "America/Los_Angeles"
    assert (alice.quiet_hours.from_, alice.quiet_hours.to) == (time(22, 0), time(7, 0))
    assert alice.quiet_hours.unless_severity == ["critical"]
    assert config.speech.for_contact(alice.speech).voice == "JennyNeural"
    assert config.contacts["carol"].quiet() is None

    rotation = config.rotation("payments-primary")
    assert rotation.members == ("alice", "bob")
    assert rotation.shift == timedelta(weeks=1)
    assert str(rotation.tz) == "Europe/London"
    assert [o.contact for o in rotation.overrides] == ["bob"]

    assert [r.name for r in config.routes] == ["payments-critical", "infra-critical", "everything-else"]
    payments = config.routes[0]
    assert [str(m) for m in payments.matchers] == ['team="payments"', 'severity=~"critical|page"']
    assert [(s.call, s.attempts, s.interval) for s in payments.escalation] == [
        ("rotation:payments-primary", 2, timedelta(minutes=3)),
        ("bob", 1, timedelta(minutes=5)),  # attempts and interval defaulted
    ]
    assert payments.escalation[0].rotation == "payments-primary"
    assert payments.escalation[1].rotation is None
    assert (payments.repeat, payments.send_resolved, payments.continue_) == (2, True, False)
    assert config.routes[1].repeat == 0
    assert config.routes[1].send_resolved is False
    assert config.routes[2].matchers == []
    assert config.routes[2].escalation == []

    assert [(r.calls, r.per) for r in config.throttle.per_number] == [
        (3, timedelta(minutes=15)), (7, timedelta(hours=1))]
    assert config.throttle.max_hold == timedelta(minutes=1)
    assert (config.acknowledgement.digit, config.acknowledgement.escalate_digit,
            config.acknowledgement.repeat_digit) == ("1", "5", "*")
    assert config.acknowledgement.silence is None


def test_minimal_config_takes_every_default():
    config = parse_config(MINIMAL, file=FILE, env={})

    assert config.server.listen == "0.0.0.0:9095"
    assert config.server.max_body_bytes == 4 * 1024 * 1024
    assert config.webhook_auth is None
    assert config.provider.url == "https://api.us.webexconnect.io"
    assert config.provider.max_in_flight == 8
    assert config.provider.timeout == timedelta(seconds=10)
    assert config.provider.callback.authenticated is False
    assert (config.speech.language, config.speech.voice, config.speech.gender) == ("en-US", "AriaNeural", "FEMALE")
    assert config.speech.max_alerts_spoken == 3
    assert config.store.backend == "sqlite"
    assert config.dedup.window == timedelta(hours=4)
    assert config.dedup.ignore_labels == ["replica", "prometheus_replica"]
    assert (config.contacts, config.rotations, config.routes) == ({}, {}, [])
    assert config.throttle.global_ is None
    assert config.throttle.max_hold == timedelta(minutes=1)
    assert (config.acknowledgement.digit, config.acknowledgement.escalate_digit,
            config.acknowledgement.repeat_digit) == ("1", "5", "*")


def test_menu_keys_may_be_turned_off():
    config = parse_config(MINIMAL + 'acknowledgement: {escalate_digit: null, repeat_digit: null}\n', file=FILE, env={})
    assert (config.acknowledgement.escalate_digit, config.acknowledgement.repeat_digit) == (None, None)


@pytest.mark.parametrize(
    ("region", "url"),
    [("us", "https://api.us.webexconnect.io"), ("eu", "https://api.eu.webexconnect.io"),
     ("au", "https://api.au.webexconnect.io")],
)
def test_region_selects_the_provider_url(region, url):
    config = parse_config(MINIMAL + f"  region: {region}\n", file=FILE, env={})
    assert config.provider.url == url


# --------------------------------------------------------------------------------------------- problems


PROBLEMS = [
    # id, (old, new) in config.example.yaml, key path, needle locating the line, message fragment
    pytest.param("max_in_flight: 8", "max_in_fligth: 8",
                 "provider.max_in_fligth", "max_in_fligth", "unknown key", id="misspelt-key"),
    pytest.param("\nthrottle:", "\nthrotle:", "throtle", "throtle:", "unknown key", id="misspelt-section"),
    pytest.param("- {call: bob, attempts: 1}", "- {call: bobby, attempts: 1}",
                 "routes.0.escalation.1.call", "{call: bobby", "unknown contact 'bobby'", id="unknown-contact"),
    pytest.param("{call: rotation:payments-primary, attempts: 2", "{call: rotation:payments-second, attempts: 2",
                 "routes.0.escalation.0.call", "rotation:payments-second", "unknown rotation 'payments-second'",
                 id="unknown-rotation"),
    pytest.param("members: [alice, bob]", "members: [alice, dave]",
                 "rotations.payments-primary.members.1", "members: [alice, dave]", "unknown contact 'dave'",
                 id="unknown-rotation-member"),
    pytest.param("{contact: bob, from:", "{contact: eve, from:",
                 "rotations.payments-primary.overrides.0.contact", "{contact: eve", "unknown contact 'eve'",
                 id="unknown-override-contact"),
    pytest.param('number: "+14155550101"', 'number: "4155550101"',
                 "contacts.alice.number", '"4155550101"', "E.164", id="number-without-plus"),
    pytest.param('"+442071838750"', '"+4420718"',
                 "contacts.bob.number", '"+4420718"', "wrong length", id="number-too-short-for-GB"),
    pytest.param('number: "+14155550101"', "number: +14155550101",
                 "contacts.alice.number", "number: +14155550101", "quoted", id="number-unquoted-int"),
    pytest.param('caller_id: "+15550001234"', "caller_id: +15550001234",
                 "provider.caller_id", "caller_id: +15550001234", "quoted", id="caller-id-unquoted-int"),
    pytest.param("timezone: America/Los_Angeles", "timezone: America/Los_Angles",
                 "contacts.alice.timezone", "America/Los_Angles", "unknown timezone", id="unknown-timezone"),
    pytest.param("    timezone: Europe/London\n", "    timezone: Europe/Londres\n",
                 "rotations.payments-primary.timezone", "Europe/Londres", "unknown timezone",
                 id="unknown-rotation-timezone"),
    pytest.param("window: 4h", "window: 4 hours", "dedup.window", "window: 4 hours", "invalid duration",
                 id="invalid-duration"),
    pytest.param("attempts: 2, interval: 3m}", "attempts: 2, interval: 3min}",
                 "routes.0.escalation.0.interval", "interval: 3min", "invalid duration",
                 id="invalid-duration-in-flow-mapping"),
    pytest.param("shift: 1w ", "shift: 1m1w ", "rotations.payments-primary.shift", "shift: 1m1w",
                 "invalid duration", id="duration-units-out-of-order"),
    pytest.param("""matchers: ['severity="critical"']""", """matchers: ['severity=="critical"']""",
                 "routes.1.matchers", """matchers: ['severity==""", "unescaped double quote",
                 id="invalid-matcher"),
    pytest.param("""'severity=~"critical|page"'""", """'severity=~"(critical|page"'""",
                 "routes.0.matchers", "(critical|page", "regexp", id="invalid-matcher-regex"),
    pytest.param("  - name: infra-critical", "  - name: payments-critical",
                 "routes.1.name", "  - name: payments-critical\n    matchers: ['severity",
                 "duplicate route name 'payments-critical'", id="duplicate-route-name"),
    pytest.param("  max_alerts_spoken: 3", "  voice: GuyNeural\n  max_alerts_spoken: 3",
                 "speech.voice", "voice: GuyNeural", "duplicate key", id="duplicate-yaml-key"),
    pytest.param("mode: message ", "mode: messages ", "provider.mode", "mode: messages", "'message'",
                 id="literal"),
    pytest.param("region: us ", "region: mars ", "provider.region", "region: mars", "'mars'",
                 id="unknown-region"),
    pytest.param('from: "22:00"', 'from: "25:00"', "contacts.alice.quiet_hours.from", '"25:00"',
                 "invalid clock time", id="invalid-clock-time"),
    pytest.param("rate_limit: 10/s", "rate_limit: ten/s", "provider.rate_limit", "ten/s", "invalid rate",
                 id="invalid-rate"),
    pytest.param("max_body_bytes: 4MiB", "max_body_bytes: 4 megs", "server.max_body_bytes", "4 megs",
                 "invalid size", id="invalid-size"),
    pytest.param('digit: "1"', 'digit: "12"', "acknowledgement.digit", 'digit: "12"', "pattern",
                 id="invalid-digit"),
    pytest.param('escalate_digit: "5"', 'escalate_digit: "A"', "acknowledgement.escalate_digit",
                 'escalate_digit: "A"', "pattern", id="invalid-escalate-digit"),
    pytest.param('repeat_digit: "*"', 'repeat_digit: "1"', "acknowledgement", "acknowledgement:",
                 "digit, escalate_digit and repeat_digit must be different keys (got 1, 5, 1)", id="same-key-twice"),
    pytest.param("max_hold: 1m", "max_hold: a minute", "throttle.max_hold", "a minute", "invalid duration",
                 id="invalid-max-hold"),
    pytest.param("listen: 127.0.0.1:9095", "listen: 127.0.0.1", "server.listen", "listen: 127.0.0.1 ",
                 "host:port", id="listen-without-port"),
]


@pytest.mark.parametrize(("old", "new", "path", "needle", "message"), PROBLEMS)
def test_problem_names_key_path_and_line(example_text, old, new, path, needle, message):
    text = edit(example_text, old, new)
    problems = problems_of(text, env={})

    assert [p.path for p in problems] == [path]
    problem = problems[0]
    assert problem.file == FILE
    assert problem.line == line_of(text, needle)
    assert message in problem.message
    assert str(problem) == f"{FILE}:{problem.line}: {path}: {problem.message}"


def test_every_problem_is_reported_at_once(example_text):
    text = edit(example_text, "max_in_flight: 8", "max_in_fligth: 8")
    text = edit(text, "- {call: bob, attempts: 1}", "- {call: bobby, attempts: 1}")
    text = edit(text, "window: 4h", "window: 4")

    paths = {p.path for p in problems_of(text, env={})}

    assert {"provider.max_in_fligth", "dedup.window"} <= paths
    # Cross-references are checked by the root model, which pydantic runs only once its fields are valid.
    text = edit(example_text, "- {call: bob, attempts: 1}", "- {call: bobby, attempts: 1}")
    text = edit(text, "members: [alice, bob]", "members: [alice, dave]")
    assert {p.path for p in problems_of(text, env={})} == {
        "routes.0.escalation.1.call", "rotations.payments-primary.members.1"}


def test_unquoted_number_message_shows_the_quoted_form(example_text):
    text = edit(example_text, 'number: "+14155550101"', "number: +14155550101")
    [problem] = problems_of(text, env={})
    assert '"+14155550101"' in problem.message


def test_missing_required_key():
    [problem] = problems_of(MINIMAL.replace("caller_id", "# caller_id"), env={})
    assert (problem.path, problem.line) == ("provider.caller_id", 1)
    assert "missing" in problem.message


@pytest.mark.parametrize("text", ["", "\n", "# nothing but a comment\n", "---\n"])
def test_empty_file_reports_the_missing_provider(text):
    [problem] = problems_of(text, env={})
    assert problem.path == "provider"
    assert "missing" in problem.message
    assert str(problem).startswith(FILE)
    assert str(problem).endswith(": provider: required key is missing")


def test_invalid_yaml_names_the_line():
    text = MINIMAL + "server:\n  listen: 127.0.0.1:9095\n  public_url: http://x: y\n"
    [problem] = problems_of(text, env={})
    assert problem.line == line_of(text, "public_url")
    assert "invalid YAML" in problem.message
    assert str(problem).startswith(f"{FILE}:{problem.line}: (top level): invalid YAML")


def test_top_level_must_be_a_mapping():
    [problem] = problems_of("- provider\n- routes\n", env={})
    assert problem.line == 1
    assert "mapping" in problem.message


# ------------------------------------------------------------------------------------------ quiet hours


@pytest.mark.parametrize(
    ("yaml_from", "yaml_to", "start", "end"),
    [
        pytest.param('"22:00"', '"07:00"', time(22), time(7), id="quoted"),
        # YAML 1.1 reads unquoted 22:00 as the base-60 integer 1320 (and 7:00 as 420).
        pytest.param("22:00", "7:00", time(22), time(7), id="unquoted-base-60"),
        pytest.param("22:00", "07:00", time(22), time(7), id="unquoted-leading-zero-stays-a-string"),
        pytest.param("23:30", '"6:05"', time(23, 30), time(6, 5), id="mixed"),
    ],
)
def test_quiet_hours_clock_times(yaml_from, yaml_to, start, end):
    text = MINIMAL + textwrap.dedent(f"""\
        contacts:
          alice:
            number: "+14155550101"
            quiet_hours: {{from: {yaml_from}, to: {yaml_to}}}
        """)
    quiet = parse_config(text, file=FILE, env={}).contacts["alice"].quiet_hours
    assert (quiet.from_, quiet.to) == (start, end)


def test_unquoted_invalid_clock_time_is_quoted_back_as_written():
    # YAML turns an unquoted 25:00 into 1500; the message must show what the user wrote.
    text = MINIMAL + 'contacts:\n  alice:\n    number: "+14155550101"\n    quiet_hours: {from: 25:00, to: "07:00"}\n'
    [problem] = problems_of(text, env={})
    assert (problem.path, problem.line) == ("contacts.alice.quiet_hours.from", line_of(text, "quiet_hours"))
    assert "25:00" in problem.message


# ------------------------------------------------------------------------------------------- templates


def _template_config(tmp_path: Path, routes: str) -> Path:
    return write(tmp_path / "etc" / FILE, MINIMAL + "templates:\n  directory: tpl\n" + textwrap.dedent(routes))


SPEAK = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="{{ language }}">'


def test_template_with_undefined_variable_is_a_problem_at_the_route(tmp_path):
    write(tmp_path / "etc" / "tpl" / "bad.ssml.j2", f"{SPEAK}\n<s>{{{{ alerts|length }}}} alerts</s>\n"
                                                  "<s>{{ nope }}</s>\n</speak>\n")
    path = _template_config(tmp_path, """\
        routes:
          - name: fine
          - name: broken
            template: bad.ssml.j2
        """)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})

    [problem] = raised.value.problems
    assert problem.path == "routes.1.template"
    assert problem.line == line_of(path.read_text(), "template: bad.ssml.j2")
    assert "bad.ssml.j2:3" in problem.message  # the template file and its line
    assert "nope" in problem.message
    assert problem.file == str(path)


def test_a_broken_default_template_is_one_problem_at_its_key_not_one_per_route(tmp_path):
    # Routes without a template of their own name none: the problem is said once, where the file names it.
    write(tmp_path / "etc" / "tpl" / "bad.ssml.j2", f"{SPEAK}<s>{{{{ route|nosuchfilter }}}}</s></speak>\n")
    write(tmp_path / "etc" / "tpl" / "bad.txt.j2", "{{ route }}")
    path = write(tmp_path / "etc" / FILE, MINIMAL + textwrap.dedent("""\
        templates:
          directory: tpl
          firing: bad.ssml.j2
        routes:
          - name: one
          - name: two
          - name: plain
            text_format: TEXT
        """))
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert [str(p) for p in raised.value.problems] == [
        f"{path}:{line_of(path.read_text(), 'firing: bad')}: templates.firing: bad.ssml.j2:1: "
        "No filter named 'nosuchfilter'."]


def test_a_broken_template_named_twice_is_one_problem_naming_both_keys(tmp_path):
    # Two routes name bad.ssml.j2; a TEXT route names the twin of templates.firing by its text_format.
    for name, body in {"bad.ssml.j2": f"{SPEAK}{{% if route %}}</speak>\n", "firing.txt.j2": "{{ nope }}"}.items():
        write(tmp_path / "etc" / "tpl" / name, body)
    routes = "routes:\n  - {name: one, template: bad.ssml.j2}\n  - name: two\n    template: bad.ssml.j2\n"
    path = _template_config(tmp_path, routes + "  - {name: plain, text_format: TEXT}\n")
    text = path.read_text()
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    second = text.index("template: bad", text.index("name: two"))  # the second route's
    assert [(p.path, p.line) for p in raised.value.problems] == [
        ("routes.0.template", line_of(text, "name: one")),
        ("routes.2.text_format", line_of(text, "text_format: TEXT"))]
    first, plain = raised.value.problems
    assert first.message.startswith("bad.ssml.j2:1: Unexpected end of template.")
    assert first.message.endswith(f" (also named by routes.1.template at line {text[:second].count(chr(10)) + 1})")
    assert plain.message.startswith("firing.txt.j2:1: 'nope' is undefined")


def test_the_app_speaks_with_the_renderer_that_checked_the_templates(tmp_path):
    from alert2voice.live import make_speech
    from alert2voice.speech import sample_contexts

    template = tmp_path / "etc" / "tpl" / "mine.ssml.j2"
    write(template, f"{SPEAK}<s>checked {{{{ alerts|length }}}}</s></speak>")
    path = _template_config(tmp_path, """\
        routes:
          - name: r
            template: mine.ssml.j2
        """)
    config = load_config(path, env={})
    speech = make_speech(config)
    assert make_speech(config) is speech
    ctx = sample_contexts(datetime.now(UTC))[0]
    # Compiled when checked: a later change to the file is not spoken until a reload checks it.
    write(template, f"{SPEAK}<s>changed {{{{ nope }}}}</s></speak>")
    assert "checked 4" in speech.render("mine.ssml.j2", ctx)
    with pytest.raises(ConfigError):
        load_config(path, env={})  # the reload that would check the broken change refuses it
    write(template, f"{SPEAK}<s>changed</s></speak>")
    assert "changed" in make_speech(load_config(path, env={})).render("mine.ssml.j2", ctx)


def test_missing_template_is_a_problem_at_the_route(tmp_path):
    (tmp_path / "etc" / "tpl").mkdir(parents=True)
    path = _template_config(tmp_path, """\
        routes:
          - name: r
            template: nowhere.ssml.j2
        """)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})

    [problem] = raised.value.problems
    assert problem.path == "routes.0.template"
    assert problem.line == line_of(path.read_text(), "template: nowhere.ssml.j2")
    assert "nowhere.ssml.j2" in problem.message
    assert "not found" in problem.message


def test_user_template_overriding_a_builtin_is_checked(tmp_path):
    write(tmp_path / "etc" / "tpl" / "firing.ssml.j2", f"{SPEAK}\n{{{{ alerts[0].labels.nope }}}}\n</speak>\n")
    path = _template_config(tmp_path, "")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    [problem] = raised.value.problems
    assert problem.path == "templates.firing"
    assert "firing.ssml.j2:2" in problem.message


def test_missing_template_directory_is_a_problem(tmp_path):
    # A typo in the directory must not silently fall back to the built-in templates.
    path = _template_config(tmp_path, "")  # tpl/ is never created
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    [problem] = raised.value.problems
    assert problem.path == "templates.directory"
    assert problem.line == line_of(path.read_text(), "directory: tpl")
    assert str(tmp_path / "etc" / "tpl") in problem.message


def test_good_user_templates_load(tmp_path):
    write(tmp_path / "etc" / "tpl" / "short.ssml.j2", f"{SPEAK}<s>{{{{ alerts|length }}}} alerts on {{{{ route }}}}</s></speak>")
    write(tmp_path / "etc" / "tpl" / "plain.txt.j2", "{{ alerts|length }} alerts")
    path = _template_config(tmp_path, """\
        routes:
          - name: r
            template: short.ssml.j2
            resolved_template: plain.txt.j2
        """)
    config = load_config(path, env={})
    assert config.templates.directory == tmp_path / "etc" / "tpl"


def test_a_plain_speak_template_is_accepted_and_completed(tmp_path):
    from alert2voice.live import make_speech
    from alert2voice.speech import sample_contexts

    write(tmp_path / "etc" / "tpl" / "plain.ssml.j2", "<speak>An alert is firing.</speak>")
    path = _template_config(tmp_path, """\
        routes:
          - name: r
            template: plain.ssml.j2
        """)
    config = load_config(path, env={})
    ctx = sample_contexts(datetime.now(UTC))[0]
    assert make_speech(config).render("plain.ssml.j2", ctx) == (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">An alert is firing.</speak>')


def test_a_label_not_every_alert_has_is_a_problem_with_a_hint(tmp_path):
    # Every sample alert that is spoken has an instance; an alert with nothing but its name has none.
    write(tmp_path / "etc" / "tpl" / "k8s.ssml.j2",
          f"{SPEAK}{{% for alert in alerts_spoken %}}<s>{{{{ alert.labels.instance }}}}</s>{{% endfor %}}</speak>")
    path = _template_config(tmp_path, """\
        routes:
          - name: r
            template: k8s.ssml.j2
        """)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    [problem] = raised.value.problems
    assert problem.path == "routes.0.template"
    assert problem.message.startswith("k8s.ssml.j2:1: 'dict object' has no attribute 'instance'")
    assert 'write .get("instance"): alert.labels.get("instance") or alert.annotations.get("instance")' in problem.message


# --------------------------------------------------------------------------------- environment variables


def test_env_expansion():
    text = textwrap.dedent("""\
        server:
          public_url: https://${HOST}:9095
        provider:
          service_key: ${WEBEX_KEY}
          caller_id: "${CALLER}"
          callback: {auth_id: "cost$$5 and $${NOT_EXPANDED} and lone $ sign", bearer_token: "${CB_TOKEN}"}
        """)
    env = {"HOST": "a2v.example.com", "WEBEX_KEY": "key-from-env", "CALLER": "+15550001234", "CB_TOKEN": "cb-env"}

    config = parse_config(text, file=FILE, env=env)

    assert config.server.public_url == "https://a2v.example.com:9095"
    assert config.provider.service_key.get_secret_value() == "key-from-env"
    assert config.provider.caller_id == "+15550001234"
    assert config.provider.callback.auth_id == "cost$5 and ${NOT_EXPANDED} and lone $ sign"
    assert {"key-from-env", "cb-env"} <= set(secrets_of(config))


def test_env_expansion_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("A2V_TEST_SERVICE_KEY", "from-os-environ")
    text = MINIMAL.replace("minimal-service-key", "${A2V_TEST_SERVICE_KEY}")
    assert parse_config(text, file=FILE).provider.service_key.get_secret_value() == "from-os-environ"


def test_missing_env_variable_is_a_problem_naming_it():
    text = MINIMAL.replace("minimal-service-key", "${WEBEX_KEY}")
    problems = problems_of(text, env={"OTHER": "x"})
    [problem] = [p for p in problems if "WEBEX_KEY" in p.message]
    assert (problem.path, problem.line) == ("provider.service_key", line_of(text, "service_key"))
    assert "not set" in problem.message


def test_env_values_are_not_expanded_again():
    text = MINIMAL.replace("minimal-service-key", "${KEY}")
    config = parse_config(text, file=FILE, env={"KEY": "a${OTHER}b$$c"})
    assert config.provider.service_key.get_secret_value() == "a${OTHER}b$$c"


# ------------------------------------------------------------------------------------------ secret files


def _provider_with(key_lines: str) -> str:
    return ("provider:\n" + textwrap.indent(textwrap.dedent(key_lines), "  ") + '  caller_id: "+15550001234"\n'
            "  callback: {allow_unauthenticated: true}\n")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret \n", "s3cret "),  # only the newline goes: spaces may be part of a secret
    ],
)
def test_secret_file_is_read_with_the_trailing_newline_stripped(tmp_path, monkeypatch, content, expected):
    write(tmp_path / "etc" / "secrets" / "webex-key", content)
    path = write(tmp_path / "etc" / FILE, _provider_with("service_key_file: secrets/webex-key\n"))
    monkeypatch.chdir(tmp_path)  # relative secret paths resolve against the config's directory, not the cwd

    config = load_config(path, env={})

    assert config.provider.service_key.get_secret_value() == expected


def test_absolute_secret_path(tmp_path):
    key = write(tmp_path / "elsewhere" / "key", "abs-secret\n")
    path = write(tmp_path / "etc" / FILE, _provider_with(f"service_key_file: {key}\n"))
    assert load_config(path, env={}).provider.service_key.get_secret_value() == "abs-secret"


SECRET_FILES = [
    # (YAML putting `<name>_file: FILE` in place, key path of the *_file key, attribute path of the secret)
    pytest.param(_provider_with("service_key_file: FILE\n"), "provider.service_key_file",
                 ("provider", "service_key"), id="provider.service_key_file"),
    pytest.param(BARE + "  callback: {bearer_token_file: FILE}\n", "provider.callback.bearer_token_file",
                 ("provider", "callback", "bearer_token"), id="callback.bearer_token_file"),
    pytest.param(BARE + "  callback: {hub_secret_file: FILE}\n", "provider.callback.hub_secret_file",
                 ("provider", "callback", "hub_secret"), id="callback.hub_secret_file"),
    pytest.param(BARE + "  callback:\n    header: {name: X-Key, value_file: FILE}\n",
                 "provider.callback.header.value_file", ("provider", "callback", "header", "value"),
                 id="callback.header.value_file"),
    pytest.param(MINIMAL + "webhook_auth:\n  basic_auth: {username: am, password_file: FILE}\n",
                 "webhook_auth.basic_auth.password_file", ("webhook_auth", "basic_auth", "password"),
                 id="basic_auth.password_file"),
    pytest.param(MINIMAL + "store: {backend: redis, url_file: FILE}\n", "store.url_file", ("store", "url"),
                 id="store.url_file"),
]
# What a secret file holds where the key wants a particular form (a URL), else "file-secret-value".
SECRET_TEXT = {"store.url_file": "redis://:file-secret-value@redis:6379/0"}


def _attr(obj, names):
    for name in names:
        obj = getattr(obj, name)
    return obj


@pytest.mark.parametrize(("text", "key", "attrs"), SECRET_FILES)
def test_every_secret_file_is_read(tmp_path, text, key, attrs):
    secret = SECRET_TEXT.get(key, "file-secret-value")
    write(tmp_path / "the-secret", secret + "\n")
    path = write(tmp_path / FILE, text.replace("FILE", "the-secret"))

    config = load_config(path, env={})

    assert _attr(config, attrs).get_secret_value() == secret
    assert secret in secrets_of(config)


@pytest.mark.parametrize(("text", "key", "attrs"), SECRET_FILES)
def test_missing_secret_file_is_a_problem_naming_key_and_path(tmp_path, text, key, attrs):
    path = write(tmp_path / FILE, text.replace("FILE", "missing-secret"))
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})

    [problem] = raised.value.problems
    assert str(tmp_path / "missing-secret") in problem.message
    assert "cannot read" in problem.message
    assert problem.path == key
    assert problem.line == line_of(path.read_text(), "missing-secret")


def test_inline_and_file_secret_together_is_a_problem(tmp_path):
    write(tmp_path / "key", "from-file\n")
    text = _provider_with("service_key: inline\nservice_key_file: key\n")
    path = write(tmp_path / FILE, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})

    [problem] = raised.value.problems
    assert "service_key" in problem.message
    assert "service_key_file" in problem.message
    assert problem.path in ("provider.service_key", "provider.service_key_file")
    assert problem.line in (line_of(text, "service_key:"), line_of(text, "service_key_file:"))


def test_missing_service_key_is_a_problem():
    [problem] = problems_of('provider:\n  caller_id: "+15550001234"\n  callback: {allow_unauthenticated: true}\n',
                            env={})
    assert problem.path.startswith("provider")
    assert "service_key" in problem.message


# --------------------------------------------------------------------------------------- webhook tokens


def test_bearer_tokens_file_with_several_tokens_and_comments(tmp_path):
    write(tmp_path / "tokens", textwrap.dedent("""\
        # current token
        token-2026-11

        # the previous one, until every Alertmanager has the new one
          token-2026-10  \r
           # an indented comment is still a comment
        """))
    path = write(tmp_path / FILE, MINIMAL + "webhook_auth:\n  bearer_tokens: [inline-token]\n"
                                            "  bearer_tokens_file: tokens\n")

    config = load_config(path, env={})

    tokens = [t.get_secret_value() for t in config.webhook_auth.bearer_tokens]
    assert tokens == ["inline-token", "token-2026-11", "token-2026-10"]


def test_bearer_tokens_file_without_tokens_is_a_problem(tmp_path):
    write(tmp_path / "tokens", "# no token yet\n\n")
    text = MINIMAL + "webhook_auth:\n  bearer_tokens_file: tokens\n"
    path = write(tmp_path / FILE, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    [problem] = raised.value.problems
    assert problem.path.startswith("webhook_auth")
    assert "no token" in problem.message


def test_webhook_auth_section_without_credentials_is_a_problem():
    [problem] = problems_of(MINIMAL + "webhook_auth: {bearer_tokens: []}\n", env={})
    assert problem.path == "webhook_auth"


# ------------------------------------------------------------------------ callback and admin credentials


def test_config_without_callback_credentials_is_refused_naming_provider_callback():
    [problem] = problems_of(BARE, env={})
    assert (problem.file, problem.path, problem.line) == (FILE, "provider.callback", 1)
    assert "allow_unauthenticated" in problem.message
    text = BARE + "  callback: {auth_id: A2V, deadline: 1m}\n"
    [problem] = problems_of(text, env={})
    assert (problem.path, problem.line) == ("provider.callback", line_of(text, "callback:"))


def test_allow_unauthenticated_passes_with_a_warning():
    config = parse_config(MINIMAL, file=FILE, env={})
    assert config.provider.callback.authenticated is False
    assert any("allow_unauthenticated" in w for w in config.warnings)
    with_token = parse_config(BARE + "  callback: {bearer_token: t}\n", file=FILE, env={})
    assert not any("callback" in w for w in with_token.warnings)


@pytest.mark.parametrize(("listen", "admin_auth", "warned"), [
    ("0.0.0.0:9095", "", True),                                   # the default listener: every interface
    ("[::]:9095", "", True),
    ("10.0.0.7:9095", "", True),
    ("127.0.0.1:9095", "", False),                                # loopback alone: loopback clients are local
    ("localhost:9095", "", False),
    ("0.0.0.0:9095", "  admin_auth: {bearer_tokens: [t]}\n", False),
])
def test_admin_endpoints_left_to_loopback_while_listening_beyond_it_are_warned_of(listen, admin_auth, warned):
    """Behind a mesh sidecar (Istio from 127.0.0.6, Linkerd from 127.0.0.1) every client is loopback."""
    config = parse_config(MINIMAL + f"server:\n  listen: {listen!r}\n" + admin_auth, file=FILE, env={})
    assert any("server.admin_auth is not set" in w for w in config.warnings) is warned
    assert not any("admin_auth" in w for w in config.warnings_listening_on("127.0.0.1"))


def test_missing_service_key_and_callback_credentials_are_both_reported():
    problems = problems_of('provider:\n  caller_id: "+15550001234"\n', env={})
    assert {p.path for p in problems} == {"provider.service_key", "provider.callback"}


def test_callback_tokens_come_from_every_key_in_order(tmp_path):
    write(tmp_path / "cb-tokens", "# rotation: new first\ncb-file-1\n\n  cb-file-2  \n")
    write(tmp_path / "cb-token", "cb-single\n")
    path = write(tmp_path / FILE, BARE + "  callback:\n    bearer_token_file: cb-token\n"
                                         "    bearer_tokens: [cb-inline]\n    bearer_tokens_file: cb-tokens\n")
    callback = load_config(path, env={}).provider.callback
    assert [t.get_secret_value() for t in callback.tokens] == ["cb-single", "cb-inline", "cb-file-1", "cb-file-2"]
    assert callback.authenticated


def test_callback_tokens_file_without_tokens_is_a_problem(tmp_path):
    write(tmp_path / "cb-tokens", "# none yet\n")
    path = write(tmp_path / FILE, BARE + "  callback: {bearer_tokens_file: cb-tokens}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    [problem] = raised.value.problems
    assert problem.path == "provider.callback.bearer_tokens_file"
    assert "no token" in problem.message


def test_admin_auth_has_the_shape_of_webhook_auth(tmp_path):
    write(tmp_path / "admin-tokens", "adm-1\n# old\nadm-2\n")
    write(tmp_path / "admin-password", "adm-pw\n")
    path = write(tmp_path / FILE, MINIMAL + "server:\n  admin_auth:\n    bearer_tokens_file: admin-tokens\n"
                                            "    basic_auth: {username: ops, password_file: admin-password}\n")
    config = load_config(path, env={})
    auth = config.server.admin_auth
    assert [t.get_secret_value() for t in auth.bearer_tokens] == ["adm-1", "adm-2"]
    assert (auth.basic_auth.username, auth.basic_auth.password.get_secret_value()) == ("ops", "adm-pw")
    assert {"adm-1", "adm-2", "adm-pw"} <= set(secrets_of(config))
    assert parse_config(MINIMAL, file=FILE, env={}).server.admin_auth is None


def test_admin_auth_without_credentials_is_a_problem():
    text = MINIMAL + "server:\n  admin_auth: {bearer_tokens: []}\n"
    [problem] = problems_of(text, env={})
    assert (problem.path, problem.line) == ("server.admin_auth", line_of(text, "admin_auth"))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9096", "http://127.8.0.1", "http://localhost:9096", "http://LOCALHOST", "http://[::1]:9096",
    "https://api.us.webexconnect.io", "https://10.0.0.5:8443", "https://sandbox.example.com/v1/voice/",
])
def test_base_url_allowed(url):
    assert parse_config(MINIMAL + f"  base_url: {url}\n", file=FILE, env={}).provider.base_url == url.rstrip("/")


@pytest.mark.parametrize("url", [
    "http://api.us.webexconnect.io", "http://10.0.0.5:9096", "http://[::ffff:10.0.0.5]:9096",
    "http://127.0.0.1.example.com", "http://localhost.example.com", "http://192.168.1.1", "http://:9096",
])
def test_plain_http_base_url_off_loopback_is_refused(url):
    text = MINIMAL + f"  base_url: {url}\n"
    [problem] = problems_of(text, env={})
    assert (problem.path, problem.line) == ("provider.base_url", line_of(text, "base_url"))
    assert "https://" in problem.message


# ------------------------------------------------------------------------------------------- secrets_of


def test_secrets_of_returns_every_secret(tmp_path):
    write(tmp_path / "tokens", "file-token-1\nfile-token-2\n")
    write(tmp_path / "hub", "hub-secret\n")
    write(tmp_path / "redis", "redis://:redis-password@redis:6379/0\n")
    text = textwrap.dedent("""\
        server:
          admin_auth: {bearer_tokens: [admin-token], basic_auth: {username: ops, password: admin-password}}
        webhook_auth:
          bearer_tokens: [inline-token]
          bearer_tokens_file: tokens
          basic_auth: {username: alertmanager, password: basic-password}
        provider:
          service_key: ${WEBEX_KEY}
          caller_id: "+15550001234"
          callback:
            bearer_token: callback-token
            bearer_tokens: [callback-token-2]
            hub_secret_file: hub
            header: {name: X-Callback-Key, value: header-value}
        store:
          backend: redis
          url_file: redis
        """)
    path = write(tmp_path / FILE, text)

    config = load_config(path, env={"WEBEX_KEY": "service-key"})

    assert set(secrets_of(config)) == {
        "inline-token", "file-token-1", "file-token-2", "basic-password", "service-key", "callback-token",
        "hub-secret", "header-value", "redis://:redis-password@redis:6379/0", "callback-token-2", "admin-token",
        "admin-password",
    }
    assert all(isinstance(s, str) for s in secrets_of(config))
    # Not a secret: names, numbers and usernames stay out of the list (they would scrub too much).
    assert "alertmanager" not in secrets_of(config)


def test_secrets_of_minimal_config():
    assert secrets_of(parse_config(MINIMAL, file=FILE, env={})) == ["minimal-service-key"]


# --------------------------------------------------------------------------------------- Problem, errors


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (Problem("c.yaml", 12, "routes.0.escalation.1.call", "unknown contact 'x'"),
         "c.yaml:12: routes.0.escalation.1.call: unknown contact 'x'"),
        (Problem("c.yaml", None, "provider", "required key is missing"), "c.yaml: provider: required key is missing"),
        (Problem("c.yaml", 3, "", "invalid YAML: oops"), "c.yaml:3: (top level): invalid YAML: oops"),
    ],
)
def test_problem_str(problem, text):
    assert str(problem) == text


def test_config_error_lists_every_problem_one_a_line():
    problems = [Problem("c.yaml", 1, "a", "one"), Problem("c.yaml", 2, "b", "two")]
    assert str(ConfigError(problems)) == "c.yaml:1: a: one\nc.yaml:2: b: two"


def test_load_config_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "nope.yaml", env={})
    [problem] = raised.value.problems
    assert problem.file == str(tmp_path / "nope.yaml")
    assert "cannot read" in problem.message


def test_config_is_frozen():
    config = parse_config(MINIMAL, file=FILE, env={})
    assert isinstance(config, Config)
    with pytest.raises(ValueError, match="frozen"):
        config.provider.max_in_flight = 3  # type: ignore[misc]


def test_the_redis_backend_takes_a_url_or_a_url_file_and_a_key_prefix(tmp_path):
    config = parse_config(MINIMAL + "store: {backend: redis, url: 'rediss://:pw@redis:6380/2', key_prefix: 'team-a:'}\n",
                          file=FILE, env={})
    assert config.store.url.get_secret_value() == "rediss://:pw@redis:6380/2"
    assert config.store.key_prefix == "team-a:"
    write(tmp_path / "url", "redis+sentinel://sentinel:26379/mymaster/0\n")
    from_file = load_config(write(tmp_path / FILE, MINIMAL + "store: {backend: redis, url_file: url}\n"), env={})
    assert from_file.store.url.get_secret_value() == "redis+sentinel://sentinel:26379/mymaster/0"
    assert from_file.store.key_prefix == "a2v:"


@pytest.mark.parametrize(("store", "message"), [
    ("{backend: redis}", "url or url_file is required"),
    ("{backend: redis, url: 'redis://:topsecret@redis:port/0'}", "the port is not a number"),
    ("{backend: redis, url: 'http://:topsecret@redis:6379/0'}", "the scheme must be one of"),
    ("{backend: redis, url: 'redis+sentinel://:topsecret@sentinel:26379'}", "needs sentinel hosts and a service name"),
    ("{url: 'redis://:topsecret@redis:6379/0'}", "backend sqlite does not use it"),
    ("{backend: redis, url: 'redis://redis:6379/0', key_prefix: ''}", "at least 1 character"),
])
def test_a_wrong_redis_store_is_named_without_its_password(store, message):
    with pytest.raises(ConfigError) as refused:
        parse_config(MINIMAL + f"store: {store}\n", file=FILE, env={})
    [problem] = refused.value.problems
    assert problem.path.startswith("store") and message in problem.message
    assert "topsecret" not in str(refused.value)
