"""`make bench`: measures alert2voice against a bare aiohttp ceiling on the same machine (see bench/README.md)."""
