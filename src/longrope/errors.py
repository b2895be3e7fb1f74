"""What users see when something is wrong or worth knowing.

`LongRopeError`: bad input or an impossible request; the CLI prints its message on one line and
exits 2. `warn(message)`: the one channel for everything else the user should hear about (a run that
goes on): a `LongRopeWarning` through Python's `warnings`, so a library user filters it like any other
warning and the CLI prints it on one line (`longrope COMMAND: warning: ...`).
"""
import warnings


class LongRopeError(ValueError):
    """Bad input or an impossible request, explained in one line for the user."""


class LongRopeWarning(UserWarning):
    """A run goes on, but the user should know (a split that holds nothing out, a doubtful scale)."""


def warn(message: str) -> None:
    """Warn about the caller's caller (the code that asked for the doubtful thing)."""
    warnings.warn(message, LongRopeWarning, stacklevel=3)


def script_main(main, name: str) -> None:
    """`if __name__ == "__main__": script_main(main, "NAME")` for a script (a benchmark): run `main()`
    and exit with its status; a LongRopeError is one line `NAME: error: ...` and exit status 2."""
    import sys
    try:
        sys.exit(main())
    except LongRopeError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(2)
