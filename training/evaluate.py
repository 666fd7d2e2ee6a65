"""Evaluates a gunshot head on a subset split: metrics with confidence intervals, error analysis, report.

    python -m training.evaluate --model MDIR --data 'DIR/eval*' --tags 'DIR/tagged*.parquet' --output EDIR

The head is loaded with `gunshot_core.heads.load_head` (a trained artifact MDIR or an original .h5
head) and fed the stored uint8 frames exactly as `gunshot score` feeds it. EDIR receives:

    metrics.json      metrics at the chosen threshold (by default the head's own, the one `gunshot score`
                      and `gunshot batch` run with; with bootstrap 95% intervals) and at the threshold
                      Youden's J picks on this data (`youden_j`, for comparison)
    scores.parquet    one row per clip: video_id, start_time_seconds, tag, label, score, predicted
    per_label.csv     per AudioSet label: clips, errors, error rate, mean score (which negatives fool it)
    errors.csv        records that could not be evaluated (source, reason, message)
    roc.png, pr.png, score_histogram.png, training_curves.png (if MDIR/history.csv exists)
    report.md         all of the above, with a table comparable to the original project's
"""

import csv
import json
import logging
import os
import sys

import numpy as np

from gunshot_core import arguments, logs, startup
from gunshot_core.errors import GunshotError
from training import data

# The original project's reported results on 224 balanced evaluation clips (README of spotting_gunshots).
ORIGINAL_RESULTS = (
    {"model": "original 1-layer LSTM (reported)", "accuracy": 0.9107, "clips": 224, "threshold": 0.536},
    {"model": "original logistic regression (reported)", "accuracy": 0.7946, "clips": 224, "threshold": None},
)


def parse_args(argv):
    parser = arguments.ArgumentParser(
        "evaluate",
        description="Evaluate a gunshot head on subset TFRecords: metrics, bootstrap intervals, per-label "
        "errors, plots and a Markdown report.",
    )
    parser.add_argument("--model", required=True, help="head artifact directory MDIR or an original .h5 head")
    parser.add_argument("--data", required=True, help="glob of the subset TFRecords to evaluate on")
    parser.add_argument(
        "--tags",
        help="glob of the subset builder's tagged Parquet table(s) (default: the subset's tagged-*.parquet)",
    )
    parser.add_argument("--output", required=True, help="report directory EDIR")
    parser.add_argument(
        "--positive_tag",
        help=f"tag labelled 1 (default: the card's positive class; {data.POSITIVE_TAG!r} for .h5 heads)",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--target_recall",
        type=float,
        help="choose the highest threshold whose recall reaches this value (default: the head's own "
        "threshold, the one `gunshot score`/`batch` use; Youden's J on this data is reported beside it)",
    )
    choice.add_argument("--threshold", type=float, help="use this threshold instead of choosing one")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (%(default)s)")
    parser.add_argument("--name", help="model name in the report (default: the head id)")
    logs.add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.target_recall is not None and not 0.0 < args.target_recall <= 1.0:
        parser.error(f"--target_recall must be in (0, 1], got {args.target_recall}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
    return args


def score_clips(head, frames: list) -> np.ndarray:
    """Scores clips with a head, each fed exactly as `head.predict(clip)` would be.

    Clips are batched by length, so a variable-length head sees each clip's own frames.

    Args:
      head: gunshot_core.heads.Head.
      frames: list of [n_i, d] frames (uint8 VGGish [n_i, 128], float32 BirdNET [n_i, 1024]).
    Returns:
      float32 [len(frames)] scores.
    """
    scores = np.zeros(len(frames), np.float32)
    by_length = {}
    for i, f in enumerate(frames):
        by_length.setdefault(f.shape[0], []).append(i)
    for _, idx in sorted(by_length.items()):
        for start in range(0, len(idx), 1024):
            chunk = idx[start : start + 1024]
            scores[chunk] = np.asarray(
                head.predict(np.stack([frames[i] for i in chunk])), np.float32
            ).reshape(-1)
    return scores


# The rule of the default threshold: the head's own (card.json; 0.536 for an original .h5 head).
HEAD_RULE = "head (card threshold)"


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, target_recall: float | None
) -> tuple[float, str]:
    """The decision threshold and the rule that chose it.

    With `target_recall`: the highest ROC threshold whose recall (TPR) reaches it. Otherwise the
    threshold maximising Youden's J = TPR - FPR.
    """
    from sklearn.metrics import roc_curve

    # Every distinct score is a candidate (the default drops collinear points, which can skip the
    # highest threshold that reaches a target recall).
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # the first ROC threshold is +inf
    if target_recall is not None:
        reached = np.flatnonzero(tpr >= target_recall - 1e-12)
        return float(thresholds[reached[0]]), f"recall >= {target_recall}"
    return float(thresholds[int(np.argmax(tpr - fpr))]), "youden_j"


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall, F1, specificity, ROC-AUC, PR-AUC and the confusion matrix.

    Args:
      labels: int [n] of 0/1. scores: float [n]. threshold: score >= threshold predicts 1.
    Returns:
      dict; `confusion_matrix` is [[tn, fp], [fn, tp]]; AUCs are None if one class is absent.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    predicted = (scores >= threshold).astype(np.int64)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    cm = confusion_matrix(labels, predicted, labels=[0, 1])
    both = len(np.unique(labels)) == 2
    tn, fp = int(cm[0, 0]), int(cm[0, 1])
    return {
        "clips": int(len(labels)),
        "positives": int(labels.sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "confusion_matrix": cm.astype(int).tolist(),
    }


CI_METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "pr_auc")


