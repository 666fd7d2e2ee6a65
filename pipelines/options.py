"""Option parsing shared by the pipelines: our flags vs. Beam's, and boolean switches.

Stage: launch (before any pipeline is built). `split_args(parser, argv)` parses our flags with
`parse_known_args` and leaves the rest to Beam, with a loud error on typos of our own flags that Beam
would otherwise swallow; `add_switch` declares a boolean option that takes `--flag` alone or
`--flag=true|false` (the form Dataflow flex-template parameters can set).
"""

from __future__ import annotations

import argparse
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
    go to Beam. Flags that neither we nor Beam know are rejected here with the list of our flags.

    Args:
      parser: the pipeline's own argument parser.
      argv: command-line arguments without the program name (None: sys.argv[1:]).
    Returns:
      (args, beam_args): the parsed namespace and the list of arguments left for PipelineOptions.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args, beam_args = parser.parse_known_args(argv)
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
            known_beam.update(action.option_strings)
    unknown = []
    for item in beam_args:
        if item.startswith("--"):
            flag = item.split("=", 1)[0]
            if flag not in known_beam:
                unknown.append(flag)
    if unknown:
        parser.error(
            f"unrecognised flags {unknown}; neither {parser.prog} nor Apache Beam knows them "
            f"(our flags: {sorted(s for a in parser._actions for s in a.option_strings if s.startswith('--'))})"
        )
    return args, beam_args
