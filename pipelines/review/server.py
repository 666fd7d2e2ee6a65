"""Review stage: the review web app (Flask), served on 127.0.0.1 only.

One item at a time: its spectrogram and audio (played on arrival; `r` or space replays), keyboard
first: `y` gunshot, `n` not, `u` unsure (each saves and moves on), `l` edits the optional label,
left/right arrows (or `b`/`f`) go back and forward without answering, `s` shows or hides the score
(hidden by default so it does not bias the listener). Every answer is POSTed and appended to
verdicts.csv (locked, flushed, fsynced: `verdicts`) before the page moves on; the page is rebuilt
from verdicts.csv when (re)loaded, so a killed server or a closed tab resumes at the first item the
reviewer has not answered. An item whose clip could not be cut, or whose file has gone, says why
and can be skipped with the right arrow. Everything is inline: the page makes no request to any
other host.

    app = create_app("reviews/siteA", reviewer="ana")
    serve("reviews/siteA", reviewer="ana", port=8765)
"""

from __future__ import annotations

import logging
import os
import socket

from pipelines.review import sample as sample_io
from pipelines.review import verdicts as verdicts_io
from pipelines.review.frame import ReviewInputError

_LOG = logging.getLogger(__name__)

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gunshot review — {{ name }}</title>
<link rel="icon" href="data:,">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#2b2b2b;color:#eee;padding:.6em 1.2em;display:flex;gap:2em;align-items:baseline}
header h1{font-size:1.1em;margin:0}
main{max-width:1100px;margin:1em auto;padding:0 1em}
#spectrogram{width:100%;max-width:1000px;background:#000;min-height:120px;display:block}
.bar{height:8px;background:#ddd;border-radius:4px;overflow:hidden;margin:.4em 0 1em}
.bar div{height:100%;background:#3a7;width:0}
.meta{font-family:ui-monospace,monospace;font-size:.9em;color:#555;word-break:break-all}
.verdict{font-weight:bold;padding:.1em .5em;border-radius:3px}
.v-yes{background:#c8f0c8}.v-no{background:#f3c9c9}.v-unsure{background:#f3e6b3}
.problem{background:#fde2e2;border:1px solid #d88;padding:.6em;margin:.6em 0}
kbd{border:1px solid #aaa;border-bottom-width:2px;border-radius:3px;padding:0 .35em;background:#fff;font-size:.9em}
.keys{color:#555;font-size:.9em;margin-top:1em;line-height:1.9}
button{margin-right:.4em}
#saved{color:#3a7;margin-left:1em}
#error{color:#b00}
</style></head>
<body>
<header><h1>gunshot review</h1><span>{{ name }}</span><span>reviewer: <b>{{ reviewer }}</b></span>
<span id="progress"></span></header>
<main>
<div class="bar"><div id="bar"></div></div>
<div id="position" class="meta"></div>
<div id="problem" class="problem" hidden></div>
<img id="spectrogram" alt="spectrogram of the item">
<p><audio id="audio" controls autoplay preload="auto"></audio></p>
<p>Current answer: <span id="current" class="verdict">none</span>
 <span id="score" class="meta" hidden></span><span id="saved"></span> <span id="error"></span></p>
<p><label>Label (optional) <input id="label" size="30" placeholder="e.g. pistol, door slam"></label></p>
<p><button id="yes" data-v="yes">gunshot (y)</button><button id="no" data-v="no">not (n)</button>
<button id="unsure" data-v="unsure">unsure (u)</button>
<button id="back">back (&larr;)</button><button id="forward">forward (&rarr;)</button></p>
<div class="keys"><kbd>y</kbd> gunshot &nbsp; <kbd>n</kbd> not a gunshot &nbsp; <kbd>u</kbd> unsure
(each saves and moves on) &nbsp; <kbd>l</kbd> label &nbsp; <kbd>r</kbd>/<kbd>space</kbd> replay &nbsp;
<kbd>&larr;</kbd>/<kbd>b</kbd> back &nbsp; <kbd>&rarr;</kbd>/<kbd>f</kbd> forward (skip) &nbsp;
<kbd>s</kbd> show/hide score &nbsp; <kbd>Esc</kbd> leave the label field</div>
<div id="done" hidden><h2>All items answered.</h2><p>Verdicts are in <code>{{ verdicts_path }}</code>.
Go back with <kbd>&larr;</kbd> to change an answer.</p></div>
</main>
<script>
"use strict";
const ITEMS = {{ items|tojson }};
const answers = {{ answers|tojson }};
let index = {{ start }};
const audio = document.getElementById("audio");
const img = document.getElementById("spectrogram");
const label = document.getElementById("label");
let showScore = false;

function answeredCount() { return ITEMS.filter(it => answers[it.item_id]).length; }

function show() {
  const done = index >= ITEMS.length;
  document.getElementById("done").hidden = !done;
  const n = answeredCount();
  document.getElementById("progress").textContent = n + " of " + ITEMS.length + " answered";
  document.getElementById("bar").style.width = (100 * n / Math.max(1, ITEMS.length)) + "%";
  if (done) { audio.removeAttribute("src"); audio.load(); img.hidden = true;
              document.getElementById("position").textContent = ""; return; }
  const it = ITEMS[index];
  document.getElementById("position").textContent = "item " + (index + 1) + " of " + ITEMS.length +
      " · " + it.source + " · " + it.start_seconds.toFixed(2) + "–" + it.end_seconds.toFixed(2) + " s";
  const problem = document.getElementById("problem");
  problem.hidden = !it.problem;
  problem.textContent = it.problem ? it.problem + " — answer if you can tell, or skip with →." : "";
  if (it.spectrogram) { img.hidden = false; img.src = it.spectrogram; } else { img.hidden = true; img.removeAttribute("src"); }
  if (it.clip) { audio.src = it.clip; play(); } else { audio.removeAttribute("src"); audio.load(); }
  const a = answers[it.item_id];
  const cur = document.getElementById("current");
  cur.textContent = a ? a.verdict : "none";
  cur.className = "verdict" + (a ? " v-" + a.verdict : "");
  label.value = a ? a.label : "";
  const score = document.getElementById("score");
  score.hidden = !showScore;
  score.textContent = "score " + it.score.toFixed(3) + " · " + it.group;
  document.getElementById("error").textContent = "";
}

function play() {
  audio.currentTime = 0;
  const p = audio.play();
  if (p) { p.catch(() => {}); }  // autoplay may be refused until the first key press
}

let saving = false;  // one answer at a time: a key pressed while saving is ignored

async function answer(verdict) {
  if (index >= ITEMS.length || saving) { return; }
  saving = true;
  const it = ITEMS[index];
  const body = {item_id: it.item_id, verdict: verdict, label: label.value.trim()};
  try {
    const r = await fetch("verdict", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
    const saved = await r.json();
    if (!r.ok) { throw new Error(saved.error || r.statusText); }
    answers[it.item_id] = saved;
    document.getElementById("saved").textContent = "saved " + it.item_id + ": " + verdict;
    index += 1;
    show();
  } catch (e) {
    document.getElementById("error").textContent = "NOT SAVED (" + e.message + "): is the server running?";
  } finally {
    saving = false;
  }
}

function move(step) { index = Math.min(ITEMS.length, Math.max(0, index + step)); show(); }

document.addEventListener("keydown", ev => {
  if (ev.target === label) {
    if (ev.key === "Escape" || ev.key === "Enter") { label.blur(); ev.preventDefault(); }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
  const k = ev.key;
  if (k === "y") { answer("yes"); }
  else if (k === "n") { answer("no"); }
  else if (k === "u") { answer("unsure"); }
  else if (k === "l") { label.focus(); }
  else if (k === "r" || k === " ") { play(); }
  else if (k === "ArrowLeft" || k === "b") { move(-1); }
  else if (k === "ArrowRight" || k === "f") { move(1); }
  else if (k === "s") { showScore = !showScore; show(); }
  else { return; }
  ev.preventDefault();
});
for (const id of ["yes", "no", "unsure"]) {
  document.getElementById(id).addEventListener("click", ev => answer(ev.target.dataset.v));
}
document.getElementById("back").addEventListener("click", () => move(-1));
document.getElementById("forward").addEventListener("click", () => move(1));
show();
</script>
</body></html>
"""


def load_items(review_dir: str) -> list[dict]:
    """The sample's items for the page: ids, times, media URLs and, when audio is missing, why."""
    items = []
    for row in sample_io.read_sample(review_dir):
        clip, png, problem = row["clip"], row["spectrogram"], row.get("media_error", "")
        if clip and not os.path.exists(os.path.join(review_dir, clip)):
            problem = f"the clip {clip} is missing from the review folder"
            clip = ""
        if png and not os.path.exists(os.path.join(review_dir, png)):
            png = ""
        items.append(
            {
                "item_id": row["item_id"],
                "source": row["source"],
                "start_seconds": float(row["start_seconds"]),
                "end_seconds": float(row["end_seconds"]),
                "score": float(row["score"]),
                "group": row["group"],
                "clip": f"media/{clip}" if clip else "",
                "spectrogram": f"media/{png}" if png else "",
                "problem": f"No audio: {problem}" if problem else "",
            }
        )
    return items


def create_app(review_dir: str, *, reviewer: str):
    """The Flask app over one review folder, for one reviewer.

    Raises:
      ReviewInputError: the folder holds no sample.csv, or its verdicts.csv is malformed.
    """
    import flask

    items = load_items(review_dir)
    by_id = {it["item_id"]: row for it, row in zip(items, sample_io.read_sample(review_dir), strict=True)}
    verdicts_io.read_verdicts(review_dir)  # a malformed file is reported before serving
    media = {path for row in by_id.values() for path in (row["clip"], row["spectrogram"]) if path}
    app = flask.Flask(__name__)
    app.json.sort_keys = False

    def own_answers() -> dict:
        rows = verdicts_io.read_verdicts(review_dir)
        return {
            item: {"verdict": row["verdict"], "label": row["label"], "answered_utc": row["answered_utc"]}
            for (item, who), row in verdicts_io.latest(rows).items()
            if who == reviewer and item in by_id
        }

    @app.get("/")
    def index():
        answers = own_answers()
        start = next((i for i, it in enumerate(items) if it["item_id"] not in answers), len(items))
        return flask.render_template_string(
            PAGE,
            items=items,
            answers=answers,
            start=start,
            reviewer=reviewer,
            name=os.path.basename(os.path.abspath(review_dir)),
            verdicts_path=os.path.join(review_dir, verdicts_io.VERDICTS_CSV),
        )

    @app.get("/media/<path:name>")
    def media_file(name):
        if name not in media:
            flask.abort(404)
        return flask.send_from_directory(os.path.abspath(review_dir), name, max_age=0)

    @app.post("/verdict")
    def verdict():
        body = flask.request.get_json(silent=True) or {}
        row = by_id.get(body.get("item_id"))
        if row is None:
            return flask.jsonify(error=f"unknown item {body.get('item_id')!r}"), 400
        try:
            written = verdicts_io.append_verdict(
                review_dir,
                {
                    "item_id": row["item_id"],
                    "source": row["source"],
                    "start_seconds": row["start_seconds"],
                    "end_seconds": row["end_seconds"],
                    "verdict": body.get("verdict"),
                    "label": body.get("label", ""),
                    "reviewer": reviewer,
                },
            )
        except ValueError as e:
            return flask.jsonify(error=str(e)), 400
        return flask.jsonify(
            verdict=written["verdict"], label=written["label"], answered_utc=written["answered_utc"]
        )

    return app


def serve(review_dir: str, *, reviewer: str, port: int = 8765) -> None:
    """Serves the app on http://127.0.0.1:PORT until interrupted (werkzeug's threaded server)."""
    from werkzeug.serving import make_server

    app = create_app(review_dir, reviewer=reviewer)
    if port:  # werkzeug would print its own message and exit: say it the project's way first
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug's server does
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                raise ReviewInputError(
                    f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pass another --port"
                ) from e
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(
        f"reviewing {review_dir} as {reviewer}: open http://127.0.0.1:{server.port}/ (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
