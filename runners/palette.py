"""One colour and marker per model family, the same in every chart (sweep charts and cost curves)."""

from __future__ import annotations

import matplotlib

MARKERS = "os^vDP*h<>pd"  # no "X": it marks where a family stopped


def family_styles(names) -> dict[str, dict]:
    """Colour and marker per family, fixed by its index in `list_models()` (others follow alphabetically).

    The palette is tab20's dark shades then its light ones, so the first ten families get ten distinct hues.
    """
    from models import list_models

    registered = list_models()
    wanted = set(names)
    everyone = registered + sorted(wanted - set(registered))
    tab20 = matplotlib.colormaps["tab20"].colors
    palette = list(tab20[0::2]) + list(tab20[1::2])
    return {
        name: {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]}
        for i, name in enumerate(everyone) if name in wanted
    }
