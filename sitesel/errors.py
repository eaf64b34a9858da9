"""User-facing errors.

Anything the user can fix (a bad file, config key, date, region) raises
:class:`SiteselError` with a one-line message that says what is wrong and how
to fix it. The CLI prints that line and exits non-zero, without a traceback.
"""


class SiteselError(Exception):
    """An input error with a one-line, actionable message."""