def bootstrap_intervals(
    labels: np.ndarray, scores: np.ndarray, threshold: float, resamples: int, seed: int, level: float = 0.95
) -> dict:
    """Percentile bootstrap intervals of the metrics at a fixed threshold.

    Clips are resampled with replacement `resamples` times (numpy default_rng(seed)); a resample
    without both classes is skipped for the AUCs.

    Returns:
      {metric: [low, high]} (None where no resample defined the metric).
    """
    if resamples == 0 or len(labels) == 0:
        return {}
    rng = np.random.default_rng(seed)
    values = {m: [] for m in CI_METRICS}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        m = binary_metrics(labels[idx], scores[idx], threshold)
        for name in CI_METRICS:
            if m[name] is not None:
                values[name].append(m[name])
    alpha = (1.0 - level) / 2.0
    return {
        name: ([float(np.quantile(v, alpha)), float(np.quantile(v, 1.0 - alpha))] if v else None)
        for name, v in values.items()
    }


def per_label_breakdown(clips: data.LabelledClips, scores: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Errors per AudioSet label: for each (class of the clip, label) pair, clips and errors.

    For negatives an error is a false positive (the hard negatives that fool the head); for
    positives a false negative. Sorted by errors, then error rate, descending.
    """
    from gunshot_core.labels import ClassCatalog

    catalog = ClassCatalog.from_files()
    rows = {}
    for i, class_ids in enumerate(clips.class_ids):
        for c in class_ids:
            key = (int(clips.labels[i]), int(c))
            row = rows.setdefault(key, {"clips": 0, "errors": 0, "score_sum": 0.0})
            row["clips"] += 1
            row["errors"] += int(predicted[i] != clips.labels[i])
            row["score_sum"] += float(scores[i])
    out = []
    for (label, c), row in rows.items():
        try:
            name = catalog.name(c)
        except (KeyError, IndexError, ValueError):
            name = f"class {c}"
        out.append(
            {
                "clip_class": "positive" if label else "negative",
                "class_index": c,
                "class_name": name,
                "clips": row["clips"],
                "errors": row["errors"],
                "error_kind": "false_negative" if label else "false_positive",
                "error_rate": row["errors"] / row["clips"],
                "mean_score": row["score_sum"] / row["clips"],
            }
        )
    out.sort(key=lambda r: (-r["errors"], -r["error_rate"], r["clip_class"], r["class_index"]))
    return out


def _plots(
    out_dir: str,
    labels,
    scores,
    threshold: float,
    history_csv: str | None,
    title: str,
    positive: str = "gunshot",
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        written.append(name)

    if len(np.unique(labels)) == 2:
        fpr, tpr, thr = roc_curve(labels, scores)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(fpr, tpr, label="ROC")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        k = int(np.argmin(np.abs(np.clip(thr, 0, 1) - threshold)))
        ax.plot(fpr[k], tpr[k], "ro", label=f"threshold {threshold:.3f}")
        ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title=f"ROC - {title}")
        ax.legend(loc="lower right")
        save(fig, "roc.png")
        precision, recall, _ = precision_recall_curve(labels, scores)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(recall, precision)
        ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall - {title}", ylim=(0, 1.02))
        save(fig, "pr.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for label, name in ((0, f"not {positive}"), (1, positive)):
        ax.hist(
            scores[labels == label], bins=bins, alpha=0.6, label=f"{name} ({int((labels == label).sum())})"
        )
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="score", ylabel="clips", title=f"Scores per class - {title}")
    ax.legend()
    save(fig, "score_histogram.png")
    if history_csv and os.path.exists(history_csv):
        with open(history_csv) as f:
            rows = list(csv.DictReader(f))
        if rows:
            metrics = [m for m in ("loss", "accuracy") if m in rows[0]]
            fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
            epochs = [int(r["epoch"]) + 1 for r in rows]
            for ax, m in zip(axes[0], metrics, strict=True):
                ax.plot(epochs, [float(r[m]) for r in rows], label="train")
                validation = [_number(r.get(f"val_{m}")) for r in rows]
                if any(np.isfinite(v) for v in validation):  # "NA" when the run had no validation split
                    ax.plot(epochs, validation, label="validation")
                ax.set(xlabel="epoch", ylabel=m, title=f"Training {m}")
                ax.legend()
            save(fig, "training_curves.png")
    return written


def _mean_val_accuracy(history_csv: str | None) -> float | None:
    """Mean of the per-epoch validation accuracy in MDIR/history.csv (how the original reported)."""
    if not history_csv or not os.path.exists(history_csv):
        return None
    with open(history_csv) as f:
        values = [v for v in (_number(r.get("val_accuracy")) for r in csv.DictReader(f)) if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _number(text: str | None) -> float:
    """A history.csv cell as a float; NaN for "NA" (Keras CSVLogger, no validation split) or empty."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v, pct=True):
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:.4f}"


