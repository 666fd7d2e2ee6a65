"""Argument parsing and user errors of the `gunshot` commands: one clear line, exit status 2.

Every command builds its parser with `ArgumentParser("batch", ...)`, so its help and its errors name
the program the user ran (`usage: gunshot batch ...`, `gunshot batch: error: ...`). A flag that no
option of the command knows is refused with the closest known flag (`did you mean --input?`) before
anything else is checked; an error prints one short usage line and one error line (the full option
list stays in `--help`).

Errors that are not about flags (a missing input, missing model files) are exceptions of
`gunshot_core.errors.GunshotError`; `gunshot_core.cli` (a command's `main` through `fail`, a
`python -m` entry point through `run_program`) turns them into the single line
`gunshot COMMAND: error: MESSAGE` and exit status 2. The traceback is shown only with `--verbose`
(or `--log_level DEBUG`).

Exit statuses of every command: 0 done; 1 done, but some inputs failed (error rows, a failed query);
2 nothing was done: a usage error, a missing or empty input, missing model files.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Sequence

USAGE_ERROR = 2


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's option strings, and those of its sub-commands' parsers (`models list --verify`)."""
    found = []
    for action in parser._actions:
        found.extend(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_option_strings(sub))
    return found


def suggest(flag: str, candidates: Iterable[str]) -> str | None:
    """The known flag closest to a mistyped one (`--inptu` -> `--input`), or None."""
    close = difflib.get_close_matches(flag, sorted(set(candidates)), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_flags(
    parser: argparse.ArgumentParser, argv: Sequence[str], also_known: Iterable[str] = ()
) -> list[str]:
    """The `--flags` of a command line that neither `parser` nor `also_known` accepts.

    A flag counts as known when it is an option string of the parser, a prefix argparse would accept
    as an abbreviation of one, or in `also_known` (e.g. Apache Beam's pipeline options). Everything
    after a bare `--` is positional.
    """
    own = _option_strings(parser)
    extra = set(also_known)
    found = []
    for item in argv:
        if item == "--":
            break
        if not item.startswith("--"):
            continue
        flag = item.split("=", 1)[0]
        if flag in extra or flag in own:
            continue
        if parser.allow_abbrev and any(s.startswith(flag) for s in own if s.startswith("--")):
            continue  # an abbreviation (argparse reports an ambiguous one itself)
        found.append(flag)
    return found


def reject_unknown_flags(
    parser: argparse.ArgumentParser, argv: Sequence[str], also_known: Iterable[str] = ()
) -> None:
    """Exits through `parser.error` naming the first unknown flag and the closest known one."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        return  # help wins, as in argparse
    also_known = set(also_known)
    bad = unknown_flags(parser, argv, also_known)
    if not bad:
        return
    flag = bad[0]
    guess = suggest(flag, [s for s in _option_strings(parser) if s.startswith("--")])
    if guess is None and also_known:
        guess = suggest(flag, also_known)
    hint = f"; did you mean {guess}?" if guess else f"; see `{parser.prog} --help` for the options"
    more = f" (and {', '.join(bad[1:])})" if len(bad) > 1 else ""
    parser.error(f"unrecognized flag {flag}{more}{hint}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser of a `gunshot` command: `gunshot COMMAND` in help and errors.

    Args:
      command: the subcommand (`"batch"`); the program name becomes `gunshot batch`. None keeps
        argparse's `prog` keyword (sub-parsers created by `add_subparsers` pass it).
      **kwargs: as for argparse.ArgumentParser.

    `parse_args` refuses unknown flags with a "did you mean" before checking anything else;
    `parse_known_args` leaves them to the caller (Beam jobs: `pipelines.options.split_args`, which
    refuses those Beam does not know either). `error` prints one short usage line and
    `gunshot COMMAND: error: MESSAGE`, and exits with status 2.
    """

    def __init__(self, command: str | None = None, **kwargs):
        if command is not None:
            kwargs["prog"] = f"gunshot {command}"
        super().__init__(**kwargs)

    def parse_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        reject_unknown_flags(self, args)
        return super().parse_args(args, namespace)

    def short_usage(self) -> str:
        """`usage: gunshot batch --output OUTPUT [options]`: required options, positionals, no list."""
        parts = [self.prog]
        for action in self._actions:
            if action.option_strings and action.required:
                metavar = action.metavar or action.dest.upper()
                parts.append(f"{action.option_strings[-1]} {metavar}")
        parts.append("[options]")
        for action in self._actions:
            if not action.option_strings:
                formatter = self._get_formatter()
                parts.append(
                    formatter._format_args(action, formatter._get_default_metavar_for_positional(action))
                )
        return "usage: " + " ".join(p for p in parts if p)

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.short_usage()}\n{self.prog}: error: {message}\n")


