"""Learning curves of the examples' full runs (bench/RESULTS.md, issue 14) from what they printed: one line per
epoch (``epoch N: ... <metric> V``; an ``--ensemble`` run prints each member's epochs in turn, or with ``--jobs``
interleaved, each line tagged ``[seed S]``), drawn as the dev metric per epoch, one line per member, with the
target as a dashed line.

    python -m bench.curves run.log --metric dev_accuracy --target 0.95 --title "EWT tagger" --out bench/x.png
"""
import argparse
import re

from autobatch.plots import line_plot


def curves(lines, metric):
    """{member: [metric per epoch]} from an example's printed lines. Untagged lines are members 1, 2, ... in turn
    (a member starts at epoch 1); lines tagged ``[seed S]`` belong to the member ``"seed S"``."""
    epoch = re.compile(rf"^(?:\[seed (-?\d+)\] )?epoch (\d+): .*; {re.escape(metric)} ([0-9.]+)")
    out = {}
    for line in lines:
        m = epoch.match(line.strip())
        if not m:
            continue
        seed, n, value = m.groups()
        if seed is not None:
            out.setdefault(f"seed {seed}", []).append(float(value))
            continue
        if int(n) == 1:
            out[len(out) + 1] = []
        out[len(out)].append(float(value))
    return out


def main(argv=None):
    """Draw the curves of one log; returns them."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--target", type=float)
    ap.add_argument("--title", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.log) as f:
        found = curves(f, args.metric)
    label = {k: (args.metric if len(found) == 1 else k if isinstance(k, str) else f"member {k}") for k in found}
    series = {label[k]: (range(1, len(v) + 1), v) for k, v in found.items()}
    if args.target is not None:
        longest = max(len(v) for v in found.values())
        series[f"target {args.target:g}"] = ([1, longest], [args.target, args.target])
    line_plot(args.out, series, args.title, "epoch", args.metric.replace("_", " "))
    return found


if __name__ == "__main__":
    main()
