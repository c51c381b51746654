"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class MetalearnError(Exception):
    """A problem with the user's input (file, key or value), stated in one line."""
