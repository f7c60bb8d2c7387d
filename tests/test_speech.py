"""Speech: filters, the built-in templates as whole strings, escaping, the length budget, user templates."""

import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from alert2voice.alertmanager import Alert, Payload, parse_payload
from alert2voice.config import AcknowledgementConfig
from alert2voice.interactive import prompt_text
from alert2voice.speech import (
    ALLOWED_ELEMENTS,
    FILTERS,
    Speech,
    SpeechContext,
    Spoken,
    TemplateError,
    duration,
    filters,
    instance,
    ip,
    key,
    nourls,
    number,
    render,
    sample_payload,
    since,
    span,
    speakable,
    words,
)
from alert2voice.speech import spoken as spoken_labels
from tests.support import FIXTURES_DIR

NOW = datetime(2026, 11, 26, 14, 35, 42, tzinfo=UTC)
SSML = "{http://www.w3.org/2001/10/synthesis}"
FIXTURES = FIXTURES_DIR / "alertmanager"
DOCS = Path(__file__).resolve().parent.parent / "docs"
FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.json"))


def load(name: str) -> Payload:
    return parse_payload((FIXTURES / name).read_bytes())


def context(payload: Payload, status: str | None = None, now: datetime = NOW) -> SpeechContext:
    status = status or payload.status
    alerts = payload.firing_alerts if status == "firing" else payload.resolved_alerts
    return SpeechContext(payload, alerts, route="infra-critical", contact="alice", now=now, status=status)


def parse(document: str) -> ET.Element:
    root = ET.fromstring(document)
    assert root.tag == f"{SSML}speak"
    for element in root.iter():
        assert element.tag.removeprefix(SSML) in ALLOWED_ELEMENTS
    return root


def spoken(document: str) -> str:
    """The text a listener hears, whitespace collapsed."""
    return " ".join("".join(parse(document).itertext()).split())


def make_alert(index: int = 0, *, annotations: dict[str, str] | None = None, **labels: str) -> Alert:
    return Alert(
        status="firing",
        labels={"alertname": "HighCPU", "severity": "warning", "instance": f"node{index}:9100", **labels},
        annotations={"summary": f"CPU high on node{index}"} if annotations is None else annotations,
        startsAt=NOW - timedelta(minutes=12),
    )


def make_payload(alerts: list[Alert], truncated: int = 0) -> Payload:
    return Payload(
        version="4",
        receiver="voice",
        status="firing",
        alerts=alerts,
        groupLabels={"alertname": "HighCPU"},
        groupKey='{}:{alertname="HighCPU"}',
        truncatedAlerts=truncated,
    )


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


SPEAK = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'


# --- built-in templates, as whole strings ---------------------------------------------------------

FIRING_HIGHCPU = """\
<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
<break time="500ms"/>
<p>
<s>2 alerts firing: High CPU, <emphasis level="strong">critical</emphasis>.</s>
</p>
<p>
<s>Alert 1: High CPU, <emphasis level="strong">critical</emphasis>.</s>
<s>CPU high on node1.</s>
<s>On instance node1 port 9100.</s>
<s>Firing for 12 minutes.</s>
</p>
<break time="700ms"/>
<p>
<s>Alert 2: High CPU, warning.</s>
<s>CPU elevated on node2.</s>
<s>On instance node2 port 9100.</s>
<s>Firing for 12 minutes.</s>
</p>
<break time="700ms"/>
<p>
<s>Route infra critical.</s>
<s>Again: 2 alerts firing: High CPU, <emphasis level="strong">critical</emphasis>.</s>
</p>
</speak>"""

FIRING_DISKFULL = """\
<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
<break time="500ms"/>
<p>
<s>Disk Full, warning: Disk 85 percent full.</s>
</p>
<p>
<s>/var on node3.</s>
<s>On instance node3 port 9100.</s>
<s>Firing for 12 minutes.</s>
</p>
<break time="700ms"/>
<p>
<s>Route infra critical.</s>
<s>Again: Disk Full, warning: Disk 85 percent full.</s>
</p>
</speak>"""

RESOLVED_HIGHCPU = """\
<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
<break time="500ms"/>
<p>
<s>Resolved: High CPU, 2 alerts.</s>
<s>Route infra critical.</s>
<s>It lasted for 9 minutes.</s>
</p>
<p>
<s>Again: Resolved: High CPU, 2 alerts.</s>
</p>
</speak>"""

RESOLVED_FLIP = """\
<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
<break time="500ms"/>
<p>
<s>Resolved: Flip Target Down: Target 127 dot 0 dot 0 dot 1 port 9096 down &lt;&amp;&gt; — ü.</s>
<s>Route infra critical.</s>
<s>It lasted for less than a minute.</s>
</p>
<p>
<s>Again: Resolved: Flip Target Down: Target 127 dot 0 dot 0 dot 1 port 9096 down &lt;&amp;&gt; — ü.</s>
</p>
</speak>"""


@pytest.mark.parametrize(
    ("fixture", "template", "expected"),
    [
        ("firing_HighCPU.json", "firing.ssml.j2", FIRING_HIGHCPU),
        ("firing_DiskFull.json", "firing.ssml.j2", FIRING_DISKFULL),
        ("resolved_HighCPU.json", "resolved.ssml.j2", RESOLVED_HIGHCPU),
        ("prometheus_resolved_FlipTargetDown.json", "resolved.ssml.j2", RESOLVED_FLIP),
    ],
)
def test_builtin_template_renders_exactly(fixture: str, template: str, expected: str) -> None:
    document = Speech(None).render(template, context(load(fixture)))
    assert document == expected
    parse(document)


def test_builtin_text_template_renders_plain_text() -> None:
    text = Speech(None).render("firing.txt.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert text == (
        "Flip Target Down, critical: Target 127 dot 0 dot 0 dot 1 port 9096 down <&> — ü.\n"
        "up=0 for job flip.\n"
        "On instance 127 dot 0 dot 0 dot 1 port 9096, job flip.\n"
        "Firing for 5 minutes.\n"
        "Route infra critical.\n"
        "Again: Flip Target Down, critical: Target 127 dot 0 dot 0 dot 1 port 9096 down <&> — ü."
    )


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
@pytest.mark.parametrize("kind", ["ssml", "txt"])
def test_every_fixture_renders(fixture: str, kind: str) -> None:
    payload = load(fixture)
    speech = Speech(None)
    for status in ("firing", "resolved"):
        ctx = context(payload, status)
        if not ctx.alerts:
            continue
        output = speech.render(f"{status}.{kind}.j2", ctx)
        assert 0 < len(output) <= speech.max_chars
        if kind == "ssml":
            assert spoken(output)


