"""The version of tornado-prefork, in the one place the build and the code read it."""

__version__ = "0.1.0"
