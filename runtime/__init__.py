"""The engine: routing, the bridge to the actors, the store, flows and configuration."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("confab")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