def test_fixture_directory_is_populated() -> None:
    load("firing_HighCPU.json")
    assert len(FIXTURE_NAMES) >= 8


def test_a_group_without_alerts_still_renders() -> None:
    ctx = SpeechContext(make_payload([make_alert()]), [], "r", "alice", NOW)
    assert "0 alerts firing" in spoken(Speech(None).render("firing.ssml.j2", ctx))
    parse(Speech(None).render("resolved.ssml.j2", ctx))


# --- escaping --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "<b>&\"'",
        "a<b & \"c\" 'd' > ü",
        "line1\nline2\ttab\\back 🔥",
        '</s></p><audio src="https://evil.example/x.wav"/>',
        "]]><!-- -->&amp;&#x41;",
    ],
)
def test_label_and_annotation_text_is_escaped_and_spoken(value: str) -> None:
    alert = make_alert(1, namespace=value, annotations={"summary": value})
    payload = make_payload([alert, make_alert(2)])
    document = Speech(None).render("firing.ssml.j2", context(payload))
    heard = spoken(document)
    assert f"namespace {words(value)}" in heard
    assert f"Alert 1: High CPU, warning. {speakable(value)}." in heard
    assert "<audio" not in document


def test_fixture_markup_label_appears_as_text(tmp_path: Path) -> None:
    write(tmp_path, "team.ssml.j2", SPEAK + "<s>{{ alerts[0].labels.team }}</s></speak>")
    document = Speech(tmp_path).render("team.ssml.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert "&lt;b &amp; &#34;c&#34; &#39;d&#39; &gt;" in document
    assert spoken(document) == "a<b & \"c\" 'd' > ü"


def test_characters_xml_forbids_are_dropped() -> None:
    alert = make_alert(1, namespace="bell\x07null\x00esc\x1b\ufffeend", annotations={"summary": "ok\x0b"})
    document = Speech(None).render("firing.ssml.j2", context(make_payload([alert])))
    assert "namespace bellnullescend" in spoken(document)


def test_text_template_leaves_xml_characters_as_they_are(tmp_path: Path) -> None:
    write(tmp_path, "plain.txt.j2", "{{ alerts[0].labels.team }} {{ alerts[0].summary }}")
    speech = Speech(tmp_path)
    text = speech.render("plain.txt.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert text == "a<b & \"c\" 'd' > ü Target 127.0.0.1:9096 down <&> — ü"
    assert speech.text_format("plain.txt.j2") == "TEXT"
    assert speech.text_format("firing.ssml.j2") == "SSML"


def test_ssml_helper_templates_escape_too(tmp_path: Path) -> None:
    # The included file's name does not end in .ssml.j2; escaping follows the document being rendered.
    write(tmp_path, "helper.j2", "{{ alerts[0].labels.team }}")
    write(tmp_path, "main.ssml.j2", SPEAK + '<s>{% include "helper.j2" %}</s></speak>')
    document = Speech(tmp_path).render("main.ssml.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert spoken(document) == "a<b & \"c\" 'd' > ü"


def test_filters_return_plain_strings_so_label_text_stays_escaped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "f.ssml.j2",
        SPEAK + "<s>{{ alerts[0].labels.team|words|nourls|number|ip|instance }}</s></speak>",
    )
    document = Speech(tmp_path).render("f.ssml.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert spoken(document) == "a<b & \"c\" 'd' > ü"
    for spoken_filter in (words, number, instance, ip, nourls, speakable, duration, key):
        assert type(spoken_filter(Markup("<b>1</b>"))) is str
    assert type(spoken_labels({"job": Markup("<b>1</b>")}, "job")) is str


# --- how many alerts are spoken -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert_count", "truncated", "max_spoken", "expected"),
    [
        (1, 0, 3, "total=1 spoken=1 more=0"),
        (3, 0, 3, "total=3 spoken=3 more=0"),
        (5, 0, 3, "total=5 spoken=3 more=2"),
        (5, 2, 3, "total=7 spoken=3 more=4"),
        (2, 4, 3, "total=6 spoken=2 more=4"),
        (4, 0, 1, "total=4 spoken=1 more=3"),
    ],
)
def test_alerts_spoken_and_more(
    tmp_path: Path, alert_count: int, truncated: int, max_spoken: int, expected: str
) -> None:
    write(tmp_path, "n.txt.j2", "total={{ total }} spoken={{ alerts_spoken|length }} more={{ more }}")
    payload = make_payload([make_alert(i) for i in range(alert_count)], truncated)
    assert Speech(tmp_path, max_alerts_spoken=max_spoken).render("n.txt.j2", context(payload)) == expected


@pytest.mark.parametrize(
    ("alert_count", "truncated", "sentence"),
    [(5, 0, "And 2 more alerts."), (4, 0, "And 1 more alert."), (3, 1, "And 1 more alert."), (3, 0, None)],
)
def test_builtin_says_and_n_more(alert_count: int, truncated: int, sentence: str | None) -> None:
    payload = make_payload([make_alert(i) for i in range(alert_count)], truncated)
    heard = spoken(Speech(None).render("firing.ssml.j2", context(payload)))
    assert heard.startswith(f"{alert_count + truncated} alerts firing: High CPU, warning.")
    assert "Alert 3: High CPU" in heard
    assert "Alert 4" not in heard
    if sentence:
        assert sentence in heard
    else:
        assert " more alert" not in heard


@pytest.mark.parametrize(
    ("names", "headline"),
    [
        (["HighCPU"], "2 alerts firing: High CPU, warning."),
        (["HighCPU", "DiskFull"], "2 alerts firing: High CPU and Disk Full, warning."),
        (["HighCPU", "DiskFull", "NodeDown"], "3 alerts firing: High CPU, Disk Full and others, warning."),
    ],
)
def test_builtin_headline_names_what_fires(names: list[str], headline: str) -> None:
    alerts = [make_alert(i, alertname=name) for i, name in enumerate(names)]
    alerts += [make_alert(9, alertname=names[0])] * (len(names) == 1)
    heard = spoken(Speech(None).render("firing.ssml.j2", context(make_payload(alerts))))
    assert heard.startswith(headline)
    assert heard.endswith(f"Again: {headline}")
    resolved = spoken(Speech(None).render("resolved.ssml.j2", context(make_payload(alerts), "firing")))
    assert resolved.startswith(f"Resolved: {headline.split(': ', 1)[1].removesuffix(', warning.')}, ")


def test_a_group_without_names_is_named_by_its_receiver() -> None:
    alert = make_alert(1, alertname="")
    ctx = SpeechContext(make_payload([alert, alert]), [alert, alert], "r", "alice", NOW)
    assert spoken(Speech(None).render("firing.ssml.j2", ctx)).startswith("2 alerts firing: voice, warning.")


def test_critical_severity_is_emphasised_only_when_critical() -> None:
    alerts = [make_alert(1, severity="critical"), make_alert(2, severity="warning")]
    root = parse(Speech(None).render("firing.ssml.j2", context(make_payload(alerts))))
    emphasised = [element.text for element in root.iter(f"{SSML}emphasis")]
    assert emphasised == ["critical", "critical", "critical"]


# --- length budget ----------------------------------------------------------------------------------


def test_fifty_long_alerts_stay_within_max_chars() -> None:
    long_text = "Disk usage on the root volume keeps growing at https://grafana.example/d/abc " * 20
    alerts = [
        make_alert(i, cluster=f"prod-eu-{i}" * 10, annotations={"summary": long_text, "description": long_text})
        for i in range(50)
    ]
    for max_chars in (2000, 1500, 1000):
        document = Speech(None, max_chars=max_chars).render("firing.ssml.j2", context(make_payload(alerts, 7)))
        assert len(document) <= max_chars
        heard = spoken(document)
        assert heard.startswith("57 alerts firing: High CPU, warning.")
        assert "And 56 more alerts." in heard


def test_fewer_alerts_are_spoken_before_text_is_cut() -> None:
    alerts = [make_alert(i, annotations={"summary": f"summary number {i} " + "x" * 150}) for i in range(5)]
    unlimited = Speech(None).render("firing.ssml.j2", context(make_payload(alerts)))
    budget = len(unlimited) - 50
    document = Speech(None, max_chars=budget).render("firing.ssml.j2", context(make_payload(alerts)))
    heard = spoken(document)
    assert len(document) <= budget
    assert "Alert 2:" in heard
    assert "Alert 3:" not in heard
    assert "And 3 more alerts." in heard
    assert "x" * 150 in heard


def test_a_budget_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"^firing\.ssml\.j2: output is \d+ characters .*max_chars \(300\)$"):
        Speech(None, max_chars=300).render("firing.ssml.j2", context(make_payload([make_alert()])))


text_values = st.text(st.characters(exclude_categories=[]), max_size=300)


@settings(max_examples=75, deadline=None, database=None)
@given(
    labels=st.lists(
        st.fixed_dictionaries(
            {"alertname": text_values, "severity": text_values},
            optional={key: text_values for key in ("cluster", "namespace", "pod", "instance", "job", "team")},
        ),
        min_size=1,
        max_size=6,
    ),
    summary=text_values,
    description=text_values,
    truncated=st.integers(min_value=0, max_value=3),
    status=st.sampled_from(["firing", "resolved"]),
)
def test_any_label_text_renders_parseable_ssml_within_budget(
    labels: list[dict[str, str]], summary: str, description: str, truncated: int, status: str
) -> None:
    alerts = [
        Alert(
            status=status,
            labels=alert_labels,
            annotations={"summary": summary, "description": description},
            startsAt=NOW - timedelta(minutes=5),
            endsAt=NOW if status == "resolved" else datetime(1, 1, 1, tzinfo=UTC),
        )
        for alert_labels in labels
    ]
    payload = make_payload(alerts, truncated)
    ctx = SpeechContext(payload, alerts, "route-a", "alice", NOW, status=status)
    speech = Speech(None)
    document = speech.render(f"{status}.ssml.j2", ctx)
    assert len(document) <= speech.max_chars
    parse(document)


# --- user templates ---------------------------------------------------------------------------------


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "payments.ssml.j2", SPEAK + "\n<s>hello</s>\n<s>{{ nope }}</s>\n</speak>\n")
    speech = Speech(tmp_path)
    with pytest.raises(TemplateError) as caught:
        speech.render("payments.ssml.j2", context(load("firing_HighCPU.json")))
    assert str(caught.value) == "payments.ssml.j2:3: 'nope' is undefined"
    assert speech.check("payments.ssml.j2", NOW) == ["payments.ssml.j2:3: 'nope' is undefined"]


