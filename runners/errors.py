"""The error type for bad user input: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """Bad input from the user (a flag, a spec, a directory). The message says what and how to fix it."""
