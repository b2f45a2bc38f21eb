"""Learning curves: normalized score vs updates, one figure per dataset, one line per algorithm with a ±std band.

matplotlib with the Agg backend (no display needed); figures are written as PNG bytes so the HTML page can embed
them and the Markdown page can link them.
"""
from __future__ import annotations

import io
import logging

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

log = logging.getLogger(__name__)


def curve_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=0) and seed count of the score per (dataset, algorithm, step) from a ``load_curves`` table."""
    if curves.empty:
        return pd.DataFrame(columns=["dataset_id", "algo", "step", "mean", "std", "seeds"])
    grouped = curves.groupby(["dataset_id", "algo", "step"])["score"]
    stats = grouped.agg(mean="mean", seeds="count").reset_index()
    stats["std"] = grouped.std(ddof=0).to_numpy()
    return stats


def plot_dataset(stats: pd.DataFrame, dataset_id: str, algos: tuple[str, ...] = (), score: str = "normalized") -> bytes:
    """PNG of one dataset's learning curves (``stats`` from ``curve_stats``, possibly for many datasets)."""
    data = stats[stats["dataset_id"] == dataset_id]
    if data.empty:
        raise ValueError(f"no evaluation rows for {dataset_id}; nothing to plot")
    order = [a for a in algos if a in set(data["algo"])] + sorted(set(data["algo"]) - set(algos))
    palette = plt.get_cmap("tab10").colors
    colors = {algo: palette[i % len(palette)] for i, algo in enumerate(list(algos) + [a for a in order if a not in algos])}
    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
    try:
        for algo in order:
            line = data[data["algo"] == algo].sort_values("step")
            seeds = int(line["seeds"].max())
            ax.plot(line["step"], line["mean"], color=colors[algo], marker="o" if len(line) < 20 else None,
                    markersize=3, label=f"{algo} ({seeds} seed{'s' if seeds > 1 else ''})")  # same color in every plot
            ax.fill_between(line["step"], line["mean"] - line["std"], line["mean"] + line["std"],
                            color=colors[algo], alpha=0.2, linewidth=0)
        ax.set_title(dataset_id)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score" if score == "normalized" else "return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def plot_curves(curves: pd.DataFrame, algos: tuple[str, ...] = (), score: str = "normalized") -> dict[str, bytes]:
    """PNG bytes per dataset id for every dataset with at least one evaluation row."""
    stats = curve_stats(curves)
    return {dataset_id: plot_dataset(stats, dataset_id, algos, score) for dataset_id in sorted(set(stats["dataset_id"]))}


__all__ = ["curve_stats", "plot_curves", "plot_dataset"]
