#!/usr/bin/env python3
"""Regenerate tests/fixtures/alertmanager/*.json from a real Alertmanager (see tests/fixture_capture.py).

Run from the repository with its virtualenv: .venv/bin/python scripts/capture-fixtures.py [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Imported only now: it needs the repository on sys.path first.
from tests.fixture_capture import main

sys.exit(main())
