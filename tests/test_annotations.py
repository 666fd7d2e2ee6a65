"""Annotation readers (Raven, Audacity, CSV), the recording matcher and the Raven table writer."""

import pytest

from gunshot_core import annotations as A

RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
    "1\tSpectrogram 1\t1\t1.5\t2.25\t100\t8000\tgunshot\n"
    "1\tWaveform 1\t1\t1.5\t2.25\t100\t8000\tgunshot\n"
    "2\tSpectrogram 1\t1\t10\t11.5\t100\t8000\t thunder \n"
)


def test_raven_reads_rows_once_per_selection_with_the_stem_of_the_table_name():
    parsed = A.parse_annotations(RAVEN, "site1/rec01.Table.1.selections.txt")
    assert parsed.format == A.RAVEN
    assert parsed.errors == ()
    assert parsed.recording_keys == ("rec01",)
    assert parsed.rows == (
        A.Annotation("rec01", 1.5, 2.25, "gunshot", "site1/rec01.Table.1.selections.txt", 2),
        A.Annotation("rec01", 10.0, 11.5, "thunder", "site1/rec01.Table.1.selections.txt", 4),
    )


def test_raven_file_columns_offsets_and_label_column():
    text = (
        "Selection\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tSpecies\tNotes\n"
        "1\t100.0\t101.0\tb.wav\t40.0\tshot\tx\n"
        "2\t5.0\t6.0\ta.wav\t5.0\tdoor\ty\n"
    )
    parsed = A.parse_annotations(text, "any.txt", label_column="species")
    assert [(r.recording_key, r.start_seconds, r.end_seconds, r.label) for r in parsed.rows] == [
        ("b.wav", 40.0, 41.0, "shot"),
        ("a.wav", 5.0, 6.0, "door"),
    ]
    assert parsed.recording_keys == ("a.wav", "b.wav")
    # The default label candidates find "Species" too.
    assert [r.label for r in A.parse_annotations(text, "any.txt").rows] == ["shot", "door"]
    # Begin Path wins over Begin File.
    text2 = "Begin Time (s)\tEnd Time (s)\tBegin Path\tBegin File\tLabel\n1\t2\tC:\\d\\s1\\r.wav\tr.wav\tg\n"
    assert A.parse_annotations(text2, "t.txt").rows[0].recording_key == "C:\\d\\s1\\r.wav"


def test_raven_missing_label_column_is_a_file_error():
    parsed = A.parse_annotations(RAVEN, "rec01.Table.1.selections.txt", label_column="Class")
    assert parsed.rows == ()
    (error,) = parsed.errors
    assert (error.line, error.reason) == (0, A.MISSING_COLUMN)
    assert "'Class'" in error.message
    no_label = "Selection\tBegin Time (s)\tEnd Time (s)\n1\t1\t2\n"
    assert A.parse_annotations(no_label, "x.txt").errors[0].reason == A.MISSING_COLUMN
    no_end = "Selection\tBegin Time (s)\tLabel\n1\t1\tg\n"
    assert A.parse_annotations(no_end, "x.txt").errors[0].reason == A.MISSING_COLUMN


def test_each_row_error_kind_with_its_line_and_the_good_rows_kept():
    text = (
        "Selection\tBegin Time (s)\tEnd Time (s)\tBegin File\tAnnotation\n"
        "1\t1.0\t2.0\ta.wav\tgunshot\n"  # line 2: fine
        "2\tabc\t2.0\ta.wav\tgunshot\n"  # 3: non-numeric
        "3\t5.0\t4.0\ta.wav\tgunshot\n"  # 4: end before start
        "4\t-1.0\t4.0\ta.wav\tgunshot\n"  # 5: negative
        "5\t1.0\n"  # 6: too few fields
        "6\t1.0\t2.0\t\tgunshot\n"  # 7: no file
        "7\tnan\t2.0\ta.wav\tgunshot\n"  # 8: NaN is not a number either
    )
    parsed = A.parse_annotations(text, "t.txt")
    assert [r.line for r in parsed.rows] == [2]
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, A.NON_NUMERIC),
        (4, A.END_BEFORE_START),
        (5, A.NEGATIVE_TIME),
        (6, A.MALFORMED_ROW),
        (7, A.MISSING_FILE_NAME),
        (8, A.NON_NUMERIC),
    ]
    assert parsed.errors[0].message == "t.txt:3: start time 'abc' is not a number"
    assert parsed.errors[1].message == "t.txt:4: end 4 s is before start 5 s"
    # Deterministic: the same text gives the same result.
    assert A.parse_annotations(text, "t.txt") == parsed


