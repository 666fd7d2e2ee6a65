"""Start-up and exit costs of the commands: large imports without cyclic garbage collection.

Importing TensorFlow and Apache Beam creates ~600,000 Python objects that live until the process
exits. While they are being created, Python's cyclic garbage collector runs over all of them again
and again (8 full collections, and many young ones) and frees almost nothing: ~1.5 s of the ~5 s of
CPU the two imports take on this project's 2-core machines. When the interpreter exits it collects
them all once more, another 1-3 s between the last output line and the shell prompt.

`imports_without_gc()` pauses the collector for a block of imports and can then move everything that
exists out of its way (`gc.freeze()`); `freeze_before_exit()` does the same when a command is done.
Reference counting is unaffected: objects that are not part of a reference cycle are freed as always.
"""

import contextlib
import gc


@contextlib.contextmanager
def imports_without_gc(*, freeze: bool = False):
    """Runs a block of large imports with the cyclic garbage collector paused.

    Args:
      freeze: afterwards, exempt every object that exists from future collections (`gc.freeze()`):
        right for the long-lived modules a command or a worker imports once; any cyclic garbage that
        exists at that moment is kept until exit, so use it where little else is going on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:  # nested blocks leave the collector to the outermost one
            gc.enable()


def freeze_before_exit() -> None:
    """Spares the interpreter's final collection over every object of the process (call when a
    command has finished its work and written its outputs; files are still closed as usual)."""
    gc.freeze()
