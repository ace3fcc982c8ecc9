"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import datetime
import pathlib
import platform

import keras

BENCHMARKS_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "| date | benchmark | setup | toolkit | baseline | ratio | notes |"


def machine() -> str:
    """A short description of where this ran."""
    import os

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, keras {keras.__version__}, "
            f"backend {keras.backend.backend()}")


def require_full_fashion_mnist() -> None:
    """Exit unless ``load("fashion_mnist")`` reads the full data set: without Debian's or Keras'
    files it falls back to the embedded 5,000-image subset, whose numbers are not comparable."""
    from kertransfer.data.fashion_mnist import find_folder

    if find_folder(None) is None:
        raise SystemExit(
            "This benchmark needs the full Fashion-MNIST (70,000 images); only the embedded "
            "subset was found. Install Debian's dataset-fashion-mnist or put the four IDX "
            "files in Keras' dataset cache (docs/data.md).")


def append_row(benchmark: str, setup: str, toolkit: str, baseline: str, ratio: float | None,
               notes: str = "") -> None:
    """Append one row to the table in docs/benchmarks.md (creating the table if needed)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if HEADER not in text:
        text = text.rstrip() + "\n\n" + HEADER + "\n|---|---|---|---|---|---|---|\n"
    date = datetime.date.today().isoformat()
    ratio_text = "-" if ratio is None else f"{ratio:.3f}"
    row = f"| {date} | {benchmark} | {setup} | {toolkit} | {baseline} | {ratio_text} | {notes} |"
    lines = text.rstrip("\n").split("\n")
    # Insert after the last row of the table that starts at HEADER.
    start = lines.index(HEADER)
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, row)
    BENCHMARKS_MD.write_text("\n".join(lines) + "\n")


def run_seeds(name: str, run, seeds, key: dict, results_path=None) -> dict:
    """Run ``run(seed, tmp)`` for each seed, keeping results in a file so a rerun continues.

    ``key`` (the settings) is stored beside the results; a file made with other
    settings is ignored (settings added to the script since, absent from the
    file's key, do not count). Returns ``{str(seed): {arm: value}}``.
    """
    import json
    import tempfile
    import time

    path = pathlib.Path(results_path or pathlib.Path(tempfile.gettempdir())
                        / f"kertransfer_{name}.json")
    results = {}
    if path.exists():
        saved = json.loads(path.read_text())
        old = saved.get("key") or {}
        if old and all(key.get(k) == v for k, v in old.items()):
            results = saved["results"]
            print(f"Continuing from {path}")
    with tempfile.TemporaryDirectory(prefix="kt-bench-") as tmp:
        for seed in seeds:
            if str(seed) in results:
                continue
            t0 = time.perf_counter()
            results[str(seed)] = run(seed, tmp)
            keras.backend.clear_session()
            shown = ", ".join(f"{k} {v:.3f}" for k, v in results[str(seed)].items())
            print(f"[seed {seed}] {shown} ({time.perf_counter() - t0:.0f}s)", flush=True)
            path.write_text(json.dumps({"key": key, "results": results}, indent=1))
    return results


def summarize(results: dict, seeds) -> tuple[str, dict]:
    """A table of mean, sd and per-seed values of each arm, and ``{arm: (mean, sd)}``."""
    import statistics

    names = list(dict.fromkeys(k for s in seeds for k in results.get(str(s), {})))
    stats, lines = {}, [f"{'arm':<34} {'mean':>6} {'sd':>6}   per seed", "-" * 70]
    for name in names:
        vals = [results[str(s)][name] for s in seeds if name in results.get(str(s), {})]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        stats[name] = (statistics.mean(vals), sd)
        lines.append(f"{name:<34} {stats[name][0]:>6.3f} {sd:>6.3f}   "
                     + " ".join(f"{v:.3f}" for v in vals))
    return "\n".join(lines), stats


def report(title: str, setup: str, key: dict, results: dict, seeds, verdict, start: float,
           record: bool = True, skip=lambda name: False, measure: str = "Test accuracy") -> dict:
    """Print the per-arm table and the verdict, and append the row unless ``record`` is off.

    ``verdict(stats)`` returns ``(line, toolkit arm, baseline arm, ratio)``;
    arms for which ``skip(name)`` holds stay out of the row's list.
    """
    import time

    table, stats = summarize(results, seeds)
    line, toolkit, baseline, ratio = verdict(stats)
    print(f"\n{measure}, {len(seeds)} seed(s) ({time.perf_counter() - start:.0f}s this "
          f"run)\n{table}\n{line}")
    if record:
        cells = "; ".join(f"{n} {m:.3f} ± {sd:.3f}" for n, (m, sd) in stats.items()
                          if not skip(n))
        settings = ", ".join(f"{k}={v}" for k, v in key.items() if k != "experiment")
        append_row(title, f"{machine()}; {setup}; seeds {list(seeds)}; {settings}",
                   f"{toolkit} {stats[toolkit][0]:.3f} ± {stats[toolkit][1]:.3f}",
                   f"{baseline} {stats[baseline][0]:.3f} ± {stats[baseline][1]:.3f}",
                   ratio, f"{line}; all: {cells}")
    return stats


def experiments_main(make_parser, argv, experiments: dict, name: str, setup: str, verdict,
                     skip=lambda arm: False, measure: str = "test accuracy") -> int:
    """The main of a script of seeded experiments: one, or ``all`` in turn.

    ``make_parser()`` gives the script's parser, with an ``experiment``
    positional; ``--results`` and ``--no-record`` are added here.
    ``experiments[name](seed, tmp, args)`` runs one seed; ``verdict(experiment,
    stats)`` gives the row (see `report`). ``setup`` describes the setting, or
    maps each experiment to its description; a description may be a function of
    the parsed arguments.
    """
    import sys
    import time

    parser = make_parser()
    parser.add_argument("--results", default=None, help="per-seed results file (resumable)")
    parser.add_argument("--no-record", action="store_true", help="do not append the row")
    args = parser.parse_args(argv)
    if args.experiment == "all":
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "all"]
        if args.results:
            parser.error("--results names one experiment's file; leave it out with 'all'")
        return max(experiments_main(make_parser, [exp, *rest], experiments, name, setup,
                                    verdict, skip, measure) for exp in experiments)
    if isinstance(setup, dict):  # one description per experiment
        setup = setup[args.experiment]
    if callable(setup):
        setup = setup(args)
    key = {k: v for k, v in vars(args).items() if k not in ("seeds", "results", "no_record")}
    print(f"{machine()}; {args.experiment}; {setup}; seeds {args.seeds}", flush=True)
    start = time.perf_counter()
    results = run_seeds(f"{name.replace(' ', '_')}_{args.experiment}",
                        lambda seed, tmp: experiments[args.experiment](seed, tmp, args),
                        args.seeds, key, args.results)
    report(f"{name}: {args.experiment} ({measure})", setup, key, results, args.seeds,
           lambda stats: verdict(args.experiment, stats), start, record=not args.no_record,
           skip=skip, measure=measure[:1].upper() + measure[1:])
    return 0
