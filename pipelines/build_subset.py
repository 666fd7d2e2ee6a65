"""Entry point of the subset builder: `python -m pipelines.build_subset` (and `gunshot subset`, the flex template).

    python -m pipelines.build_subset --input 'audioset_v1_embeddings/eval/*.tfrecord' --output out/
    python -m pipelines.build_subset --split eval='.../eval/*' --split train='.../bal_train/*' \\
        --output gs://bucket/subsets/v1 --runner DataflowRunner ...

The job itself is the package `pipelines.subset`, one module per stage (see its docstring);
`run` is `pipelines.subset.pipeline.run`. Options and outputs: docs/build_subset.md.
"""

import sys

from gunshot_core import arguments, logs, startup

# Beam creates ~300,000 long-lived objects: no garbage collection meanwhile, and, run as a command,
# none over them later, while the job's own rows come and go (see gunshot_core.startup).
with startup.imports_without_gc(freeze=__name__ == "__main__"):
    from pipelines.subset.pipeline import run

__all__ = ["run"]

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(arguments.run_program("subset", run))  # user errors: one line, status 2
