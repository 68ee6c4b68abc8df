"""Line plots of benchmark results, drawn with matplotlib. Each PNG has its data beside it as JSON, so a plot can
be redrawn (or restyled) without running its benchmark again:

    pip install -e ".[bench]"
    python benchmarks/plotting.py benchmarks/analytic_fd.json     # redraws benchmarks/analytic_fd.png
"""

import argparse
import json
import math
from pathlib import Path

# One colour per series name across every plot, so that a sampler looks the same in the FD and the bound plots.
COLOURS = {
    "ddpm": "tab:blue",
    "DDPM, beta~": "tab:blue",
    "ddim": "tab:red",
    "DDIM": "tab:red",
    "diffusers-ddim": "tab:purple",
    "Analytic-DDIM": "tab:purple",
    "dpm++": "tab:green",
    "learned variance": "tab:green",
    "DDPM, beta": "tab:gray",
    "Analytic-DDPM": "tab:orange",
    "Analytic-DDPM, optimal": "tab:brown",
}


def line_plot(
    path: Path,
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    reference: tuple[float, str] | None = None,
    log_x: bool = True,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
) -> None:
    """Write `path` (PNG) and its data `path.with_suffix('.json')`: one line per series (name -> [(x, y), ...]),
    a dashed horizontal `reference` (value, label); a series with points outside `y_range` lists them in its
    label."""
    spec = {
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "series": {name: sorted(map(list, points)) for name, points in series.items() if points},
        "reference": None if reference is None else list(reference),
        "log_x": log_x,
        "log_y": log_y,
        "y_range": None if y_range is None else list(y_range),
    }
    if not spec["series"]:
        return
    path = Path(path)
    path.with_suffix(".json").write_text(json.dumps(spec, indent=1) + "\n")
    draw(spec, path)


def scatter_plot(
    path: Path,
    points: dict[str, tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    highlight: list[str] = (),
    log_x: bool = False,
    styles: dict[str, dict] | None = None,
    legends: list[tuple[str, list[tuple[str, dict]]]] = (),
) -> None:
    """Write `path` (PNG) and its data as JSON: one point per name (name -> (x, y)), the `highlight`ed names drawn
    larger. Without `styles` every point is labelled with its name; with them each point takes its style (matplotlib
    `color`, `marker`, `fillstyle`; `label`: whether to write its name beside it, as every highlighted one is), and
    `legends` explain the styles: (title, [(entry, style)]) per legend."""
    spec = {
        "kind": "scatter",
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "points": {name: list(point) for name, point in points.items()},
        "highlight": list(highlight),
        "log_x": log_x,
        **(
            {"styles": styles, "legends": [[title, [list(e) for e in entries]] for title, entries in legends]}
            if styles
            else {}
        ),
    }
    if not points:
        return
    path = Path(path)
    path.with_suffix(".json").write_text(json.dumps(spec, indent=1) + "\n")
    draw(spec, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def draw_scatter(spec: dict, path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8.4, 5.6), dpi=100)
    styles = spec.get("styles")
    for name, (x, y) in spec["points"].items():
        highlighted = name in spec["highlight"]
        if styles is None:
            axes.scatter(x, y, s=48 if highlighted else 18, color="tab:red" if highlighted else "tab:blue", zorder=3)
        else:
            style = {key: value for key, value in styles[name].items() if key != "label"}
            axes.plot(
                x, y, linestyle="none", markersize=10 if highlighted else 7, markeredgewidth=1.3, zorder=3, **style
            )
        if styles is None or highlighted or styles[name].get("label"):
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    corners = ("upper right", "center right", "lower right")
    for index, (title, entries) in enumerate(spec.get("legends", [])):
        handles = [
            axes.plot([], [], linestyle="none", markersize=7, markeredgewidth=1.3, label=entry, **style)[0]
            for entry, style in entries
        ]
        corner = corners[index % len(corners)]
        axes.add_artist(axes.legend(handles=handles, title=title, loc=corner, fontsize=7, title_fontsize=8))
    xs = [x for x, _ in spec["points"].values()]
    if spec["log_x"] and max(xs) > 5 * min(xs):  # a log axis only where the points span a factor of five
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))  # 3, 5, 10, 20, ...
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.margins(x=0.2)
    axes.set_ylim(bottom=0)
    axes.set_xlabel(spec["x_label"])
    axes.set_ylabel(spec["y_label"])
    axes.set_title(spec["title"], fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def draw(spec: dict, path: Path) -> None:
    """Draw the plot that `spec` (as `line_plot` or `scatter_plot` writes it) describes into the PNG `path`."""
    if spec.get("kind") == "scatter":
        return draw_scatter(spec, path)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.6, 4.4), dpi=100)
    low, high = spec.get("y_range") or (-math.inf, math.inf)
    notes = []
    for name, points in spec["series"].items():
        xs, ys = zip(*points, strict=True)
        off_scale = [f"{y:.3g} at {x:g}" for x, y in points if not low <= y <= high]
        if off_scale:
            notes.append(f"{name}, off scale: {', '.join(off_scale)}")
        label = name + (" (off scale)" if off_scale else "")
        axes.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, label=label, color=COLOURS.get(name))
    if notes:
        axes.text(0.98, 0.97, "\n".join(notes), transform=axes.transAxes, ha="right", va="top", fontsize=8)
    if spec["reference"] is not None:
        value, label = spec["reference"]
        axes.axhline(value, linestyle="--", linewidth=1, color="0.45", label=label)
    xs = sorted({x for points in spec["series"].values() for x, _ in points})
    if spec["log_x"]:
        axes.set_xscale("log")
        axes.set_xticks(xs)  # the measured step counts, not powers of ten
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    if spec["log_y"]:
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    if spec.get("y_range"):
        axes.set_ylim(*spec["y_range"])
    elif not spec["log_y"]:
        lowest = min(y for points in spec["series"].values() for _, y in points)
        axes.set_ylim(bottom=0 if lowest > 0 else None)
    axes.set_xlabel(spec["x_label"])
    axes.set_ylabel(spec["y_label"])
    axes.set_title(spec["title"], fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description="Redraw benchmark plots from their JSON data.")
    parser.add_argument("data", nargs="+", type=Path, help="JSON files written beside the plots")
    for data in parser.parse_args().data:
        draw(json.loads(data.read_text()), data.with_suffix(".png"))
        print(f"wrote {data.with_suffix('.png')}")


if __name__ == "__main__":
    main()
