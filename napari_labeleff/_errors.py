"""User-facing error type shared by the headless core, the CLI and the GUI."""


class LabelEffError(ValueError):
    """A problem with user input that deserves a one-line message, not a traceback.

    The CLI prints ``str(err)`` and exits with status 2; the GUI shows it in a napari
    notification. It subclasses :class:`ValueError` so callers that validate input with
    ``except ValueError`` keep working.
    """
