"""Rotations and quiet hours at fixed instants, around the 2026 DST changes in London and Los Angeles."""

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from alert2voice.oncall import OnCall, Override, QuietHours, Rotation, parse_clock

LONDON = ZoneInfo("Europe/London")
LA = ZoneInfo("America/Los_Angeles")
KOLKATA = ZoneInfo("Asia/Kolkata")
WEEK, DAY, MINUTE = timedelta(weeks=1), timedelta(days=1), timedelta(minutes=1)


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wall(text: str, tz: ZoneInfo) -> datetime:
    """Local wall-clock time `text` in `tz` (fold=0)."""
    return naive(text).replace(tzinfo=tz)


def utc(text: str) -> datetime:
    return naive(text).replace(tzinfo=UTC)


def elapsed(oc: OnCall) -> timedelta:
    # Aware datetimes sharing a tzinfo subtract by wall clock; real durations need UTC.
    return oc.until.astimezone(UTC) - oc.since.astimezone(UTC)


def minutes(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(timespec="minutes")


def local(oc: OnCall) -> tuple[str | None, str, str]:
    """(contact, since, until) with since/until as local ISO wall-clock times, for compact tables."""
    return oc.contact, minutes(oc.since), minutes(oc.until)


def weekly(tz: ZoneInfo, *overrides: Override, members=("alice", "bob")) -> Rotation:
    return Rotation("payments-primary", members, WEEK, naive("2026-01-05T09:00"), tz, overrides)


@pytest.mark.parametrize(
    ("tz", "handover", "before", "after", "dst_shift_hours"),
    [
        pytest.param(LONDON, "2026-03-30T09:00", "carol", "alice", 167, id="london-2026-03-29"),
        pytest.param(LONDON, "2026-10-26T09:00", "carol", "alice", 169, id="london-2026-10-25"),
        pytest.param(LA, "2026-03-09T09:00", "carol", "alice", 167, id="la-2026-03-08"),
        pytest.param(LA, "2026-11-02T09:00", "alice", "bob", 169, id="la-2026-11-01"),
    ],
)
def test_weekly_handover_stays_at_0900_local_across_dst(tz, handover, before, after, dst_shift_hours):
    rotation = weekly(tz, members=("alice", "bob", "carol"))
    instant = wall(handover, tz)

    ending, starting = rotation.on_call(instant - MINUTE), rotation.on_call(instant + MINUTE)

    assert (ending.contact, starting.contact) == (before, after)
    assert ending.until.astimezone(UTC) == starting.since.astimezone(UTC) == instant.astimezone(UTC)
    assert ending.since.time() == ending.until.time() == starting.until.time() == time(9)
    assert elapsed(ending) == timedelta(hours=dst_shift_hours)
    assert elapsed(starting) == timedelta(hours=168)


@pytest.mark.parametrize(
    ("tz", "shift", "start", "at", "expected"),
    [
        # 12h from 09:00 GMT: after the spring change handovers happen at 10:00 and 22:00 BST.
        pytest.param(
            LONDON,
            12,
            "2026-03-28T09:00",
            "2026-03-29T08:59",
            ("bob", "2026-03-28T21:00", "2026-03-29T10:00"),
            id="london-12h-before",
        ),
        pytest.param(
            LONDON,
            12,
            "2026-03-28T09:00",
            "2026-03-29T09:00",
            ("carol", "2026-03-29T10:00", "2026-03-29T22:00"),
            id="london-12h-after",
        ),
        # 8h from 16:00 PDT: after the autumn change handovers happen at 07:00, 15:00 and 23:00 PST.
        pytest.param(
            LA,
            8,
            "2026-10-31T16:00",
            "2026-11-01T09:30",
            ("bob", "2026-11-01T00:00", "2026-11-01T07:00"),
            id="la-8h-repeated-0130",
        ),
        pytest.param(
            LA,
            8,
            "2026-10-31T16:00",
            "2026-11-01T15:00",
            ("carol", "2026-11-01T07:00", "2026-11-01T15:00"),
            id="la-8h-after",
        ),
    ],
)
def test_sub_day_shifts_run_on_elapsed_time_across_dst(tz, shift, start, at, expected):
    rotation = Rotation("r", ("alice", "bob", "carol"), timedelta(hours=shift), naive(start), tz)

    oc = rotation.on_call(utc(at))

    assert local(oc) == expected
    assert elapsed(oc) == timedelta(hours=shift)


@pytest.mark.parametrize(
    ("at", "contact", "since", "hours"),
    [
        # 01:30 on 2026-03-29 does not exist: fold=0 reads it as 01:30 GMT, i.e. 02:30 BST.
        pytest.param("2026-03-29T01:29", "bob", "2026-03-28T01:30", 24, id="gap-before"),
        pytest.param("2026-03-29T01:30", "alice", "2026-03-29T02:30", 23, id="gap-after"),
        # 01:30 on 2026-10-25 happens twice: fold=0 picks the first (BST) one.
        pytest.param("2026-10-25T00:29", "bob", "2026-10-24T01:30", 24, id="fold-before"),
        pytest.param("2026-10-25T00:30", "alice", "2026-10-25T01:30", 25, id="fold-after"),
        pytest.param("2026-10-25T01:15", "alice", "2026-10-25T01:30", 25, id="fold-second-0115-stays"),
    ],
)
def test_handover_at_a_skipped_or_repeated_local_time_resolves_with_fold_0(at, contact, since, hours):
    rotation = Rotation("r", ("alice", "bob"), DAY, naive("2026-03-01T01:30"), LONDON)

    oc = rotation.on_call(utc(at))

    assert (oc.contact, minutes(oc.since)) == (contact, since)
    assert elapsed(oc) == timedelta(hours=hours)


SWEEP_ROTATIONS = {
    "weekly-london": weekly(LONDON),
    "daily-0130-london": Rotation("r", ("a", "b"), DAY, naive("2026-03-01T01:30"), LONDON),
    "12h-london": Rotation("r", ("a", "b"), timedelta(hours=12), naive("2026-03-28T09:00"), LONDON),
    "daily-0130-la-override-in-fold": Rotation(
        "r",
        ("a", "b"),
        DAY,
        naive("2026-03-01T01:30"),
        LA,
        (Override("c", naive("2026-11-01T01:00"), naive("2026-11-01T01:45")),),
    ),
}


@pytest.mark.parametrize("name", SWEEP_ROTATIONS)
@pytest.mark.parametrize(
    "change", ["2026-03-08T00:00", "2026-03-29T00:00", "2026-10-25T00:00", "2026-11-01T00:00"]
)
def test_every_instant_around_dst_lies_in_its_stretch_and_stretches_tile(name, change):
    rotation = SWEEP_ROTATIONS[name]
    begin = utc(change) - DAY
    for step in range(0, 3 * 24 * 60, 5):
        at = begin + step * MINUTE
        oc = rotation.on_call(at)
        assert oc.since <= at < oc.until, (at, oc)
        assert oc.since.tzinfo is oc.until.tzinfo is rotation.tz

    stretches = rotation.shifts(begin, 12)
    for ending, starting in pairwise(stretches):
        assert ending.since.astimezone(UTC) < ending.until.astimezone(UTC) == starting.since.astimezone(UTC)


@pytest.mark.parametrize(
    ("at", "contact", "reason"),
    [
        pytest.param(
            "2026-01-05T08:59",
            None,
            "rotation has not started yet (first shift 2026-01-05 09:00 Europe/London)",
            id="before-start",
        ),
        pytest.param(
            "2026-01-05T09:00",
            "alice",
            "shift 1 of payments-primary (alice, bob), 2026-01-05 09:00 → 2026-01-12 09:00 Europe/London",
            id="first-shift",
        ),
        pytest.param(
            "2026-01-20T12:00",
            "alice",
            "shift 3 of payments-primary (alice, bob), 2026-01-19 09:00 → 2026-01-26 09:00 Europe/London",
            id="third-shift",
        ),
        pytest.param(
            "2026-12-25T12:00", "bob", "override for bob until 2026-12-27 00:00 Europe/London", id="override"
        ),
    ],
)
def test_reason(at, contact, reason):
    rotation = weekly(LONDON, Override("bob", naive("2026-12-24T00:00"), naive("2026-12-27T00:00")))

    oc = rotation.on_call(wall(at, LONDON))

    assert (oc.rotation, oc.contact, oc.reason) == ("payments-primary", contact, reason)


def test_before_start_nobody_is_on_call_until_the_first_shift():
    at = wall("2025-12-31T23:00", LONDON)

    oc = weekly(LONDON).on_call(at)

    assert (oc.contact, oc.since, oc.until) == (None, at, wall("2026-01-05T09:00", LONDON))


BOB_XMAS = Override("bob", naive("2026-12-24T00:00"), naive("2026-12-27T00:00"))
CAROL_XMAS_NIGHT = Override("carol", naive("2026-12-25T12:00"), naive("2026-12-26T00:00"))


@pytest.mark.parametrize(
    ("overrides", "at", "expected"),
    [
        # alice's regular shift is 2026-12-21 09:00 → 2026-12-28 09:00; since/until show the part she covers.
        pytest.param(
            (BOB_XMAS,),
            "2026-12-23T23:59",
            ("alice", "2026-12-21T09:00", "2026-12-24T00:00"),
            id="just-before",
        ),
        pytest.param(
            (BOB_XMAS,),
            "2026-12-24T00:00",
            ("bob", "2026-12-24T00:00", "2026-12-27T00:00"),
            id="start-inclusive",
        ),
        pytest.param(
            (BOB_XMAS,), "2026-12-26T23:59", ("bob", "2026-12-24T00:00", "2026-12-27T00:00"), id="last-minute"
        ),
        pytest.param(
            (BOB_XMAS,),
            "2026-12-27T00:00",
            ("alice", "2026-12-27T00:00", "2026-12-28T09:00"),
            id="end-exclusive",
        ),
        pytest.param(
            (BOB_XMAS, CAROL_XMAS_NIGHT),
            "2026-12-25T12:00",
            ("carol", "2026-12-25T12:00", "2026-12-26T00:00"),
            id="later-listed-wins",
        ),
        pytest.param(
            (BOB_XMAS, CAROL_XMAS_NIGHT),
            "2026-12-24T12:00",
            ("bob", "2026-12-24T00:00", "2026-12-25T12:00"),
            id="overlapped-before",
        ),
        pytest.param(
            (BOB_XMAS, CAROL_XMAS_NIGHT),
            "2026-12-26T00:00",
            ("bob", "2026-12-26T00:00", "2026-12-27T00:00"),
            id="overlapped-after",
        ),
        pytest.param(
            (CAROL_XMAS_NIGHT, BOB_XMAS),
            "2026-12-25T12:00",
            ("bob", "2026-12-24T00:00", "2026-12-27T00:00"),
            id="earlier-listed-hidden",
        ),
        pytest.param(
            (Override("carol", naive("2026-01-01T00:00"), naive("2026-01-02T00:00")),),
            "2026-01-01T12:00",
            ("carol", "2026-01-01T00:00", "2026-01-02T00:00"),
            id="before-rotation-start",
        ),
    ],
)
def test_overrides(overrides, at, expected):
    assert local(weekly(LA, *overrides).on_call(wall(at, LA))) == expected


def test_override_windows_are_rotation_local_whatever_the_timezone_of_the_instant():
    rotation = weekly(LA, BOB_XMAS)

    assert rotation.on_call(utc("2026-12-24T07:59")).contact == "alice"  # 23:59 PST
    assert rotation.on_call(utc("2026-12-24T08:00")).contact == "bob"  # 00:00 PST


def test_single_member_rotation_is_always_that_member():
    rotation = Rotation("solo", ("alice",), DAY, naive("2026-03-27T09:00"), LONDON)

    stretches = rotation.shifts(wall("2026-03-27T12:00", LONDON), 4)

    assert [local(oc) for oc in stretches] == [
        ("alice", f"2026-03-{day}T09:00", f"2026-03-{day + 1}T09:00") for day in range(27, 31)
    ]
    assert [oc.reason.split(" of ")[0] for oc in stretches] == ["shift 1", "shift 2", "shift 3", "shift 4"]


def test_shifts_lists_consecutive_stretches_with_overrides():
    stretches = weekly(LONDON, BOB_XMAS).shifts(wall("2026-12-20T12:00", LONDON), 5)

    assert [local(oc) for oc in stretches] == [
        ("bob", "2026-12-14T09:00", "2026-12-21T09:00"),
        ("alice", "2026-12-21T09:00", "2026-12-24T00:00"),
        ("bob", "2026-12-24T00:00", "2026-12-27T00:00"),
        ("alice", "2026-12-27T00:00", "2026-12-28T09:00"),
        ("bob", "2026-12-28T09:00", "2027-01-04T09:00"),
    ]


def test_shifts_from_before_start():
    stretches = weekly(LONDON).shifts(wall("2026-01-04T00:00", LONDON), 2)

    assert [local(oc) for oc in stretches] == [
        (None, "2026-01-04T00:00", "2026-01-05T09:00"),
        ("alice", "2026-01-05T09:00", "2026-01-12T09:00"),
    ]
    assert weekly(LONDON).shifts(wall("2026-01-04T00:00", LONDON), 0) == []


NIGHT = QuietHours(time(22), time(7), LA, frozenset({"critical"}))
OFFICE = QuietHours(time(9), time(17), LA)


@pytest.mark.parametrize(
    ("quiet", "at", "active", "ends"),
    [
        pytest.param(NIGHT, "2026-06-01T21:59", False, None, id="wrap-before"),
        pytest.param(NIGHT, "2026-06-01T22:00", True, "2026-06-02T07:00", id="wrap-start-inclusive"),
        pytest.param(NIGHT, "2026-06-01T23:59", True, "2026-06-02T07:00", id="wrap-before-midnight"),
        pytest.param(NIGHT, "2026-06-02T00:00", True, "2026-06-02T07:00", id="wrap-midnight"),
        pytest.param(NIGHT, "2026-06-02T06:59", True, "2026-06-02T07:00", id="wrap-last-minute"),
        pytest.param(NIGHT, "2026-06-02T07:00", False, None, id="wrap-end-exclusive"),
        pytest.param(NIGHT, "2026-06-02T12:00", False, None, id="wrap-midday"),
        pytest.param(OFFICE, "2026-06-01T08:59", False, None, id="plain-before"),
        pytest.param(OFFICE, "2026-06-01T09:00", True, "2026-06-01T17:00", id="plain-start-inclusive"),
        pytest.param(OFFICE, "2026-06-01T16:59", True, "2026-06-01T17:00", id="plain-last-minute"),
        pytest.param(OFFICE, "2026-06-01T17:00", False, None, id="plain-end-exclusive"),
        pytest.param(OFFICE, "2026-06-01T23:00", False, None, id="plain-night"),
        pytest.param(QuietHours(time(7), time(7), LA), "2026-06-01T07:00", False, None, id="empty-window"),
        # 02:30 does not exist on 2026-03-08: fold=0 reads it as 02:30 PST, i.e. 03:30 PDT.
        pytest.param(
            QuietHours(time(2, 30), time(6), LA), "2026-03-08T03:29", False, None, id="start-in-gap-before"
        ),
        pytest.param(
            QuietHours(time(2, 30), time(6), LA),
            "2026-03-08T03:30",
            True,
            "2026-03-08T06:00",
            id="start-in-gap-after",
        ),
    ],
)
def test_quiet_hours_active_and_ends_after(quiet, at, active, ends):
    at = wall(at, LA)

    assert quiet.active(at) is active
    ends_after = quiet.ends_after(at)
    assert (ends_after and minutes(ends_after)) == ends
    assert ends_after is None or ends_after.tzinfo is LA


@pytest.mark.parametrize(
    ("quiet", "at", "active"),
    [
        pytest.param(NIGHT, "2026-06-01T05:30", True, id="la-2230-pdt"),
        pytest.param(NIGHT, "2026-06-01T14:00", False, id="la-0700-pdt"),
        pytest.param(NIGHT, "2026-01-15T14:59", True, id="la-0659-pst"),
        pytest.param(NIGHT, "2026-01-15T15:00", False, id="la-0700-pst"),
        pytest.param(QuietHours(time(22), time(7), KOLKATA), "2026-06-01T16:29", False, id="kolkata-2159"),
        pytest.param(QuietHours(time(22), time(7), KOLKATA), "2026-06-01T16:30", True, id="kolkata-2200"),
    ],
)
def test_quiet_hours_are_in_the_contacts_timezone(quiet, at, active):
    assert quiet.active(utc(at)) is active


@pytest.mark.parametrize(
    ("quiet", "start", "hours"),
    [
        pytest.param(NIGHT, "2026-03-08T06:00", 8, id="spring-night-22-07-is-8h"),
        pytest.param(NIGHT, "2026-11-01T05:00", 10, id="autumn-night-22-07-is-10h"),
        # 01:30 is repeated on 2026-11-01: the window ends at the first one (PDT).
        pytest.param(QuietHours(time(22), time(1, 30), LA), "2026-11-01T05:00", 3.5, id="end-in-fold"),
    ],
)
def test_quiet_nights_with_a_dst_change(quiet, start, hours):
    start = utc(start)
    end = quiet.ends_after(start)

    assert end.astimezone(UTC) - start == timedelta(hours=hours)
    assert quiet.active(end - MINUTE) and not quiet.active(end)
    assert quiet.active(start) and not quiet.active(start - MINUTE)


def test_quiet_window_ending_in_a_fold_does_not_resume_in_the_repeated_hour():
    quiet = QuietHours(time(22), time(1, 30), LA)

    assert quiet.active(utc("2026-11-01T08:15"))  # 01:15 PDT
    assert not quiet.active(utc("2026-11-01T09:15"))  # 01:15 PST, after the window ended at 01:30 PDT


@pytest.mark.parametrize(
    ("at", "severities", "applies"),
    [
        pytest.param("2026-06-01T23:00", ["warning"], True, id="quiet-warning"),
        pytest.param("2026-06-01T23:00", [], True, id="quiet-no-severity"),
        pytest.param("2026-06-01T23:00", ["critical"], False, id="quiet-critical"),
        pytest.param("2026-06-01T23:00", ["warning", "critical"], False, id="quiet-any-critical"),
        pytest.param("2026-06-01T23:00", "critical", False, id="quiet-bare-string"),
        pytest.param("2026-06-01T23:00", ["Critical"], True, id="case-sensitive"),
        pytest.param("2026-06-01T12:00", ["warning"], False, id="not-quiet"),
    ],
)
def test_quiet_hours_severity_exception(at, severities, applies):
    assert NIGHT.applies(wall(at, LA), severities) is applies


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:00", time(22)),
        ("7:30", time(7, 30)),
        ("07:05", time(7, 5)),
        ("00:00", time(0)),
        ("23:59", time(23, 59)),
        (" 6:00 ", time(6)),
    ],
)
def test_parse_clock(text, expected):
    assert parse_clock(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "24:00",
        "7:60",
        "7",
        "7:5",
        "07:00:00",
        "7:30pm",
        "-1:00",
        "",
        "ab:cd",
        "\u0662\u0662:\u0660\u0660",
        1320,
    ],
)
def test_parse_clock_rejects(text):
    with pytest.raises(ValueError, match=r"clock time .*(HH:MM|quote it)"):
        parse_clock(text)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Rotation("r", (), WEEK, naive("2026-01-05T09:00"), LONDON), id="no-members"),
        pytest.param(
            lambda: Rotation("r", ("a",), timedelta(0), naive("2026-01-05T09:00"), LONDON), id="zero-shift"
        ),
        pytest.param(
            lambda: Rotation("r", ("a",), WEEK, wall("2026-01-05T09:00", LONDON), LONDON), id="aware-start"
        ),
        pytest.param(
            lambda: Override("a", naive("2026-01-05T09:00"), naive("2026-01-05T09:00")), id="empty-override"
        ),
        pytest.param(lambda: weekly(LONDON).on_call(naive("2026-01-05T09:00")), id="naive-on-call"),
        pytest.param(lambda: NIGHT.active(naive("2026-01-05T09:00")), id="naive-quiet"),
    ],
)
def test_invalid_values_raise(make):
    with pytest.raises(ValueError):
        make()
