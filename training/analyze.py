"""PCA and t-SNE views of subset embeddings, coloured by tag and by AudioSet label (PNG).

    python -m training.analyze --data 'DIR/train*' --tags 'DIR/tagged*.parquet' --output ADIR

As in the original project, each clip is summarised by its mean embedding over its 0.96 s frames;
PCA runs on every clip, t-SNE on a seeded sample of at most --sample clips. ADIR receives
pca_by_tag.png, pca_by_label.png, tsne_by_tag.png, tsne_by_label.png and points.csv (coordinates).
"""

import csv
import logging
import os
import sys
from collections import Counter

import numpy as np

from gunshot_core import arguments, logs, startup
from gunshot_core.errors import GunshotError
from training import data


def parse_args(argv):
    parser = arguments.ArgumentParser(
        "analyze",
        description="PCA and t-SNE scatter plots of clip embeddings, coloured by tag and by AudioSet label.",
    )
    parser.add_argument("--data", required=True, help="glob of subset TFRecords")
    parser.add_argument(
        "--tags",
        help="glob of the subset builder's tagged Parquet table(s) (default: the subset's tagged-*.parquet)",
    )
    parser.add_argument("--output", required=True, help="output directory ADIR")
    parser.add_argument("--positive_tag", default=data.POSITIVE_TAG, help="(%(default)s)")
    parser.add_argument("--sample", type=int, default=2000, help="max clips for t-SNE (%(default)s)")
    parser.add_argument("--top_labels", type=int, default=8, help="AudioSet labels coloured (%(default)s)")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling / t-SNE seed (%(default)s)")
    logs.add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.sample < 2 or args.top_labels < 1:
        parser.error(f"--sample must be >= 2 and --top_labels >= 1, got {args.sample}, {args.top_labels}")
    return args


def display_labels(clips: data.LabelledClips, top: int) -> list[str]:
    """Per clip, the name of its most frequent (over the split) AudioSet label among the `top` most
    frequent labels, or "other"."""
    from gunshot_core.labels import ClassCatalog

    catalog = ClassCatalog.from_files()
    counts = Counter(c for ids in clips.class_ids for c in ids)
    ranked = [c for c, _ in counts.most_common(top)]
    rank = {c: i for i, c in enumerate(ranked)}
    out = []
    for ids in clips.class_ids:
        best = min((c for c in ids if c in rank), key=rank.get, default=None)
        out.append(catalog.name(best) if best is not None else "other")
    return out


def _scatter(path: str, xy: np.ndarray, groups: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    names = sorted(set(groups), key=lambda g: (g == "other", g))
    cmap = plt.get_cmap("tab10")
    groups = np.asarray(groups)
    for i, name in enumerate(names):
        sel = groups == name
        color = "lightgrey" if name == "other" else cmap(i % 10)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, color=color, label=f"{name} ({int(sel.sum())})")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def analyze(args) -> dict:
    """Computes the projections and writes ADIR; returns {plot name: path}."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    args.tags = args.tags or data.find_tag_table(args.data)
    clips = data.load_clips(args.data, data.load_tag_table(args.tags), positive_tag=args.positive_tag)
    if len(clips) < 3:
        raise ValueError(f"need at least 3 usable clips in {args.data!r}, got {len(clips)}")
    os.makedirs(args.output, exist_ok=True)
    means = clips.frame_means()
    by_label = display_labels(clips, args.top_labels)
    pca = PCA(n_components=2, random_state=args.seed).fit(means)
    pca_xy = pca.transform(means)
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.permutation(len(clips))[: args.sample])
    perplexity = min(args.perplexity, (len(sample) - 1) / 3.0)
    tsne_xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=args.seed).fit_transform(
        means[sample]
    )
    explained = pca.explained_variance_ratio_
    pca_title = f"PCA of mean clip embeddings ({100 * explained[0]:.1f} % + {100 * explained[1]:.1f} % var.)"
    plots = {
        "pca_by_tag": (pca_xy, clips.tags, pca_title),
        "pca_by_label": (pca_xy, by_label, pca_title),
        "tsne_by_tag": (tsne_xy, [clips.tags[i] for i in sample], f"t-SNE of {len(sample)} clips"),
        "tsne_by_label": (tsne_xy, [by_label[i] for i in sample], f"t-SNE of {len(sample)} clips"),
    }
    written = {}
    for name, (xy, groups, title) in plots.items():
        written[name] = os.path.join(args.output, f"{name}.png")
        _scatter(written[name], xy, groups, title)
    tsne_of = {int(i): tsne_xy[k] for k, i in enumerate(sample)}
    with open(os.path.join(args.output, "points.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["video_id", "start_time_seconds", "tag", "label_name", "pca_x", "pca_y", "tsne_x", "tsne_y"]
        )
        for i in range(len(clips)):
            t = tsne_of.get(i)
            w.writerow(
                [
                    clips.video_ids[i],
                    clips.start_times[i],
                    clips.tags[i],
                    by_label[i],
                    f"{pca_xy[i, 0]:.6g}",
                    f"{pca_xy[i, 1]:.6g}",
                    "" if t is None else f"{t[0]:.6g}",
                    "" if t is None else f"{t[1]:.6g}",
                ]
            )
    logging.info(
        "wrote PCA and t-SNE views of %d clips (%d in t-SNE) to %s", len(clips), len(sample), args.output
    )
    return written


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        analyze(args)
    except (FileNotFoundError, ValueError, GunshotError) as e:
        return arguments.fail("analyze", e)
    return 0


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())  # a finished run ends without the interpreter's teardown
