"""The AudioSet embedding record format: tf.train.SequenceExample, as in the official release.

Context features: `video_id` (bytes), `start_time_seconds` and `end_time_seconds` (float),
`labels` (int64 list of class indices). Feature list `audio_embedding`: one 128-byte string of uint8
per 0.96 s frame. Every reader and writer in the project imports these names from here.
"""

VIDEO_ID = "video_id"
START_TIME = "start_time_seconds"
END_TIME = "end_time_seconds"
LABELS = "labels"
EMBEDDING = "audio_embedding"
EMBEDDING_WIDTH = 128
