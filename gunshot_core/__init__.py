"""gunshot_core: audio decoding, the VGGish frontend/network/postprocessor and classifier heads.

Pure numeric and audio code (numpy, TensorFlow, soundfile); no Beam and no Cloud Storage.
"""

__version__ = "0.1.0"