def test_check_finds_labels_not_every_alert_carries(tmp_path: Path) -> None:
    write(
        tmp_path,
        "k8s.ssml.j2",
        SPEAK + "{% for a in alerts %}\n<s>{{ a.labels.cluster }}</s>{% endfor %}</speak>",
    )
    assert Speech(tmp_path).check("k8s.ssml.j2", NOW) == [
        "k8s.ssml.j2:2: 'dict object' has no attribute 'cluster' (not every alert has every label and annotation: "
        'write .get("cluster"): alert.labels.get("cluster") or alert.annotations.get("cluster"))'
    ]


def test_errors_in_imported_macros_name_the_macro_file(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    write(tmp_path, "lib/macros.j2", "{% macro where(a) %}\n{{ a.labels.nope }}\n{% endmacro %}")
    write(tmp_path, "main.ssml.j2", SPEAK + '{% import "lib/macros.j2" as m %}{{ m.where(alerts[0]) }}</speak>')
    assert Speech(tmp_path).check("main.ssml.j2", NOW) == [
        "lib/macros.j2:2: 'dict object' has no attribute 'nope' (not every alert has every label and annotation: "
        'write .get("nope"): alert.labels.get("nope") or alert.annotations.get("nope"))'
    ]


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "broken.ssml.j2", SPEAK + "\n{% if %}\n</speak>")
    problems = Speech(tmp_path).check("broken.ssml.j2", NOW)
    assert len(problems) == 1
    assert problems[0].startswith("broken.ssml.j2:2: ")


