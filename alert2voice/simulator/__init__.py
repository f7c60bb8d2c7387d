"""The Webex Connect Voice API v1 simulator: a tool we ship (make run, tests, bench), not the provider boundary."""

from .server import SIMULATOR, create_simulator_app, run_simulator

__all__ = ["SIMULATOR", "create_simulator_app", "run_simulator"]
