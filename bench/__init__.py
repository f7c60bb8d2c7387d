"""`make bench`: measures alert2voice against a bare aiohttp ceiling on the same machine (see bench/README.md)."""


def say(text: str) -> None:
    """One line of the bench's progress, at once (output may be a pipe)."""
    print(text, flush=True)