def test_builtin_templates_pass_check() -> None:
    speech = Speech(None)
    for name in ("firing.ssml.j2", "resolved.ssml.j2", "firing.txt.j2", "resolved.txt.j2"):
        assert speech.check(name, NOW) == []


def test_missing_template_is_a_problem(tmp_path: Path) -> None:
    speech = Speech(tmp_path)
    assert not speech.has_template("payments.ssml.j2")
    assert speech.check("payments.ssml.j2", NOW) == [
        f"payments.ssml.j2: template 'payments.ssml.j2' not found in {tmp_path} or the built-in templates"
    ]


def test_user_directory_overrides_builtin_by_name(tmp_path: Path) -> None:
    write(tmp_path, "firing.ssml.j2", SPEAK + "<s>Custom {{ alerts|length }} for {{ contact }}</s></speak>")
    speech = Speech(tmp_path)
    payload = load("firing_HighCPU.json")
    assert speech.render("firing.ssml.j2", context(payload)) == SPEAK + "<s>Custom 2 for alice</s></speak>"
    assert speech.has_template("firing.ssml.j2")
    assert speech.has_template("resolved.ssml.j2")
    assert "Resolved: High CPU" in spoken(speech.render("resolved.ssml.j2", context(load("resolved_HighCPU.json"))))


def test_templates_are_compiled_once_per_speech(tmp_path: Path) -> None:
    write(tmp_path, "t.txt.j2", "first")
    speech = Speech(tmp_path)
    ctx = context(load("firing_HighCPU.json"))
    assert speech.render("t.txt.j2", ctx) == "first"
    write(tmp_path, "t.txt.j2", "second")
    assert speech.render("t.txt.j2", ctx) == "first"
    assert Speech(tmp_path).render("t.txt.j2", ctx) == "second"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            SPEAK + '<s>hi</s><audio src="https://example.com/a.wav"/></speak>',
            "element <audio> is not allowed",
        ),
        (SPEAK + "<s>{{ alerts[0].labels.evil|safe }}</s></speak>", "element <audio> is not allowed"),
        (SPEAK + "<s>unclosed</speak>", "output is not well-formed SSML"),
        ('<speak xmlns="http://example.com/other"><s>another namespace</s></speak>', "the document must be one <speak"),
        ("<voice><s>no speak</s></voice>", "the document must be one <speak"),
        (SPEAK + "</speak><speak/>", "output is not well-formed SSML"),
        ('<speak version="2.0" xmlns="http://www.w3.org/2001/10/synthesis"></speak>', "needs version"),
        ('<speak xml:lang="">empty language</speak>', "needs version"),
        ('<!DOCTYPE speak [<!ENTITY x "y">]>' + SPEAK + "&x;</speak>", "DOCTYPE"),
        ("Plain words", "not well-formed"),
    ],
)
def test_user_template_with_bad_ssml_is_rejected(tmp_path: Path, body: str, problem: str) -> None:
    write(tmp_path, "bad.ssml.j2", body)
    payload = make_payload([make_alert(evil='<audio src="https://evil.example/a.wav"/>')])
    with pytest.raises(TemplateError, match=r"^bad\.ssml\.j2: ") as caught:
        Speech(tmp_path).render("bad.ssml.j2", context(payload))
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ alerts[0].__init__.__globals__ }}",
        "{{ alerts[0].__class__.__mro__ }}",
        "{{ alerts[0].labels.__class__ }}",
        "{{ alerts[0].labels.get.__self__.__class__ }}",
        "{% for a in alerts %}{{ loop._iterator }}{% endfor %}",
        "{% for a in alerts %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
        '{% include "../secret.txt" %}',
        '{% include "/etc/passwd" %}',
    ],
)
def test_templates_cannot_reach_outside(tmp_path: Path, body: str) -> None:
    (tmp_path / "templates").mkdir()
    write(tmp_path, "secret.txt", "secret")
    write(tmp_path / "templates", "x.txt.j2", body)
    with pytest.raises(TemplateError, match=r"^x\.txt\.j2:1: "):
        Speech(tmp_path / "templates").render("x.txt.j2", context(load("firing_HighCPU.json")))


def test_the_sandbox_fast_paths_read_what_the_sandbox_would(tmp_path: Path) -> None:
    # Alert attributes, labels.get and loop variables skip the sandbox's checks (sandbox.BoundedSandbox): same answers.
    write(tmp_path, "f.txt.j2", "{% for a in alerts %}{{ loop.index }}/{{ loop.length }} {{ a.alertname }} "
                                "{{ a.labels.get('instance') }} {{ a.labels.get('nope', '-') }} {{ a.firing }}"
                                "{% endfor %}")
    text = Speech(tmp_path).render("f.txt.j2", context(load("firing_HighCPU.json")))
    assert text == "1/2 HighCPU node1:9100 - True2/2 HighCPU node2:9100 - True"
    write(tmp_path, "g.txt.j2", "{% for a in alerts %}{{ loop.nonsense }}{% endfor %}")
    with pytest.raises(TemplateError, match=r"^g\.txt\.j2:1: .*nonsense"):
        Speech(tmp_path).render("g.txt.j2", context(load("firing_HighCPU.json")))


def test_variables_are_documented_and_available(tmp_path: Path) -> None:
    names = [
        "alerts", "alerts_spoken", "more", "total", "alertnames", "severity", "started_at", "ended_at",
        "group_labels", "common_labels", "common_annotations", "route", "contact", "status", "now",
        "external_url", "receiver", "language", "ack_digit", "menu",
    ]  # fmt: skip
    write(tmp_path, "v.txt.j2", " ".join(f"{{{{ {name} is defined }}}}" for name in names))
    assert Speech(tmp_path).render("v.txt.j2", context(load("firing_HighCPU.json"))) == " ".join(["True"] * len(names))
    documented = (DOCS / "templates.md").read_text()
    for name in names:
        assert f"`{name}`" in documented
    for name in FILTERS:
        assert f"| `{name}` |" in documented, f"the filter {name} is not in docs/templates.md's table"


