"""Training plots (loss curves, gradient norms): PNG files drawn with matplotlib's Agg canvas.

A module of its own so that the optimisers (``GradNormMonitor.plot``) and the Trainer both use it without
importing each other."""


def line_plot(path, series, title, xlabel, ylabel, hline=None, log=False):
    """Save ``series`` ({label: (xs, ys)}) as a line chart PNG at ``path`` (optionally a dashed ``hline``
    and a log y axis)."""
    # The Agg canvas directly, not pyplot: no global figure state, no GUI backend, safe in worker processes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        x, y = list(x), list(y)
        ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, lw=1, label=label)
    if hline is not None:
        ax.axhline(hline, color="red", ls="--", lw=1, label=f"clip at {hline:.3g}")
    if log and any(v is not None and v > 0 for _, ys in series.values() for v in ys):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1 or hline is not None:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
