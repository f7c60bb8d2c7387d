#!/usr/bin/env python3
"""Regenerate tests/fixtures/alertmanager/*.json from a real Alertmanager (see tests/fixture_capture.py).

Run from the repository with its virtualenv: .venv/bin/python scripts/capture-fixtures.py [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixture_capture import main  # noqa: E402  (needs the repository on sys.path first)

sys.exit(main())
