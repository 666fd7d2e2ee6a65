"""gunshot_core: audio decoding, the VGGish frontend/network/postprocessor and classifier heads.

Pure numeric and audio code (numpy, TensorFlow, soundfile); no Beam and no Cloud Storage.
"""

import os as _os

__version__ = "0.1.0"

# A worker process of a quiet command (Beam's multi-process DirectRunner starts fresh interpreters):
# quieten TensorFlow's import there too (see gunshot_core.logs; nothing happens without the variable).
if _os.environ.get("GUNSHOT_QUIET_NATIVE_LOGS") == "1":
    from gunshot_core import logs as _logs

    _logs.quiet_tensorflow_import()
