"""alert2voice: Prometheus Alertmanager notifications as phone calls through Webex Connect."""

__version__ = "0.1.0"
