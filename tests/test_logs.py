"""Log lines: JSON fields, and the handler that batches a loop iteration's lines into one write."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import weakref

import pytest

from alert2voice.logs import Repeated, setup_logging


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream():
    out = CountingStream()
    handler = setup_logging("json", "info", stream=out)
    yield out
    logging.getLogger().removeHandler(handler)


def lines(stream: CountingStream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_outside_a_loop_every_line_is_written_at_once(stream):
    log = logging.getLogger("alert2voice.test")
    log.info("one", extra={"page_key": "k1", "route": "r"})
    assert [(d["msg"], d["page_key"], d["route"], d["level"]) for d in lines(stream)] == [("one", "k1", "r", "info")]
    assert lines(stream)[0]["ts"].endswith("+00:00")


async def test_in_a_loop_an_iterations_lines_go_out_in_one_write(stream):
    log = logging.getLogger("alert2voice.test")
    for i in range(5):
        log.info("webhook accepted", extra={"n": i})
    assert stream.getvalue() == ""  # held until the loop comes round
    await asyncio.sleep(0)
    assert [d["n"] for d in lines(stream)] == [0, 1, 2, 3, 4]
    assert stream.writes == 1


async def test_a_warning_is_written_at_once_with_what_came_before(stream):
    log = logging.getLogger("alert2voice.test")
    log.info("first")
    log.warning("second")
    assert [d["msg"] for d in lines(stream)] == ["first", "second"]


async def test_lines_held_at_exit_are_written_by_logging_shutdown(stream):
    logging.getLogger("alert2voice.test").info("last words")
    ours = [weakref.ref(h) for h in logging.getLogger().handlers if getattr(h, "_alert2voice", False)]
    logging.shutdown(ours)  # what the interpreter runs at exit, on our handler only
    assert [d["msg"] for d in lines(stream)] == ["last words"]


def test_lines_from_another_thread_are_written_at_once(stream):
    import threading

    thread = threading.Thread(target=lambda: logging.getLogger("alert2voice.test").info("from a thread"))
    thread.start()
    thread.join()
    assert [d["msg"] for d in lines(stream)] == ["from a thread"]


def test_scrubber_redacts_every_form_of_a_secret_and_masks_numbers():
    from alert2voice.logs import Scrubber

    scrubber = Scrubber()
    scrubber.set_secrets(["tok-secret", 'pa"ss\\word', "tok-secret-longer"])
    line = ('{"a": "tok-secret", "b": "tok-secret-longer", "c": "pa\\"ss\\\\word", "d": \'pa"ss\\word\', '
            '"n": "+442071838750"}')
    out = scrubber.scrub(line)
    assert "tok-secret" not in out and "ss" not in out.replace("<redacted>", "")
    assert out.count("<redacted>") == 4  # the longer secret whole, not as the shorter one plus a tail
    assert "+44******8750" in out
    assert scrubber.scrub("no secret, +14155550101") == "no secret, +14*****0101"
    assert scrubber.scrub("nothing at all") == "nothing at all"


def test_a_repeated_warning_is_logged_on_change_then_once_a_minute_with_its_count(caplog):
    now = [0.0]
    away = Repeated(logging.getLogger("alert2voice.test"), "store unavailable; retried every second",
                    monotonic=lambda: now[0])
    caplog.set_level(logging.INFO, logger="alert2voice.test")
    for second in range(150):  # two and a half minutes of the same error, once a second
        now[0] = float(second)
        away("connection refused")
    away("out of memory")  # another error: at once
    away.over()
    away.over()  # over already: nothing more
    lines = [(r.levelname, r.getMessage(), getattr(r, "error", None), getattr(r, "repeated", None))
             for r in caplog.records]
    assert lines == [
        ("WARNING", "store unavailable; retried every second", "connection refused", None),
        ("WARNING", "store unavailable; retried every second", "connection refused", 59),
        ("WARNING", "store unavailable; retried every second", "connection refused", 59),
        ("WARNING", "store unavailable; retried every second", "out of memory", 29),
        ("INFO", "store unavailable: over", None, 0),
    ]


def test_text_lines_escape_control_characters_and_indent_a_traceback():
    out = io.StringIO()
    handler = setup_logging("text", "info", stream=out)
    try:
        log = logging.getLogger("alert2voice.test")
        log.info("a\nb", extra={"receiver": "r\r\nlevel=error msg=forged", "k\n": "\x1b[31m\u2028\x85"})
        try:
            raise ValueError("bad\nlevel=error msg=forged")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("alert2voice.test: a\\nb  receiver=r\\r\\nlevel=error msg=forged k\\n=\\x1b[31m\\u2028\\x85")
    assert rest[0].endswith("alert2voice.test: failed")
    # The exception's own lines stay lines (a traceback is read as one), each marked as the record's continuation.
    assert all(line.startswith("  | ") for line in rest[1:]) and rest[-2:] == ["  | ValueError: bad",
                                                                               "  | level=error msg=forged"]
