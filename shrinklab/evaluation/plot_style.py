"""Shared look of the report figures: the colour of each kind of estimator (the deployed
model red, its members light red, the learned peer purple, oracles grey, classical
estimators blue), horizontal bars with error bars, legends outside the data, and the
largest figure size a report page shows whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from shrinklab.evaluation.reporting import save_figure


def finish(fig: Figure, path: str | Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


DEPLOYED_NAMES = ("learned", "deployed", "ML (final)")
"""Names under which the deployed model appears in tables; its bars are drawn in
:data:`DEPLOYED_COLOUR`."""
DEPLOYED_COLOUR = "#d62728"
REFERENCE_NAMES = ("oracle", "fsopt", "oracle w*(Σ) per replication")
REFERENCE_COLOUR = "#4d4d4d"
PEER_NAMES = ("rienet_peer", "RIEnet peer")
"""The learned peer (RIEnet) in the scenario grid and the backtest: drawn in :data:`PEER_COLOUR`."""
PEER_COLOUR = "#7b3294"
MEMBER_COLOUR = "#f2a0a0"
"""Members ``name[i]`` of a highlighted ensemble ``name``: a light shade of its red."""
OTHER_COLOUR = "#9db4cc"
ESTIMATOR_WORDS = {"ledoit_wolf": "Ledoit–Wolf", "oas": "OAS", "qis": "QIS"}
"""Estimator names in titles and axis labels."""
SEABORN_STYLE = {"axes.spines.top": False, "axes.spines.right": False}
MAX_FIGSIZE = (16.0, 16.0)
"""No figure is wider or taller than this (inches): a report page shows it whole."""


def is_yardstick(name: str) -> bool:
    return "oracle" in name.lower() or "hindsight" in name.lower()


def estimator_colours(names: Sequence[str], highlight: Sequence[str] = DEPLOYED_NAMES) -> dict:
    """Colour per estimator name: the deployed model (``highlight``) red, its members
    (``name[i]``) light red, the learned peer purple, the oracles dark grey and every other (classical) estimator a shade
    of blue (seaborn's ``crest`` palette), so that the one red bar stands out."""
    names = [str(n) for n in dict.fromkeys(names)]
    rest = [n for n in names if n not in highlight and n not in PEER_NAMES]
    rest = [n for n in rest if not any(n.startswith(f"{h}[") for h in highlight)]
    rest = [n for n in rest if n not in REFERENCE_NAMES and not is_yardstick(n)]
    blues = dict(zip(rest, sns.color_palette("crest", max(len(rest), 1)).as_hex(), strict=False))
    out = {}
    for n in names:
        if n in highlight:
            out[n] = DEPLOYED_COLOUR
        elif any(n.startswith(f"{h}[") for h in highlight):  # a member of a highlighted ensemble
            out[n] = MEMBER_COLOUR
        elif n in PEER_NAMES:
            out[n] = PEER_COLOUR
        elif n in blues:
            out[n] = blues[n]
        else:  # oracles and yardsticks
            out[n] = REFERENCE_COLOUR if n in REFERENCE_NAMES else "#969696"
    return out


def legend_outside(ax: Any, **kw: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, **kw)


def hbars(ax, names, values, colours, err=None) -> None:
    """Horizontal seaborn bars, one per name (top to bottom), with error bars ``err``
    (±SE, or a (2, n) array of lower/upper lengths)."""
    sns.barplot(
        x=np.asarray(values, dtype=float), y=list(names), hue=list(names), order=list(names),
        palette=colours, errorbar=None, legend=False, orient="h", saturation=1, ax=ax,
    )  # fmt: skip
    if err is not None:
        ax.errorbar(
            np.asarray(values, dtype=float), np.arange(len(names)), xerr=err,
            fmt="none", ecolor="black", elinewidth=0.8, capsize=2,
        )  # fmt: skip
