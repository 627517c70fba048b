"""``accelerate launch -m inbetween.evaluate ...``: the same as ``inbetween evaluate ...`` (see evaluation.py)."""

if __name__ == "__main__":
    import sys

    from .cli import main

    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
