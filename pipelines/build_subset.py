"""Entry point of the subset builder: `python -m pipelines.build_subset` (and `gunshot subset`, the flex template).

    python -m pipelines.build_subset --input 'audioset_v1_embeddings/eval/*.tfrecord' --output out/
    python -m pipelines.build_subset --split eval='.../eval/*' --split train='.../bal_train/*' \\
        --output gs://bucket/subsets/v1 --runner DataflowRunner ...

The job itself is the package `pipelines.subset`, one module per stage (see its docstring);
`run` is `pipelines.subset.pipeline.run`. Options and outputs: docs/build_subset.md.
"""

import sys

from gunshot_core import logs
from pipelines.subset.pipeline import run

__all__ = ["run"]

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    run()
