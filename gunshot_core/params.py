"""VGGish constants, as in the official vggish_params.py (tensorflow/models research/audioset)."""

SAMPLE_RATE = 16000
STFT_WINDOW_LENGTH_SECONDS = 0.025
STFT_HOP_LENGTH_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01  # added to the mel spectrogram before the log, to avoid log(0)
EXAMPLE_WINDOW_SECONDS = 0.96  # each example holds 96 frames of 10 ms
EXAMPLE_HOP_SECONDS = 0.96  # examples do not overlap
NUM_FRAMES = 96
NUM_BANDS = 64
EMBEDDING_SIZE = 128

# Postprocessing (PCA + quantisation).
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"
PCA_MEANS_NAME = "pca_means"
QUANTIZE_MIN_VAL = -2.0
QUANTIZE_MAX_VAL = +2.0

# Samples of 16 kHz audio per 0.96 s example and the samples needed for the first one
# (96 frames of 10 ms hop plus the 25 ms window minus one hop).
STFT_WINDOW_SAMPLES = int(round(SAMPLE_RATE * STFT_WINDOW_LENGTH_SECONDS))  # 400
STFT_HOP_SAMPLES = int(round(SAMPLE_RATE * STFT_HOP_LENGTH_SECONDS))  # 160
EXAMPLE_HOP_SAMPLES = NUM_FRAMES * STFT_HOP_SAMPLES  # 15360
MIN_SAMPLES_FOR_ONE_EXAMPLE = (NUM_FRAMES - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES  # 15600

# The original project's heads were trained on 10-second AudioSet clips: 10 frames of 0.96 s.
HEAD_FRAMES = 10
FRAME_SECONDS = EXAMPLE_HOP_SECONDS
