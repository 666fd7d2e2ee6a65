"""Option parsing shared by the pipelines: our flags vs. Beam's, and boolean switches.

Stage: launch (before any pipeline is built). `split_args(parser, argv)` parses our flags with
`parse_known_args` and leaves the rest to Beam, with a loud error on typos of our own flags that Beam
would otherwise swallow; `add_switch` declares a boolean option that takes `--flag` alone or
`--flag=true|false` (the form Dataflow flex-template parameters can set).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_switch(value: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off, any case) -> bool; anything else is an argparse error."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_switch(group, flag: str, *, help: str) -> None:
    """A boolean option: `--flag` alone, or `--flag=true|false`, the form Dataflow flex-template
    parameters arrive in (so a template job can turn it on)."""
    group.add_argument(
        flag, nargs="?", const=True, default=False, type=parse_switch, metavar="true|false", help=help
    )


def split_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list]:
    """Parses our flags with `parser` and returns (args, remaining Beam flags).

    Beam accepts unknown `--flags`, so a misspelt flag of ours (e.g. `--positive_class`) would silently
    go to Beam. Flags that neither we nor Beam know are rejected here, before anything else is checked,
    with the closest known flag (`did you mean --positive_classes?`).

    Args:
      parser: the pipeline's own argument parser.
      argv: command-line arguments without the program name (None: sys.argv[1:]).
    Returns:
      (args, beam_args): the parsed namespace and the list of arguments left for PipelineOptions.
    """
    from gunshot_core import arguments

    argv = list(sys.argv[1:] if argv is None else argv)
    arguments.reject_unknown_flags(parser, argv, also_known=beam_flags())
    return parser.parse_known_args(argv)


def beam_flags() -> frozenset[str]:
    """Every `--flag` of Apache Beam's PipelineOptions classes imported so far (a few ms)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    known_beam = set()
    classes, stack = [], list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack.extend(cls.__subclasses__())
    for cls in classes:
        probe = argparse.ArgumentParser(add_help=False)
        try:
            cls._add_argparse_args(probe)
        except Exception:  # an options class of an optional extra that cannot register its flags
            continue
        for action in probe._actions:
            known_beam.update(s for s in action.option_strings if s.startswith("--"))
    return frozenset(known_beam)
