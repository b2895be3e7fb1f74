"""The one exception type users see. The CLI prints its message on one line and exits 2."""


class LongRopeError(ValueError):
    """Bad input or an impossible request, explained in one line for the user."""
