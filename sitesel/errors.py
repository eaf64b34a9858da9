"""User-facing errors.

Anything the user can fix (a bad file, config key, date, region) raises
:class:`SiteselError` with a one-line message that says what is wrong and how
to fix it. The CLI prints that line and exits non-zero, without a traceback.
What the user should know about a run that goes on is a :class:`SiteselWarning`,
which the CLI prints in one line and keeps in the run's report and manifest.
"""


class SiteselError(Exception):
    """An input error with a one-line, actionable message."""


class SiteselWarning(UserWarning):
    """Something about a run's inputs the user should know (a clipped region, holes, a short
    horizon search); one line, kept in the report."""
