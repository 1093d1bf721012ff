"""The calibration's picture: system accuracy against offload fraction for each escalation criterion, the
edge-only and cloud-only accuracies, and the chosen point."""

from __future__ import annotations

from pathlib import Path


def plot_frontier(cal, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f in cal.frontiers:
        ax.step(f.offload * 100, f.accuracy * 100, where="post", label=f"cascade on {f.criterion}")
    ax.axhline(cal.edge_accuracy * 100, color="grey", ls=":", label=f"edge only {cal.edge_accuracy:.2%}")
    ax.axhline(cal.cloud_accuracy * 100, color="black", ls="--", label=f"cloud only {cal.cloud_accuracy:.2%}")
    from lepton_host.serving.cascade_criteria import CRITERIA

    c = cal.chosen
    op = ">" if CRITERIA[c.criterion].escalate_above else "<"
    ax.plot([c.offload_fraction * 100], [c.cascade_accuracy * 100], "r*", ms=14,
            label=f"chosen: {c.criterion} {op} {c.threshold:.4g} ({c.offload_fraction:.1%} offloaded, "
                  f"{c.cascade_accuracy:.2%})")
    ax.set_xlabel("samples answered by the cloud (%)")
    ax.set_ylabel("system accuracy (%)")
    lo = min(cal.edge_accuracy, min(float(f.accuracy.min()) for f in cal.frontiers)) * 100
    ax.set_ylim(max(0.0, lo - 1.0), 100.0)
    # The curve's interesting part is where it climbs: show up to half again the offload at which every
    # criterion has reached its best accuracy.
    import numpy as np

    reach = max(float(f.offload[int(np.argmax(f.accuracy))]) for f in cal.frontiers)
    ax.set_xlim(0, min(100.0, max(20.0, 150 * max(reach, c.offload_fraction))))
    ax.set_title(f"{cal.model}: accuracy against offload on {cal.n} held-out samples")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
