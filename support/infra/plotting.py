"""One figure style for the whole book, and one colour per method.

Every chapter calls :func:`use_book_style` once and takes colours from :data:`METHOD_COLORS`,
so MAP, Euclidean and Riemannian look the same in every figure (as in the paper's Fig. 1:
MAP, Euclidean and Riemannian samples in three fixed colours, target in blue).
"""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

METHOD_COLORS: dict[str, str] = {
    "target": "#3b75af",      # blue: samples of p_* (paper's Fig. 9-11)
    "map": "#7b3294",         # purple: the trained (MAP) generator theta*
    "euclidean": "#d7301f",   # red: theta* + v
    "riemannian": "#1a9850",  # green: Exp_{theta*}(v), the geodesic sample
    "train": "#111111",       # black: training points
    "base": "#9e9e9e",        # grey: base samples x0 ~ p0
    "closed_form": "#e08214", # orange: closed-form optimal field (oracle)
    "inertial": "#e7298a",    # magenta: inertial empirical diffusion (Lyu et al., 2025)
    "kde": "#8c6d31",         # brown: Gaussian KDE of the training points
}

METHOD_LABELS: dict[str, str] = {
    "target": "target $p_*$",
    "map": "MAP $\\theta^*$",
    "euclidean": "Euclidean LA",
    "riemannian": "Riemannian LA",
    "train": "training points",
    "base": "base $p_0$",
    "closed_form": "closed-form $u^*$",
    "inertial": "inertial diffusion",
    "kde": "KDE of training points",
}

SEQUENTIAL_CMAP = "rocket"
DIVERGING_CMAP = "vlag"


def use_book_style() -> None:
    """Apply the book's seaborn theme (call once per chapter, before plotting)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=list(METHOD_COLORS.values()))
    mpl.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titlesize": "medium",
            "figure.constrained_layout.use": True,
        }
    )


def method_color(method: str) -> str:
    """Colour of ``method`` (one of :data:`METHOD_COLORS`), with a clear error otherwise."""
    try:
        return METHOD_COLORS[method]
    except KeyError:
        raise KeyError(f"unknown method {method!r}; known: {', '.join(METHOD_COLORS)}") from None


def show_image(ax, image, frame: str | None = None, title: str | None = None) -> None:
    """Draw one image [3, H, W] (colour) or [1, H, W] (grey) in [-1, 1] on ``ax`` without ticks, optionally
    framed in ``frame`` (a colour)."""
    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)
    if title:
        ax.set_title(title, fontsize="small")