def test_alert_conveniences(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.txt.j2",
        "{% for a in alerts %}"
        "{{ a.alertname }}|{{ a.severity }}|{{ a.summary }}|{{ a.endsAt }}|{{ a.firing }}\n"
        "{% endfor %}",
    )
    alerts = [
        make_alert(1, annotations={"description": "only a description"}),
        make_alert(2, annotations={}),
        Alert(status="firing", labels={"alertname": "Bare"}, startsAt=NOW),
    ]
    assert Speech(tmp_path).render("a.txt.j2", context(make_payload(alerts))) == (
        "HighCPU|warning|only a description||True\nHighCPU|warning|HighCPU||True\nBare||Bare||True"
    )


def test_context_requires_an_aware_clock() -> None:
    payload = make_payload([make_alert()])
    with pytest.raises(ValueError, match="aware"):
        SpeechContext(payload, payload.alerts, "r", "alice", datetime(2026, 1, 1))


def test_sample_payload_has_what_check_needs() -> None:
    payload = sample_payload(NOW)
    assert len(payload.alerts) >= 3
    assert any(not alert.annotations for alert in payload.alerts)
    assert any("<" in value for alert in payload.alerts for value in alert.labels.values())


# --- filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "for less than a minute"),
        (59.9, "for less than a minute"),
        (-30, "for less than a minute"),
        (60, "for 1 minute"),
        (720, "for 12 minutes"),
        (3600, "for 1 hour"),
        (3900, "for 1 hour and 5 minutes"),
        (7260, "for 2 hours and 1 minute"),
        (3 * 86400, "for 3 days"),
        (86400 + 7200 + 59, "for 1 day and 2 hours"),
        (timedelta(minutes=12, seconds=59), "for 12 minutes"),
        ("300", "for 5 minutes"),
        ("soon", "soon"),
        (float("inf"), "inf"),
    ],
)
def test_duration(value: object, expected: str) -> None:
    assert duration(value) == expected


@pytest.mark.parametrize(("seconds", "exact", "expected"), [
    (30, False, "less than a minute"), (90, False, "1 minute"),
    (1, True, "1 second"), (6, True, "6 seconds"), (90, True, "1 minute and 30 seconds"), (300, True, "5 minutes"),
    (5400, True, "1 hour and 30 minutes"), (86400 + 7380, True, "1 day and 2 hours"),
])
def test_span(seconds: float, exact: bool, expected: str) -> None:
    assert span(seconds, exact=exact) == expected


@pytest.mark.parametrize(
    ("start", "until", "expected"),
    [
        (NOW - timedelta(minutes=12), NOW, "for 12 minutes"),
        ("2026-11-26T14:23:41.071096602Z", NOW, "for 12 minutes"),
        ("2026-11-26T14:14:08Z", "2026-11-26T14:24:07Z", "for 9 minutes"),
        (datetime(2026, 11, 26, 13, 30), NOW, "for 1 hour and 5 minutes"),
        ("yesterday", NOW, "yesterday"),
    ],
)
def test_since(start: datetime | str, until: datetime | str, expected: str) -> None:
    assert since(start, until) == expected


def test_since_filter_counts_until_the_injected_clock_or_a_given_end(tmp_path: Path) -> None:
    write(
        tmp_path,
        "s.txt.j2",
        "{{ alerts[0].startsAt|since }} / {{ alerts[0].startsAt|since(alerts[0].endsAt) }}",
    )
    text = Speech(tmp_path).render("s.txt.j2", context(load("resolved_HighCPU.json")))
    assert text == "for 21 minutes / for 9 minutes"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HighCPUUsage", "High CPU Usage"),
        ("HighCPU", "High CPU"),
        ("disk_full_root", "disk full root"),
        ("kube-pod-crash", "kube pod crash"),
        ("KubeAPIErrorBudgetBurn", "Kube API Error Budget Burn"),
        ("Node2Down", "Node2 Down"),
        ("already spoken", "already spoken"),
        ("__x--y__", "x y"),
        ("", ""),
        (None, ""),
    ],
)
def test_words(value: str | None, expected: str) -> None:
    assert words(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("95.3%", "95.3 percent"),
        ("CPU at 95.3 %.", "CPU at 95.3 percent."),
        ("99.999%", "100 percent"),
        ("0.9538461538461539", "0.95"),
        ("1234", "1234"),
        ("1234567", "1,234,567"),
        ("order 123456789012345678901", "order 123456789012345678901"),
        ("12345.678", "12,346"),
        ("1.5e+06 requests", "1.5 million requests"),
        ("2.5e9", "2.5 billion"),
        ("0.00001", "0.00001"),
        ("1e999", "1e999"),
        (0.25, "0.25"),
        ("10.0.0.1", "10.0.0.1"),
        ("v1.2.3", "v1.2.3"),
        ("14:23:41", "14:23:41"),
        ("2026-11-26", "2026-11-26"),
        ("node1:9100", "node1:9100"),
        ("5m", "5m"),
    ],
)
def test_number(value: object, expected: str) -> None:
    assert number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("node1:9100", "node1 port 9100"),
        ("10.0.0.1:9100", "10 dot 0 dot 0 dot 1 port 9100"),
        ("[::1]:9100", "double colon 1 port 9100"),
        ("[fe80::1]", "fe80 double colon 1"),
        ("https://example.com:8443/health", "example.com port 8443"),
        ("https://example.com/health", "example.com"),
        ("http://[::1", "http://[::1"),
        ("node1", "node1"),
        ("a", "a"),
    ],
)
def test_instance(value: str, expected: str) -> None:
    assert instance(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1", "10 dot 0 dot 0 dot 1"),
        ("from 10.0.0.1 to 10.0.0.2.", "from 10 dot 0 dot 0 dot 1 to 10 dot 0 dot 0 dot 2."),
        ("::1", "double colon 1"),
        ("2001:db8::1", "2001 colon db8 double colon 1"),
        ("999.1.1.1", "999.1.1.1"),
        ("1.2.3.4.5", "1.2.3.4.5"),
        ("node1", "node1"),
    ],
)
def test_ip(value: str, expected: str) -> None:
    assert ip(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("See https://runbooks.example.com/a?b=c. Then fix it", "See. Then fix it"),
        ("(runbook: http://x/y)", "(runbook:)"),
        ("HTTPS://EXAMPLE.COM/x and http://a.b", "and"),
        ("no links here", "no links here"),
        ("ftp://kept.example", "ftp://kept.example"),
    ],
)
def test_nourls(value: str, expected: str) -> None:
    assert nourls(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CPU > 90% for 5m", "CPU above 90 percent for 5 minutes"),
        ("Disk 85% full.", "Disk 85 percent full"),
        ("Target 127.0.0.1:9096 down <&>", "Target 127 dot 0 dot 0 dot 1 port 9096 down <&>"),
        ("latency 1h30m at 12:30, ratio 3:1", "latency 1 hour 30 minutes at 12:30, ratio 3:1"),
        ("prometheus:9090 is down, see https://x.example/runbook", "prometheus port 9090 is down, see"),
        ("errors >= 1.5e+06 and up == 0", "errors at least 1.5 million and up equals 0"),
        ("p99 500ms, 1s, 1w", "p99 500 milliseconds, 1 second, 1 week"),
        ("a<b", "a<b"),
        ("line\none\ttab", "line one tab"),
    ],
)
def test_speakable(value: str, expected: str) -> None:
    assert speakable(value) == expected