def test_audacity_labels_skip_frequency_lines_and_cover_their_recording_when_empty():
    text = "1.000000\t2.500000\tgunshot\n\\\t200.0\t4000.0\n3.5\t3.5\tdoor slam\n4\tx\tbad\n7\n"
    parsed = A.parse_annotations(text, "labels/rec02.txt")
    assert parsed.format == A.AUDACITY
    assert [(r.recording_key, r.start_seconds, r.end_seconds, r.label, r.line) for r in parsed.rows] == [
        ("rec02", 1.0, 2.5, "gunshot", 1),
        ("rec02", 3.5, 3.5, "door slam", 3),
    ]
    assert [(e.line, e.reason) for e in parsed.errors] == [(4, A.NON_NUMERIC), (5, A.MALFORMED_ROW)]
    empty = A.parse_annotations(b"", "rec03.txt")
    assert (empty.format, empty.rows, empty.errors, empty.recording_keys) == (A.AUDACITY, (), (), ("rec03",))


def test_csv_reader_header_rename_and_errors():
    text = (
        "file,start_seconds,end_seconds,label,who\nsite1/a.wav,1,2,gunshot,me\nb.flac,3,x,rain,me\nc.wav,1\n"
    )
    parsed = A.parse_annotations(text, "ann.csv")
    assert parsed.format == A.CSV
    assert parsed.rows == (A.Annotation("site1/a.wav", 1.0, 2.0, "gunshot", "ann.csv", 2),)
    assert [(e.line, e.reason) for e in parsed.errors] == [(3, A.NON_NUMERIC), (4, A.MALFORMED_ROW)]
    renamed = "file,start_seconds,end_seconds,kind\na.wav,1,2,shot\n"
    assert A.parse_annotations(renamed, "x.csv", label_column="kind").rows[0].label == "shot"
    missing = A.parse_annotations(renamed, "x.csv")
    assert [(e.line, e.reason) for e in missing.errors] == [(0, A.MISSING_COLUMN)]
    assert A.parse_annotations("", "x.csv").errors[0].reason == A.MALFORMED_FILE


def test_unknown_format_and_undecodable_bytes():
    parsed = A.parse_annotations("hello world\nmore\n", "notes.txt")
    assert parsed.format == ""
    assert [(e.line, e.reason) for e in parsed.errors] == [(0, A.MALFORMED_FILE)]
    # Windows-1252 bytes are read, not rejected.
    latin = "Begin Time (s)\tEnd Time (s)\tLabel\n1\t2\tp\xe9tard\n".encode("cp1252")
    assert A.parse_annotations(latin, "r.Table.1.selections.txt").rows[0].label == "p\xe9tard"


def test_read_annotations_of_a_missing_local_file_is_an_error_row(tmp_path):
    parsed = A.read_annotations(str(tmp_path / "nope.txt"))
    assert [(e.line, e.reason) for e in parsed.errors] == [(0, A.MALFORMED_FILE)]
    path = tmp_path / "rec.Table.1.selections.txt"
    path.write_text(RAVEN)
    assert len(A.read_annotations(str(path)).rows) == 2


