"""Search stage 3: what a search leaves in --output besides the hits table.

- `queries` and `errors` table rows (written with the hits by `common.WriteTable`);
- `raven/query-NNN.selections.txt`: one Raven selection table per query, hits in rank order, with
  an empty `Annotation` column to fill in while listening (training-set building);
- `index.html` + `query-NNN.html` + `media/`: a static page per query in the report's style
  (`pipelines.report.html`), with the query's and each hit's spectrogram (`pipelines.report.plots`)
  and an `<audio>` clip cut from the recording (`pipelines.report.media`); a recording that cannot
  be read gives a note on the page instead of a clip;
- `search.json`: arguments, counters and a summary of the run.

Everything but search.json is byte-identical on reruns with the same inputs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

MANIFEST = "search.json"
RAVEN_DIR = "raven"
DEFAULT_PAGE_HITS = 20
DEFAULT_PADDING_SECONDS = 1.0
SITE_TITLE = "gunshot search"

SORT_COLUMNS = {
    "hits": ("query_index", "rank"),
    "queries": ("query_index",),
    "errors": ("source", "stage", "reason", "message"),
}


#: What a previous search left in the output folder besides the tables (replaced on every run).
PREVIOUS_OUTPUTS = (
    "index.html",
    "query-*.html",
    "media/q*-*.png",
    "media/q*-*.wav",
    f"{RAVEN_DIR}/query-*.selections.txt",
)


def clear_previous(output: str) -> int:
    """Deletes the pages, media and Raven tables of an earlier search in `output`; returns how many.

    A rerun with fewer queries or hits must not leave stale pages or clips beside the new ones.
    """
    from pipelines.scoring.outputs import existing_files

    stale = [
        path for pattern in PREVIOUS_OUTPUTS for path in existing_files(FileSystems.join(output, pattern))
    ]
    if stale:
        FileSystems.delete(stale)
    return len(stale)


#: How the page says where a query window's START came from (queries table's `start_from`).
START_TEXT = {
    "given": "@START as given",
    "loudest": "no @START: the loudest frame(s) of the recording",
    "first_frames": "no @START, and the audio could not be read to find the loudest frame(s): its first frame(s)",
}


def query_rows(resolved) -> list[dict]:
    """`queries` table rows, one per query."""
    rows = []
    for r in resolved:
        spec = r.spec
        rows.append(
            {
                "query_index": spec.index,
                "query": spec.text,
                "recording": spec.recording,
                "start_seconds": spec.start_seconds,
                "start_from": spec.start_from,
                "frame_index": spec.frame_index,
                "window_start_seconds": spec.window_seconds()[0],
                "window_end_seconds": spec.window_seconds()[1],
                "frames": spec.frames,
                "origin": r.origin,
                "status": "ok" if r.ok else "error",
                "error_reason": r.reason,
                "error_message": r.message,
            }
        )
    return rows


def error_rows(table) -> list[dict]:
    """`errors` table rows: the embeddings files that could not be searched."""
    return [
        {"source": path, "stage": "read", "reason": reason, "message": message}
        for path, reason, message in table.errors
    ]


# ---- Raven selection tables ------------------------------------------------------------------------


def raven_name(index: int) -> str:
    return f"{RAVEN_DIR}/query-{index:03d}.selections.txt"


def raven_table(hits: list[dict]) -> str:
    """The hits of one query as a Raven selection table, in rank order (selection 1 = rank 1)."""
    from gunshot_core import annotations

    rows = [
        {
            "file": h["source"],
            "start_seconds": h["start_seconds"],
            "end_seconds": h["end_seconds"],
            "label": "",
            "Rank": h["rank"],
            "Similarity": h["similarity"],
            "Frame": h["frame_index"],
        }
        for h in sorted(hits, key=lambda h: h["rank"])
    ]
    return annotations.format_selection_table(
        rows, label_column="Annotation", extra_columns=("Rank", "Similarity", "Frame"), sort=False
    )


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(
        path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        f.write(text.encode("utf-8"))


def write_raven_tables(output: str, resolved, hits: list[dict]) -> list[str]:
    """One selection table per query that ran (header only when it found nothing); returns the paths."""
    by_query = _by_query(hits)
    paths = []
    for r in resolved:
        if not r.ok:
            continue
        path = FileSystems.join(output, raven_name(r.spec.index))
        _write_text(path, raven_table(by_query.get(r.spec.index, [])))
        paths.append(path)
    return paths


def _by_query(hits: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for h in sorted(hits, key=lambda h: (h["query_index"], h["rank"])):
        out.setdefault(h["query_index"], []).append(h)
    return out


# ---- The HTML pages ----------------------------------------------------------------------------------


def page_name(index: int) -> str:
    return f"query-{index:03d}.html"


def _window_text(spec) -> str:
    first, count = spec.frame_index, spec.frames
    frames = f"frame {first}" if count == 1 else f"frames {first}-{first + count - 1}"
    start, end = spec.window_seconds()
    return f"{frames}: {start:.2f}-{end:.2f} s"


def _media_job(item):
    """(png path, wav path, source, start, end, padding) -> None; raises MediaError when unreadable."""
    from pipelines.report import media, plots

    png, wav, source, start, end, padding, title = item
    clip = media.cut_clip(media.AudioRef.from_source(source), max(0.0, start - padding), end + padding)
    media.write_wav(wav, clip)
    plots.spectrogram_png(
        png, clip.samples, clip.sample_rate, start_seconds=clip.start_seconds, marks=[(start, end, title)]
    )


def write_page(output: str, resolved, hits: list[dict], args, table=None) -> list[str]:
    """Writes index.html, one page per query and their media; returns the paths written.

    Args:
      table: the embeddings table's `pipelines.io.embeddings_table.TableInfo` (its size and models go on index.html).

    The site is built in a local folder (the output itself, or a temporary one copied to gs://).
    """
    remote = "://" in output
    local = tempfile.mkdtemp(prefix="gunshot-search-") if remote else output
    try:
        names = _build_site(local, resolved, hits, args, table)
        if not remote:
            return [os.path.join(output, n) for n in names]
        paths = []
        for name in names:
            target = FileSystems.join(output, name)
            with (
                open(os.path.join(local, name), "rb") as src,
                FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as dst,
            ):
                shutil.copyfileobj(src, dst)
            paths.append(target)
        return paths
    finally:
        if remote:
            shutil.rmtree(local, ignore_errors=True)


def _build_site(directory: str, resolved, hits: list[dict], args, table) -> list[str]:
    from markupsafe import Markup

    from pipelines.report import html, media

    nav = [("queries", "index.html")]
    site = html.Site(directory, SITE_TITLE, nav)
    by_query = _by_query(hits)
    padding = args.clip_padding_seconds
    jobs, where = [], {}
    for r in resolved:
        spec = r.spec
        stem = f"{html.MEDIA_DIR}/q{spec.index:03d}"
        start, end = spec.window_seconds(rounded=False)
        if r.ok:  # a failed query's page says why instead
            where[(spec.index, 0)] = (f"{stem}-query.png", f"{stem}-query.wav")
            jobs.append((spec.index, 0, spec.recording, start, end, "query"))
        for h in by_query.get(spec.index, [])[: args.page_hits] if r.ok else []:
            where[(spec.index, h["rank"])] = (
                f"{stem}-hit{h['rank']:03d}.png",
                f"{stem}-hit{h['rank']:03d}.wav",
            )
            jobs.append(
                (
                    spec.index,
                    h["rank"],
                    h["source"],
                    h["start_seconds"],
                    h["end_seconds"],
                    f"rank {h['rank']}",
                )
            )
    items = [
        (site.path(where[(q, rank)][0]), site.path(where[(q, rank)][1]), source, start, end, padding, title)
        for q, rank, source, start, end, title in jobs
    ]
    results = media.map_with_progress(_media_job, items, label="search clips and spectrograms")
    problems = {
        (job[0], job[1]): result for job, result in zip(jobs, results, strict=True) if result is not None
    }
    written = []

    def player(q, rank):
        failure = problems.get((q, rank))
        if failure is not None:
            reason = getattr(failure, "reason", type(failure).__name__)
            return html.problem(f"no audio: {failure} ({reason})")
        png, wav = where[(q, rank)]
        return Markup("").join(
            [html.figure(png, f"spectrogram {'query' if rank == 0 else f'rank {rank}'}"), html.audio(wav)]
        )

    index_rows = []
    for r in resolved:
        spec = r.spec
        found = by_query.get(spec.index, [])
        status = f"{len(found)} hits" if r.ok else f"error: {r.reason}"
        index_rows.append(
            {
                "index": spec.index,
                "query": html.Link(spec.text, page_name(spec.index)),
                "origin": r.origin or "",
                "status": status,
                "best": found[0]["similarity"] if found else None,
                "raven": html.Link(raven_name(spec.index), raven_name(spec.index)) if r.ok else "",
            }
        )
        parts = [
            html.section(
                "Query",
                html.kv_table(
                    [
                        ("query", spec.text),
                        ("recording", spec.recording),
                        ("window", _window_text(spec)),
                        ("chosen by", START_TEXT.get(spec.start_from, spec.start_from)),
                        ("embedding from", r.origin or "-"),
                        (
                            "Raven table",
                            html.Link(raven_name(spec.index), raven_name(spec.index)) if r.ok else "-",
                        ),
                    ]
                ),
                player(spec.index, 0) if r.ok else Markup(""),
            )
        ]
        if not r.ok:
            parts.append(html.section("Not searched", html.problem(f"{r.reason}: {r.message}")))
        else:
            shown = found[: args.page_hits]
            rows = [
                {
                    "rank": h["rank"],
                    "similarity": h["similarity"],
                    "source": h["source"],
                    "start": h["start_seconds"],
                    "end": h["end_seconds"],
                    "media": player(spec.index, h["rank"]),
                }
                for h in shown
            ]
            columns = [
                html.Column("rank", "rank", "num"),
                html.Column("similarity", "similarity", "num", ".4f"),
                html.Column("source", "recording", "wrap"),
                html.Column("start", "start (s)", "num", ".2f"),
                html.Column("end", "end (s)", "num", ".2f"),
                html.Column("media", "spectrogram and audio"),
            ]
            note = (
                f"The {len(shown)} most similar windows of {len(found)} (all {len(found)} are in the hits "
                f"table and the Raven table)."
                if found
                else "No window of the archive could be compared (empty table, or only the query's own window)."
            )
            parts.append(html.section("Hits", note, html.table(columns, rows, id="hits")))
        written.append(site.write(page_name(spec.index), f"Query {spec.index}: {spec.text}", parts))
    columns = [
        html.Column("index", "#", "num"),
        html.Column("query", "query", "wrap"),
        html.Column("origin", "embedding from"),
        html.Column("status", "status"),
        html.Column("best", "best similarity", "num", ".4f"),
        html.Column("raven", "Raven table"),
    ]
    settings = [("embeddings", args.embeddings)]
    if table is not None:
        settings += [
            (
                "frames in the table",
                f"{table.rows:,} ({table.rows * table.model().hop_seconds / 3600:,.1f} audio hours)",
            ),
            (
                "table files",
                f"{len(table.files)} searched, {len(table.errors)} unreadable (see the errors table)",
            ),
        ]
        if table.model().is_default:
            settings += [
                ("VGGish sha256", ", ".join(table.vggish_sha256) or "not recorded"),
                ("PCA sha256", ", ".join(table.pca_sha256) or "not recorded"),
            ]
        else:
            settings += [
                ("embedding model", f"{table.model().name}, frames every {table.model().hop_seconds:g} s"),
                ("model files sha256", ", ".join(table.embedding_sha256) or "not recorded"),
            ]
    settings += [
        ("hits per query (--top)", args.top),
        ("frames per window (--query_frames)", args.query_frames),
        (
            "similarity",
            ("cosine of dequantised uint8 embeddings" if table is None or table.model().dtype == "uint8"
             else f"cosine of {table.model().dtype} embeddings")
            + (", mean over the window's frames" if args.query_frames > 1 else ""),
        ),
    ]
    written.append(
        site.write(
            "index.html",
            "Search by example",
            [
                html.section("Queries", html.table(columns, index_rows, id="queries")),
                html.section("Settings", html.kv_table(settings)),
            ],
        )
    )
    media_files = sorted(os.path.join(html.MEDIA_DIR, name) for name in os.listdir(site.path(html.MEDIA_DIR)))
    return sorted(written) + media_files
