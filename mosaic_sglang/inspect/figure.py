"""One PNG from a `VideoTimeline`: attended frames per question and layer, cluster sizes, residency."""

from __future__ import annotations

from pathlib import Path

import torch

from .timeline import VideoTimeline

__all__ = ["attended_fraction", "render"]

MAX_QUESTIONS = 4


def attended_fraction(timeline: VideoTimeline, attended: dict[int, torch.Tensor]) -> torch.Tensor:
    """``[num_layers, frames] float``: share of each frame's tokens in a question's attended set."""
    ids = timeline.frame_ids
    frames = int(ids.max()) + 1 if (ids >= 0).any() else 0
    per_frame = torch.bincount(ids[ids >= 0], minlength=frames).clamp(min=1).to(torch.float32)
    out = torch.zeros(timeline.num_layers, frames)
    for layer, positions in attended.items():
        positions = positions[positions < ids.numel()]
        hit = ids[positions]
        out[layer] = torch.bincount(hit[hit >= 0], minlength=frames).to(torch.float32) / per_frame
    return out


def _residency(axis, timeline: VideoTimeline) -> None:
    ids = timeline.frame_ids
    visual = ids >= 0
    frames = int(ids.max()) + 1 if visual.any() else 0
    total = torch.bincount(ids[visual], minlength=frames).to(torch.float32)
    host = torch.bincount(ids[visual & timeline.on_host], minlength=frames).to(torch.float32)
    x = torch.arange(frames)
    axis.bar(x, (total - host).tolist(), color="tab:blue", label="device pool")
    axis.bar(x, host.tolist(), bottom=(total - host).tolist(), color="tab:orange", label="host tier")
    axis.set_xlabel("frame (temporal group)")
    axis.set_ylabel("tokens")
    axis.set_title("where each frame's KV lives (offloaded during the dump = host)")
    axis.legend(loc="upper right", fontsize=8)


def _clusters(axis, timeline: VideoTimeline) -> None:
    frames = [s.frames for s in timeline.steps]
    axis.plot(frames, [s.clusters for s in timeline.steps], "o-", color="tab:green", label="clusters")
    axis.set_xlabel("frames indexed")
    axis.set_ylabel("clusters", color="tab:green")
    twin = axis.twinx()
    median = [float(s.sizes.float().median()) if s.sizes.numel() else 0.0 for s in timeline.steps]
    largest = [int(s.sizes.max()) if s.sizes.numel() else 0 for s in timeline.steps]
    twin.plot(frames, median, "s--", color="tab:purple", label="median size")
    twin.plot(frames, largest, "^:", color="tab:red", label="largest size")
    twin.set_ylabel("tokens per cluster")
    twin.legend(loc="upper left", fontsize=8)
    axis.set_title("cluster index as the video arrived (after each append and its deferred splits)")


def render(timeline: VideoTimeline, out_path, *, dpi: int = 100) -> Path:
    """Draw ``timeline`` into ``out_path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    questions = timeline.questions[-MAX_QUESTIONS:]
    rows = len(questions) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.1 * len(questions) + 6.0), squeeze=False,
                             gridspec_kw={"height_ratios": [1.0] * len(questions) + [1.6, 1.6]})
    for axis, question in zip(axes[:, 0], questions):
        share = attended_fraction(timeline, question.attended)
        image = axis.imshow(share.numpy(), aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        axis.set_yticks(range(timeline.num_layers))
        axis.set_ylabel("layer")
        axis.set_xlabel("frame (temporal group)", fontsize=8)
        axis.set_title(f"question {question.rid[:12]}: share of each frame's tokens attended (context "
                       f"{question.seq_len})", fontsize=9)
        fig.colorbar(image, ax=axis, fraction=0.02, pad=0.01)
    _clusters(axes[-2, 0], timeline)
    _residency(axes[-1, 0], timeline)
    from matplotlib.ticker import MaxNLocator

    for axis in axes[:, 0]:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Mosaic: video {timeline.video}, {timeline.frame_ids.numel()} indexed positions", fontsize=11)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