def test_selection_table_round_trip():
    rows = [
        {
            "file": "gs://b/site2/r.wav",
            "start_seconds": 3.25,
            "end_seconds": 4.0,
            "label": "gunshot",
            "Score": 0.5,
        },
        {
            "file": "arch.zip!s1/r.wav",
            "start_seconds": 1.0,
            "end_seconds": 1.96,
            "label": "miss",
            "Score": None,
        },
        A.Annotation("gs://b/site1/q.wav", 0.123456, 7.0, "door", "x", 1),
    ]
    text = A.format_selection_table(rows, label_column="Annotation", extra_columns=("Score",))
    lines = text.splitlines()
    assert lines[0].split("\t") == list(A.SELECTION_TABLE_COLUMNS) + ["Annotation", "Score"]
    assert lines[1].split("\t") == [
        "1", "Spectrogram 1", "1", "1.000000", "1.960000", "125.0", "7500.0",
        "arch.zip!s1/r.wav", "r.wav", "miss", "",
    ]  # fmt: skip
    assert lines[3].endswith("\tgunshot\t0.500000")
    parsed = A.parse_annotations(text, "review.Table.1.selections.txt")
    assert parsed.errors == ()
    assert [(r.recording_key, r.start_seconds, r.end_seconds, r.label) for r in parsed.rows] == [
        ("arch.zip!s1/r.wav", 1.0, 1.96, "miss"),
        ("gs://b/site1/q.wav", 0.123456, 7.0, "door"),
        ("gs://b/site2/r.wav", 3.25, 4.0, "gunshot"),
    ]
    assert A.format_selection_table(reversed(rows), extra_columns=("Score",)) == text


@pytest.mark.parametrize(
    "key, expected",
    [
        ("gs://b/site1/rec.wav", "gs://b/site1/rec.wav"),  # exact
        ("D:\\field\\site2\\rec.wav", "gs://b/site2/rec.wav"),  # shares the site folder
        ("rec.wav", None),  # a tie between the two sites
        ("solo", "gs://b/site1/solo.flac"),  # a stem
        ("member", "gs://b/a.zip!x/member.wav"),  # an archive member
        ("absent.wav", None),
    ],
)
def test_recording_matcher(key, expected):
    sources = [
        "gs://b/site1/rec.wav",
        "gs://b/site2/rec.wav",
        "gs://b/site1/solo.flac",
        "gs://b/a.zip!x/member.wav",
    ]
    matcher = A.RecordingMatcher(sources)
    assert matcher.match(key) == expected
    if key == "rec.wav":
        assert matcher.candidates(key) == ["gs://b/site1/rec.wav", "gs://b/site2/rec.wav"]
    if key == "absent.wav":
        assert matcher.candidates(key) == []


def test_table_recording_stem():
    assert A.table_recording_stem("a/b/rec01.Table.12.selections.txt") == "rec01"
    assert A.table_recording_stem("rec.2020.selections.txt") == "rec.2020"
    assert A.table_recording_stem("C:\\x\\rec03.txt") == "rec03"


def test_review_verdicts_read_as_csv_annotations_with_superseded_rows():
    text = (
        "item_id,source,start_seconds,end_seconds,verdict,label,reviewer,answered_utc\n"
        "a1,site1/r.wav,1.0,2.0,yes,,ana,2026-01-01T00:00:00.000Z\n"
        "a1,site1/r.wav,1.0,2.0,no,,ana,2026-01-01T00:01:00.000Z\n"
        "a1,site1/r.wav,1.0,2.0,yes,,ben,2026-01-01T00:02:00.000Z\n"
        ",site1/r.wav,5.0,6.0,unsure,,ana,2026-01-01T00:03:00.000Z\n"
    )
    parsed = A.parse_annotations(text, "verdicts.csv", label_column="verdict")
    assert [(r.recording_key, r.start_seconds, r.label, r.line) for r in parsed.rows] == [
        ("site1/r.wav", 1.0, "no", 3),
        ("site1/r.wav", 1.0, "yes", 4),
        ("site1/r.wav", 5.0, "unsure", 5),
    ]
    assert [(e.line, e.reason) for e in parsed.errors] == [(2, A.SUPERSEDED)]
    assert "superseded by line 3" in parsed.errors[0].message
