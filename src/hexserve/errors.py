"""The one exception type for bad user input."""


class SpecError(ValueError):
    """Bad input from a user: a cluster file, a model config, a CLI flag.

    The message is one line that names the field and says how to fix it; the CLI prints it without a
    traceback and exits with code 2.
    """