@pytest.mark.parametrize(
    ("labels", "names", "expected"),
    [
        ({"instance": "node1:9100", "cluster": "prod-eu-1"}, ("cluster", "instance"), "cluster prod eu 1, instance node1 port 9100"),
        ({"instance": "node1:9100", "cluster": "prod-eu-1"}, ("instance", "cluster"), "instance node1 port 9100, cluster prod eu 1"),
        ({"job": "kube_state_metrics", "pod": ""}, ("pod", "job", "namespace"), "job kube state metrics"),
        ({"alertname": "HighCPU"}, ("cluster", "job"), ""),
        ({"instance": "10.0.0.1"}, ("instance",), "instance 10 dot 0 dot 0 dot 1"),
        ({"job": "___"}, ("job",), "job "),
    ],
)
def test_spoken(labels: dict[str, str], names: tuple[str, ...], expected: str) -> None:
    assert spoken_labels(labels, *names) == expected


def test_spoken_labels_are_escaped(tmp_path: Path) -> None:
    write(tmp_path, "w.ssml.j2", SPEAK + '<s>{{ alerts[0].labels|spoken("team", "job") }}</s></speak>')
    document = Speech(tmp_path).render("w.ssml.j2", context(load("prometheus_firing_FlipTargetDown.json")))
    assert "&lt;" in document
    assert spoken(document).startswith("team a<b & \"c\" 'd' > ü")


def _normalise_reference(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(["a", "<s>", " ", "\n", "\t", "\r", "\x0b", "\x1c", "\x85", "\xa0", "\u2028", "ü"])).map("".join))
def test_normalise_collapses_whitespace_line_by_line(text: str) -> None:
    # _normalise returns text it finds already normal as it is: the shortcut must agree with the full work.
    assert render._normalise(text) == _normalise_reference(text)


# --- hostile text: every filter takes linear time ---------------------------------------------------

# Runs of the characters the filters' patterns look for: whitespace, ":", "/", digits, dots, "://", units...
HOSTILE_UNITS = [" ", "\t", ":", "/", "://", "0", "9", ".", "1.", "a", "A", "_", "-", "[", "]", "%", "e", "m", "ms",
                 ">", "=", "https://", "x:", "1:"]
# Each filter takes well under a second on 300,000 characters of any of these; a quadratic pattern takes minutes
# (the URL pattern of old: over ten minutes on 300,000 spaces and "://"). Generous for a loaded machine.
HOSTILE_SECONDS = 3.0


@settings(max_examples=12, deadline=None, database=None)
@given(unit=st.lists(st.sampled_from(HOSTILE_UNITS), min_size=1, max_size=4).map("".join),
       tail=st.sampled_from(["", "://", "x", ":1", "%", ".", "1"]))
@example(unit=" ", tail="://")  # what froze the event loop: whitespace, then "://"
@example(unit="5m", tail="")  # the most work per character: 150,000 durations to speak
@example(unit="1.", tail="1")
def test_filters_take_linear_time_on_hostile_text(unit: str, tail: str) -> None:
    text = (unit * (300_000 // len(unit) + 1))[:300_000] + tail
    for filter_ in (words, number, instance, ip, nourls, speakable):
        started = time.perf_counter()
        filter_(text)
        elapsed = time.perf_counter() - started
        assert elapsed < HOSTILE_SECONDS, f"{filter_.__name__} took {elapsed:.1f} s on {unit!r} * n + {tail!r}"


def _drop_urls_as_before(text: str) -> str:
    # The quadratic pattern the URL filter used: the reference for what the linear one must do.
    return re.sub(r"\s*https?://\S+", filters._drop_url, text, flags=re.IGNORECASE)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from([" ", "\t", "\n", "h", "H", "ttp", "s", "://", ":", "/", "x", ".", ")", "é"]),
                max_size=30).map("".join))
def test_url_pattern_removes_what_it_always_did(text: str) -> None:
    assert filters._URL.sub(filters._drop_url, text) == _drop_urls_as_before(text)


# --- runaway templates: bounded in work, time and size ------------------------------------------------


