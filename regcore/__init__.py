"""What Quayside's origin and edge both speak and store."""

__version__ = "0.1.0"
USER_AGENT = f"quayside/{__version__}"
