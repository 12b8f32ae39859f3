"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """A problem with the user's input, options or environment, stated in one line."""


class ModelUnavailable(UserError):
    """A model file that the requested feature needs cannot be found."""