def frozen_clock() -> float:
    return 0.0  # the deadline never comes: only the operation budget and the size limits can stop a render


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}",
         "more than 1,000,000 operations"),
        # One range, looped over without a call that could be counted.
        ("{% set r = range(100) %}{% for a in r %}{% for b in r %}{% for c in r %}{% for d in r %}"
         "{% endfor %}{% endfor %}{% endfor %}{% endfor %}", "more than 1,000,000 operations"),
        ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "maximum recursion depth"),
        ('{% include "x.txt.j2" %}{% include "x.txt.j2" %}', "maximum recursion depth"),
        ('{{ "a" * 10**9 }}', "one operation would add 999,999,999 characters"),
        ("{{ [1] * 10**9 }}", "one operation would add 999,999,999 characters or items"),
        ("{{ 10 ** 1000000000 }}", "a number of about"),  # Jinja reads 10 ** 10 ** 9 as (10 ** 10) ** 9
        ('{{ "%0999999999d" % 1 }}', "one operation would add"),
        ('{{ "{:>999999999}".format(1) }}', "one operation would add"),
        ('{{ "a"|center(10**9) }}', "one operation would add"),
        ('{{ "a".ljust(10**9) }}', "one operation would add"),
        ('{{ "a\n"|indent(999999) }}', "one operation would add"),
        ('{{ ("a"|center(99999)) * 3 }}', "over the 20,000 a template may build or print"),
        ('{{ range(10**5)|join("x" * 100) }}', "one operation would add"),
        ("{{ range(10)|batch(10**9, 0)|list }}", "one operation would add"),
        ('{% set ns = namespace(s="ab") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}',
         "over the 20,000 a template may build or print"),
        ("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}", "a collection of"),
        ("{% for i in range(10**5) %}{{ alerts[0].alertname }}{% endfor %}", "output is over 20,000 characters"),
        ("{% set x %}{% for i in range(10**5) %}xxxxxxxxxx{% endfor %}{% endset %}{{ x|length }}",
         "builds a text of over 20,000 characters"),
        ("{{ lipsum(10**9) }}", "'lipsum' is undefined"),
    ],
)
def test_runaway_templates_are_stopped(tmp_path: Path, body: str, problem: str) -> None:
    write(tmp_path, "x.txt.j2", body)
    with pytest.raises(TemplateError, match=r"^x\.txt\.j2") as caught:
        Speech(tmp_path, clock=frozen_clock).render("x.txt.j2", context(load("firing_HighCPU.json")))
    assert problem in str(caught.value)


def test_a_render_that_runs_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    # Every look at the clock finds a quarter of a second gone: the fifth is past the one-second deadline.
    readings = iter(range(1000))
    write(tmp_path, "slow.txt.j2", "{% for i in range(100) %}{{ i }}{% endfor %}")
    speech = Speech(tmp_path, clock=lambda: next(readings) / 4)
    with pytest.raises(TemplateError, match=r"^slow\.txt\.j2:1: the template took longer than 1 s to render$"):
        speech.render("slow.txt.j2", context(load("firing_HighCPU.json")))
    assert next(readings) == 6  # the start, then one look per loop iteration until the fifth was too late


def test_bounded_templates_still_do_what_jinja_does(tmp_path: Path) -> None:
    write(tmp_path, "ok.txt.j2",
          '{% for i in range(30) %}{% if loop.last %}{{ loop.length }}{% endif %}{% endfor %} '
          '{{ "a" ~ alerts[0].alertname }} {{ alerts|map(attribute="alertname")|join(",") }} '
          '{{ "%05.1f"|format(3.14159) }} {{ "{}-{:>4}".format("x", 7) }} {{ "ab"|center(6) }}| '
          '{{ "x" * 3 }} {{ 2 ** 10 }} {{ [1, 2] + [3] }} {{ "a-b"|replace("-", "+") }} '
          '{% set l = [] %}{% for a in alerts %}{{ l.append(a.alertname) or "" }}{% endfor %}{{ l|length }}'
          '{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}')
    text = Speech(tmp_path).render("ok.txt.j2", context(load("firing_HighCPU.json")))
    assert text == "30 aHighCPU HighCPU,HighCPU 003.1 x- 7 ab | xxx 1024 [1, 2, 3] a+b 2<1>"  # spaces collapsed


def test_an_output_over_the_limit_is_tried_again_shorter(tmp_path: Path) -> None:
    # An annotation of 50,000 characters: too long to print whole, fine once the budget cuts annotations.
    write(tmp_path, "d.txt.j2", "{{ alerts[0].annotations.description }}")
    payload = make_payload([make_alert(annotations={"description": "word " * 10_000})])
    assert Speech(tmp_path).render("d.txt.j2", context(payload)) == "word " * 39 + "word…"


# --- falling back when a template fails -------------------------------------------------------------


def bare_payload(*names: str) -> Payload:
    """Alerts with nothing but an alertname, as real alerts without optional labels arrive."""
    alerts = [Alert(status="firing", labels={"alertname": name}, startsAt=NOW - timedelta(minutes=3)) for name in names]
    return make_payload(alerts)


def test_a_template_failing_on_a_real_alert_falls_back_to_the_builtin_one(tmp_path: Path) -> None:
    write(tmp_path, "k8s.ssml.j2", SPEAK + "{% for a in alerts_spoken %}<s>{{ a.labels.instance }}</s>{% endfor %}</speak>")
    speech = Speech(tmp_path)
    assert speech.check("k8s.ssml.j2", NOW) != []  # check-config would have said so
    ctx = context(bare_payload("HighCPU"))
    said = speech.speak("k8s.ssml.j2", ctx)
    assert said.text == Speech(None).render("firing.ssml.j2", ctx)
    assert (said.text_format, said.fallback) == ("SSML", "the built-in firing.ssml.j2")
    assert str(said.error).startswith("k8s.ssml.j2:1: 'dict object' has no attribute 'instance'")
    assert "High CPU" in spoken(said.text)


def test_the_fallback_is_the_packaged_template_even_when_a_user_one_shadows_it(tmp_path: Path) -> None:
    write(tmp_path, "firing.txt.j2", "{{ alerts[0].labels.instance }}")
    ctx = context(bare_payload("DiskFull"))
    said = Speech(tmp_path).speak("firing.txt.j2", ctx)
    assert (said.text, said.text_format) == (Speech(None).render("firing.txt.j2", ctx), "TEXT")
    assert said.fallback == "the built-in firing.txt.j2"


