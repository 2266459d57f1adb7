"""Runs one fastText training in a fresh process: `python -m mixforge.classify._fasttext_worker ARGS.json`.

fasttext-numpy2 0.10.4 keeps state between trainings in one process: a second
`train_supervised` in the same process fails at random with "Encountered NaN" (the first one in a
process never does, and is reproducible with thread=1). Training in a child process avoids that,
and a crashing training cannot take the flow's process down with it.
"""

from __future__ import annotations

import json
import sys


def main(args_path: str) -> int:
    import fasttext

    with open(args_path) as f:
        args = json.load(f)
    try:
        model = fasttext.train_supervised(input=args["input"], verbose=0, **args["params"])
    except RuntimeError as e:
        print(f"fastText training failed: {e}", file=sys.stderr)
        return 3
    model.save_model(args["output"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