def is_user_error(e: BaseException) -> bool:
    """True for the errors that are about the user's input, not a bug: printed as one line, exit 2.

    GunshotError (a missing input, missing model files, a failed download, ...), a missing file or
    folder the user named (FileNotFoundError, NotADirectoryError, PermissionError), and TensorFlow's
    NotFoundError / PermissionDeniedError on such a path.
    """
    from gunshot_core.errors import GunshotError

    if isinstance(e, (GunshotError, FileNotFoundError, NotADirectoryError, PermissionError)):
        return True
    tf = sys.modules.get("tensorflow")
    tf_errors = getattr(tf, "errors", None)
    return tf_errors is not None and isinstance(e, (tf_errors.NotFoundError, tf_errors.PermissionDeniedError))


def run_program(command: str, function, argv=None) -> int:
    """Runs a command's `run`/`main` for `python -m ...`: a user error is one line (`fail`), status 2.

    Args:
      command: the `gunshot` subcommand it is, e.g. "batch".
      function: the command's run(argv) or main(argv) (a non-int result counts as success).
      argv: arguments without the program name (None: sys.argv[1:]).
    Returns:
      the exit status.
    """
    errors_to = own_stderr()
    try:
        result = function(argv)
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
        if not is_user_error(e):
            raise
        return fail(command, e, file=errors_to)
    return result if isinstance(result, int) else 0


def own_stderr():
    """A text stream on a duplicate of file descriptor 2 as it is now (the terminal or the log).

    The error line of a program goes there, so it reaches the user even while a background
    `import tensorflow` has descriptor 2 redirected to filter its start-up lines
    (gunshot_core.logs.filtered_stderr). None when there is no usable descriptor 2.
    """
    try:
        return os.fdopen(os.dup(2), "w", buffering=1)
    except (OSError, ValueError):
        return None


def error_line(command: str, error: BaseException) -> str:
    """`gunshot COMMAND: error: MESSAGE` for an exception (its own text for GunshotError)."""
    from gunshot_core.errors import GunshotError, describe, sanitize

    if isinstance(error, (GunshotError, OSError, ValueError)) and str(error):
        text = sanitize(str(error))  # these messages name the input themselves
    else:
        text = describe(error)  # TypeName: message
    text = " ".join(text.split())  # one line, whatever the message held
    return f"gunshot {command}: error: {text}"


def fail(command: str, error: BaseException, file=None) -> int:
    """Reports a user error of a command in one line on stderr; returns the exit status 2.

    With `--verbose` (the project's loggers at DEBUG) the traceback is printed first.

    Args:
      command: the subcommand, e.g. "train".
      error: the exception (a GunshotError names the input and the fix).
      file: where to write (default sys.stderr).
    """
    if file is None:
        file = sys.stderr
    else:
        sys.stderr.flush()  # what the command wrote before comes first
    if logging.getLogger("gunshot_core").isEnabledFor(logging.DEBUG):
        traceback.print_exception(error, file=file)
    print(error_line(command, error), file=file, flush=True)
    return USAGE_ERROR