def test_when_no_template_renders_a_fixed_sentence_names_the_alerts(tmp_path: Path) -> None:
    write(tmp_path, "broken.ssml.j2", "{{ nope }}")
    # Too short for the built-in template: only the fixed sentence fits.
    speech = Speech(tmp_path, max_chars=300)
    said = speech.speak("broken.ssml.j2", context(bare_payload("HighCPU", "Disk<Full>", "HighCPU")))
    assert said.text == ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
                         "Alert firing: HighCPU, Disk&lt;Full&gt;.</speak>")
    assert (said.text_format, said.fallback, said.asks_ack) == ("SSML", "a fixed sentence", False)
    assert str(said.error) == "broken.ssml.j2:1: 'nope' is undefined"
    many = speech.speak("broken.ssml.j2", context(bare_payload(*(f"Alert{i}{'x' * 50}" for i in range(10)))))
    assert len(many.text) <= 300
    assert spoken(many.text).startswith("Alert firing: Alert0") and spoken(many.text).endswith("more.")


def test_a_template_that_renders_is_spoken_as_it_is(tmp_path: Path) -> None:
    write(tmp_path, "ok.ssml.j2", SPEAK + "<s>{{ alerts|length }} alerts. Press {{ ack_digit }}.</s></speak>")
    ctx = SpeechContext(bare_payload("A"), bare_payload("A").alerts, "r", "alice", NOW, ack_digit="1")
    said = Speech(tmp_path).speak("ok.ssml.j2", ctx)
    assert said == Spoken(SPEAK + "<s>1 alerts. Press 1.</s></speak>", "SSML", True)


@pytest.mark.parametrize(("digit", "said"), [("1", "1"), ("*", "star"), ("#", "pound")])
def test_a_template_says_a_key_as_the_menu_does(tmp_path: Path, digit: str, said: str) -> None:
    # One way to say a key: the `key` filter is what the menu (interactive.prompt_text) says too.
    write(tmp_path, "ok.ssml.j2", SPEAK + "<s>Press {{ ack_digit|key }}.</s></speak>")
    ctx = SpeechContext(bare_payload("A"), bare_payload("A").alerts, "r", "alice", NOW, ack_digit=digit)
    assert Speech(tmp_path).render("ok.ssml.j2", ctx) == SPEAK + f"<s>Press {said}.</s></speak>"
    menu = prompt_text(AcknowledgementConfig(digit=digit, escalate_digit=None, repeat_digit=None))
    assert menu == f"Press {said} to acknowledge."


def test_check_renders_an_alert_that_has_only_an_alertname(tmp_path: Path) -> None:
    # Every spoken sample alert has an instance; the bare one does not.
    write(tmp_path, "k8s.ssml.j2", SPEAK + "{% for a in alerts_spoken %}<s>{{ a.labels.instance }}</s>{% endfor %}</speak>")
    assert Speech(tmp_path).check("k8s.ssml.j2", NOW) == [
        "k8s.ssml.j2:1: 'dict object' has no attribute 'instance' (not every alert has every label and annotation: "
        'write .get("instance"): alert.labels.get("instance") or alert.annotations.get("instance"))'
    ]
    write(tmp_path, "group.txt.j2", "{{ group_labels.cluster }}")
    [problem] = Speech(tmp_path).check("group.txt.j2", NOW)  # the sample group has a cluster; the bare one none
    assert problem.startswith("group.txt.j2:1: 'dict object' has no attribute 'cluster' (not every alert")


# --- a bare <speak> ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "language", "expected"),
    [
        ("<speak>An alert is firing.</speak>", "en-US",
         '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">An alert is firing.</speak>'),
        ('<speak xml:lang="de-DE"><s>Alarm.</s></speak>', "en-GB",
         '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="de-DE"><s>Alarm.</s></speak>'),
        ("<speak><p><s>{{ alerts|length }} alerts</s></p></speak>", "en-GB",
         '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-GB">'
         "<p><s>2 alerts</s></p></speak>"),
        # Expat counts bytes: a comment before the root, with a character of two, must not shift the insertion.
        ("<!-- état --><speak>Hi</speak>", "fr-FR",
         '<!-- état --><speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="fr-FR">Hi</speak>'),
    ],
)
def test_a_bare_speak_is_completed(tmp_path: Path, body: str, language: str, expected: str) -> None:
    write(tmp_path, "plain.ssml.j2", body)
    payload = load("firing_HighCPU.json")
    ctx = SpeechContext(payload, payload.alerts, "r", "alice", NOW, language=language)
    speech = Speech(tmp_path)
    assert speech.render("plain.ssml.j2", ctx) == expected
    assert speech.check("plain.ssml.j2", NOW) == []
    parse(expected)


MENU = "Press 1 to acknowledge, 5 to pass to the next person, star to repeat."


@pytest.mark.parametrize("name", ["firing.ssml.j2", "firing.txt.j2"])
def test_built_in_firing_templates_end_with_the_menu_they_are_given(name: str) -> None:
    ctx = SpeechContext(bare_payload("HighCPU"), bare_payload("HighCPU").alerts, "payments", "alice", NOW,
                        ack_digit="1", menu=MENU)
    said = Speech(None).speak(name, ctx)
    text = spoken(said.text) if said.text_format == "SSML" else " ".join(said.text.split())
    assert text.endswith("Route payments. Again: High CPU. " + MENU)
    assert said.asks_ack is True
    plain = Speech(None).render(name, SpeechContext(bare_payload("HighCPU"), bare_payload("HighCPU").alerts,
                                                    "payments", "alice", NOW))
    assert "Press" not in plain  # message mode: no menu


def test_a_template_that_says_the_menu_asks_for_the_keys_itself(tmp_path: Path) -> None:
    write(tmp_path, "menu.ssml.j2", SPEAK + "<s>{{ alerts|length }} alerts. {{ menu }}</s></speak>")
    ctx = SpeechContext(bare_payload("A"), bare_payload("A").alerts, "r", "alice", NOW, ack_digit="1", menu=MENU)
    said = Speech(tmp_path).speak("menu.ssml.j2", ctx)
    assert said == Spoken(SPEAK + f"<s>1 alerts. {MENU}</s></speak>", "SSML", True)
