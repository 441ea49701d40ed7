"""Errors raised on bad user input; their messages name the file, key or value and the fix."""


class InputError(ValueError):
    """Bad input data or configuration that the user must fix."""


class SourceError(InputError):
    """A downloaded or local source is missing, corrupt, or not what was expected."""