def _ci(ci, name, pct=True):
    v = (ci or {}).get(name)
    if not v:
        return "-"
    return f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]" if pct else f"[{v[0]:.4f}, {v[1]:.4f}]"


def write_report(out_dir: str, result: dict, per_label: list[dict], plots: list[str]) -> str:
    """Writes report.md (Markdown, PNGs embedded by relative path); returns its path."""
    chosen, ci, card = result["chosen"], result["confidence_intervals"], result.get("at_card_threshold")
    youden = result.get("youden_j")
    if card and abs(card["threshold"] - chosen["threshold"]) < 1e-12:
        card = None  # the chosen threshold is the card's: one row
    lines = [
        f"# Evaluation of `{result['model_name']}`",
        "",
        f"Data: `{result['data']}` - {chosen['clips']} clips ({chosen['positives']} {result['positive_tag']}), "
        f"{result['unusable_records']} unusable records (errors.csv).",
        f"Threshold {chosen['threshold']:.4f}: {result['threshold_rule']}"
        + (f"; the card's threshold is {card['threshold']:.4f}." if card else ".")
        + (
            f" Youden's J on this data would pick {youden['threshold']:.4f} (accuracy "
            f"{_fmt(youden['accuracy'])}, recall {_fmt(youden['recall'])}): tuned on the evaluated clips "
            "themselves, so optimistic; shown for comparison."
            if youden
            else ""
        ),
        "",
        "## Comparison with the original project",
        "",
        "| model | clips | threshold | accuracy | recall | precision | F1 | ROC-AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ORIGINAL_RESULTS:
        thr = f"{r['threshold']:.3f}" if r["threshold"] is not None else "-"
        lines.append(f"| {r['model']} | {r['clips']} | {thr} | {_fmt(r['accuracy'])} | - | - | - | - |")
    rows = [(result["threshold_rule"], chosen)] + ([("card threshold", card)] if card else [])
    rows += [("Youden's J on this data", youden)] if youden else []
    for what, m in rows:
        lines.append(
            f"| {result['model_name']} ({what}) | {m['clips']} | {m['threshold']:.3f} | {_fmt(m['accuracy'])} | "
            f"{_fmt(m['recall'])} | {_fmt(m['precision'])} | {_fmt(m['f1'])} | {_fmt(m['roc_auc'], False)} |"
        )
    mean_val = result.get("mean_validation_accuracy_over_epochs")
    if mean_val is not None:
        lines.append(
            f"| {result['model_name']} (mean validation accuracy over epochs, the original's measure) | "
            f"validation | 0.5 | {_fmt(mean_val)} | - | - | - | - |"
        )
    lines += [
        "",
        "The original figures are as reported (mean validation accuracy over epochs, threshold picked on "
        "the evaluation ROC); here the threshold rule is stated above and intervals are bootstrap 95 %.",
        "",
        f"## Metrics at threshold {chosen['threshold']:.4f} (95 % bootstrap intervals, "
        f"{result['bootstrap_resamples']} resamples)",
        "",
        "| metric | value | 95 % interval |",
        "|---|---|---|",
    ]
    for name in CI_METRICS:
        pct = name not in ("roc_auc", "pr_auc")
        lines.append(f"| {name} | {_fmt(chosen[name], pct)} | {_ci(ci, name, pct)} |")
    (tn, fp), (fn, tp) = chosen["confusion_matrix"]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        f"| | predicted negative | predicted {result['positive_tag']} |",
        "|---|---|---|",
        f"| negative (not {result['positive_tag']}) | {tn} | {fp} |",
        f"| {result['positive_tag']} | {fn} | {tp} |",
        "",
        "## Errors by AudioSet label",
        "",
        "Which labels of the misclassified clips (false positives: hard negatives that fool the head). "
        "Top 20; all rows in per_label.csv.",
        "",
        "| clip class | AudioSet label | clips | errors | error rate | mean score |",
        "|---|---|---|---|---|---|",
    ]
    for r in [r for r in per_label if r["errors"] > 0][:20]:
        lines.append(
            f"| {r['clip_class']} | {r['class_name']} | {r['clips']} | {r['errors']} ({r['error_kind']}) | "
            f"{100 * r['error_rate']:.1f} % | {r['mean_score']:.3f} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{name[:-4]}]({name})" for name in plots]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def evaluate(args) -> dict:
    """Runs the evaluation; writes EDIR; returns the metrics.json dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gunshot_core import heads

    args.tags = args.tags or data.find_tag_table(args.data)
    head = heads.load_head(args.model)
    tags = data.load_tag_table(args.tags)
    if args.positive_tag is None:
        args.positive_tag = head.card.classes[1] if head.card is not None else data.POSITIVE_TAG
    clips = data.load_clips(args.data, tags, positive_tag=args.positive_tag)
    if len(clips) == 0:
        raise ValueError(f"no usable clip in {args.data!r} ({len(clips.errors)} unusable records)")
    for name in sorted(clips.embedding_models - {head.embedding_model}):
        from gunshot_core.errors import EmbeddingModelMismatchError

        raise EmbeddingModelMismatchError(
            f"head {head.head_id!r} was trained on {head.embedding_model} frames but {args.data!r} holds "
            f"{name} frames: evaluate a head trained on {name} frames"
        )
    logging.info("scoring %d clips with %r", len(clips), head)
    scores = score_clips(head, clips.frames)
    labels = clips.labels
    two_classes = len(np.unique(labels)) == 2
    if args.threshold is not None:
        threshold, rule = float(args.threshold), "--threshold"
    elif args.target_recall is not None and two_classes:
        threshold, rule = choose_threshold(labels, scores, args.target_recall)
    else:
        threshold, rule = head.threshold, HEAD_RULE
    youden = None
    if two_classes:
        youden = binary_metrics(labels, scores, choose_threshold(labels, scores, None)[0])
    chosen = binary_metrics(labels, scores, threshold)
    intervals = bootstrap_intervals(labels, scores, threshold, args.bootstrap, args.seed)
    predicted = (scores >= threshold).astype(np.int64)
    os.makedirs(args.output, exist_ok=True)
    result = {
        "model": os.path.abspath(args.model),
        "model_name": args.name or head.head_id,
        "head_sha256": head.sha256,
        "data": args.data,
        "tags": args.tags,
        "positive_tag": args.positive_tag,
        "unusable_records": len(clips.errors),
        "threshold_rule": rule,
        "chosen": chosen,
        "confidence_intervals": intervals,
        "bootstrap_resamples": args.bootstrap,
        "bootstrap_seed": args.seed,
        "at_card_threshold": binary_metrics(labels, scores, head.threshold),
        "youden_j": youden,
        "original_reported": list(ORIGINAL_RESULTS),
    }
    table = pa.table(
        {
            "video_id": pa.array(clips.video_ids, pa.string()),
            "start_time_seconds": pa.array(clips.start_times, pa.float64()),
            "tag": pa.array(clips.tags, pa.string()),
            "class_ids": pa.array([list(c) for c in clips.class_ids], pa.list_(pa.int32())),
            "frames": pa.array([f.shape[0] for f in clips.frames], pa.int32()),
            "label": pa.array(labels, pa.int8()),
            "score": pa.array(scores, pa.float32()),
            "predicted": pa.array(predicted, pa.int8()),
        }
    )
    pq.write_table(table, os.path.join(args.output, "scores.parquet"))
    per_label = per_label_breakdown(clips, scores, predicted)
    with open(os.path.join(args.output, "per_label.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(per_label[0]) if per_label else ["class_index"])
        writer.writeheader()
        writer.writerows(per_label)
    with open(os.path.join(args.output, "errors.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "reason", "message"])
        writer.writerows(clips.errors)
    history = os.path.join(args.model, "history.csv") if os.path.isdir(args.model) else None
    result["mean_validation_accuracy_over_epochs"] = _mean_val_accuracy(history)
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    plots = _plots(args.output, labels, scores, threshold, history, result["model_name"], args.positive_tag)
    report = write_report(args.output, result, per_label, plots)
    logging.info(
        "accuracy %.4f recall %.4f at threshold %.4f (%s)%s; report %s",
        chosen["accuracy"],
        chosen["recall"],
        threshold,
        rule,
        ""
        if youden is None
        else f"; Youden's J on this data: threshold {youden['threshold']:.4f}, "
        f"accuracy {youden['accuracy']:.4f}, recall {youden['recall']:.4f}",
        report,
    )
    return result


def summary_line(result: dict) -> dict:
    """The one-line JSON summary: metrics at the chosen threshold (the head's own unless --threshold or
    --target_recall), its rule, and the same metrics at Youden's J threshold on this data."""
    keys = ("clips", "threshold", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
    out = {k: result["chosen"][k] for k in keys}
    out["threshold_rule"] = result["threshold_rule"]
    youden = result.get("youden_j")
    out["youden_j"] = None if youden is None else {k: youden[k] for k in keys[1:6]}
    return out


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = evaluate(args)
    except (FileNotFoundError, ValueError, GunshotError) as e:
        return arguments.fail("evaluate", e)
    print(json.dumps(summary_line(result)))
    return 0


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())  # a finished run ends without the interpreter's teardown
