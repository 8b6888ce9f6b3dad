"""What every chart shares (sweep charts and cost curves): one colour and marker per model family, and
atomic, byte-stable saving."""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import matplotlib
from matplotlib.figure import Figure

from membench.runners.tables import atomic_write_bytes

PARALLEL_FROM = 100  # trials: from this many, the charts are drawn by two processes (see draw_in_parallel)

# the sweep charts' style; fixed hash salt: stable SVG ids; fonttype none: text stays text (smaller files,
# searchable labels)
RC = {"svg.hashsalt": "membench", "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10,
      "axes.grid": True, "grid.alpha": 0.3}
MARKERS = "os^vDP*h<>pd"  # no "X": it marks where a family stopped


def family_styles(names) -> dict[str, dict]:
    """Colour and marker per family, fixed by its index in `list_models()` (others follow alphabetically).

    The palette is tab20's dark shades then its light ones, so the first ten families get ten distinct hues.
    """
    from membench.models import list_models

    registered = list_models()
    wanted = set(names)
    everyone = registered + sorted(wanted - set(registered))
    tab20 = matplotlib.colormaps["tab20"].colors
    palette = list(tab20[0::2]) + list(tab20[1::2])
    return {
        name: {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]}
        for i, name in enumerate(everyone) if name in wanted
    }


def line_style(style: dict, markersize: float, linewidth: float) -> dict:
    """Keyword arguments of `ax.plot` for a family's line: its colour and marker (one of `family_styles`).

        >>> line_style({"color": "C0", "marker": "o"}, 5, 1.5)
        {'color': 'C0', 'marker': 'o', 'markersize': 5, 'linewidth': 1.5}
    """
    return {"color": style["color"], "marker": style["marker"], "markersize": markersize, "linewidth": linewidth}


def count_label(value: float, _position=None) -> str:
    """Tick label for a count: 50000 -> '50k', 1250000 -> '1.25M', 3e9 -> '3B', 512 -> '512'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def panel_grid(n: int, title: str, extra_width: float = 1.6, panel: tuple[float, float] = (4.0, 3.0)
               ) -> tuple[Figure, list]:
    """A figure with `n` panels of `panel` inches in rows of at most 3 (unused panels hidden), room on the
    right for a legend, and `title` above."""
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(panel[0] * cols + extra_width, panel[1] * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def save_figure(fig: Figure, out_dir: Path, stem: str, dpi: int = 130, **savefig) -> list[Path]:
    """Write `stem`.png and `stem`.svg atomically; the SVG carries no date, so redrawing the same figure
    gives the same bytes (its ids come from a fixed `svg.hashsalt`). Extra keyword arguments go to `savefig`."""
    paths = []
    for fmt, kwargs in (("png", {"dpi": dpi}), ("svg", {"metadata": {"Date": None}})):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "membench"}):
            fig.savefig(buffer, format=fmt, **kwargs, **savefig)
        path = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
        fig.set_layout_engine("none")  # keep the layout the first save computed: the slow part of saving
    return paths


Job = tuple[Callable[..., list[Path]], tuple]  # a module-level drawing function and its arguments


def draw_in_parallel(jobs: list[Job], parallel: bool = True) -> list[list[Path]]:
    """Run drawing `jobs`, each returning the files it wrote; their results in job order, the bytes the same
    either way. With `parallel` and a second core, one spawned process draws every second job while this one
    draws the others: charts are independent, and drawing is most of what publishing a sweep takes (the smoke
    preset's charts: 17 s in one process, about 11 s in two; a process takes ~2.5 s to start, so callers ask
    for it only from PARALLEL_FROM trials)."""
    if not parallel or len(jobs) < 2 or (os.cpu_count() or 1) < 2:
        return [draw(*args) for draw, args in jobs]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as helper:
        theirs = {i: helper.submit(draw, *args) for i, (draw, args) in enumerate(jobs) if i % 2}
        mine = {i: draw(*args) for i, (draw, args) in enumerate(jobs) if not i % 2}
        return [mine[i] if i in mine else theirs[i].result() for i in range(len(jobs))]
