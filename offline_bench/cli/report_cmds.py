"""``offline-bench report`` (runs -> leaderboards) and ``offline-bench sweep`` (a grid of train runs).

They parse arguments, show progress and call ``offline_bench.report.make_report`` / ``offline_bench.sweep``.
"""
from __future__ import annotations


import click

from offline_bench.cli.main import error_line, main
from offline_bench.sweep import PRESETS, RunOutcome, quick_budget_text  # standard library + paths: cheap to import

_FORMATS = ("md", "csv", "latex", "html", "all")


def _split(values: tuple[str, ...]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``: comma-separated and/or repeated options."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _fail(err: BaseException) -> None:
    raise click.ClickException(error_line(err))


@main.command()
@click.option("--runs", type=click.Path(file_okay=False), default=None,
              help="Runs folder to read (default $OFFLINE_BENCH_RUNS, else ./runs).")
@click.option("--out", type=click.Path(file_okay=False), default="leaderboards", show_default=True,
              help="Folder for the table files and learning-curve PNGs.")
@click.option("--format", "formats", type=click.Choice(_FORMATS), multiple=True,
              help="Output format (repeatable): md (default), csv, latex, html (self-contained, sortable, "
                   "plots embedded) or all. The Markdown table is always printed.")
@click.option("--statistic", type=click.Choice(["final", "last-k", "best"]), default=None,
              help="Per-run number in the cells: final evaluation, mean of the last k evaluations, or best "
                   "(default: the one the runs' result.json states, last-k).")
@click.option("--score", type=click.Choice(["normalized", "return"]), default="normalized", show_default=True,
              help="Normalized score (0 = random, 100 = expert reference) or raw episode return.")
@click.option("--datasets", multiple=True, metavar="IDS",
              help="Comma-separated datasets (ids with or without version, or task names); also table rows "
                   "('not run' where nothing ran).")
@click.option("--algos", multiple=True, metavar="IDS", help="Comma-separated algorithm ids; also table columns.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="Show a paper's whole grid (see `sweep --preset`), with 'not run' cells for runs not done.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds each cell should have (default: the preset's, else the most any cell has).")
@click.option("--name", default=None, help="File name stem (default: the preset name, else 'leaderboard').")
@click.option("--title", default=None, help="Table title (default: the preset's paper table, else 'Normalized scores').")
@click.option("--no-plots", is_flag=True, help="Skip the learning-curve PNGs.")
def report(runs: str | None, out: str, formats: tuple[str, ...], statistic: str | None, score: str,
           datasets: tuple[str, ...], algos: tuple[str, ...], preset: str | None, seeds: int | None,
           name: str | None, title: str | None, no_plots: bool) -> None:
    """Turn run directories into paper-style tables: rows by dataset quality then task, one column per
    algorithm, mean ± std over seeds, best per row in bold; partial and missing runs are shown as such.

    \b
    offline-bench report                                   # runs/ -> leaderboards/leaderboard.md (+ curves)
    offline-bench report --format all --preset omar-mpe    # the OMAR Table 3 grid, every format
    """
    from offline_bench.paths import runs_root
    from offline_bench.report import FORMATS, make_report

    chosen = list(FORMATS) if "all" in formats else list(dict.fromkeys(formats or ("md",)))
    grid = PRESETS[preset] if preset else None
    try:
        result = make_report(
            runs_root(runs), out, formats=chosen, statistic=statistic, datasets=_split(datasets) or None,
            algos=_split(algos) or None, seeds=seeds or (grid.seeds if grid else None),
            name=name or (preset or "leaderboard"), title=title or (grid.source if grid else None),
            grid_datasets=grid.datasets if grid else (), grid_algos=grid.algos if grid else (),
            plots=not no_plots, score=score,
        )
    except (ValueError, OSError, KeyError) as err:
        _fail(err)
    click.echo(result.markdown)
    for path in [*result.files.values()]:  # "replaced": the default --out holds committed tables
        click.echo(f"{'replaced' if path in result.replaced else 'wrote'} {path}", err=True)
    if result.curves:
        pngs = list(result.curves.values())
        replaced = sum(p in result.replaced for p in pngs)
        click.echo(f"wrote {len(pngs)} learning-curve PNGs to {pngs[0].parent}"
                   + (f" ({replaced} of them replaced existing files)" if replaced else ""), err=True)


@main.command()
@click.option("--algos", multiple=True, metavar="IDS", help="Comma-separated algorithm ids, e.g. omar,ma-cql.")
@click.option("--datasets", multiple=True, metavar="IDS",
              help="Comma-separated dataset ids, e.g. spread-random,spread-mixed (newest version if none given).")
@click.option("--seeds", type=int, default=None, help="Number of seeds per (dataset, algorithm): seeds 0..N-1 "
              "(default: the preset's, else 1).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Updates per run (default: --budget quick's number, see --budget, or the per-task paper budget).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config override for every run, or ALGO:KEY=VALUE for one algorithm's runs (repeatable).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once (local processes, or the CPUs of the local Ray started for the sweep).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes on this machine; ray: one Ray task per run (needs the `ray` extra).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray with --jobs CPUs).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="A paper's grid: omar-mpe (OMAR Table 3), omar-mamujoco (OMAR Table 6), dbr-pybullet (DBR "
                   "Table 1). --algos/--datasets/--seeds narrow or replace its parts.")
@click.option("--budget", type=click.Choice(["quick", "paper"]), default="paper", show_default=True,
              help=f"quick: {quick_budget_text()} (a smoke test of the grid; --steps overrides); paper: the "
                   "per-task default budgets.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (default $OFFLINE_BENCH_DATA, else ./datasets).")
@click.option("--runs", type=click.Path(file_okay=False), default=None,
              help="Runs folder (default $OFFLINE_BENCH_RUNS, else ./runs).")
@click.option("--collect", is_flag=True,
              help="Collect datasets that are missing first (default: skip their runs with a message).")
@click.option("--collect-steps", type=click.IntRange(min=1), default=None,
              help="Size of datasets collected by --collect (default: the recipe's, 1M transitions); mixed "
              "datasets are a behaviour run's whole replay buffer, always collected at their fixed size.")
@click.option("--dry-run", is_flag=True,
              help="List the runs with their status (finished, unfinished, new, no-dataset, or conflict: the "
              "runs folder holds that run trained with another config); start nothing.")
def sweep(algos: tuple[str, ...], datasets: tuple[str, ...], seeds: int | None, steps: int | None,
          sets: tuple[str, ...], jobs: int, executor: str, address: str | None, preset: str | None, budget: str,
          root: str | None, runs: str | None, collect: bool, collect_steps: int | None, dry_run: bool) -> None:
    """Train every (dataset, algorithm, seed) of a grid once: finished runs are skipped, unfinished ones resume.

    \b
    offline-bench sweep --algos omar,ma-cql --datasets spread-random,spread-mixed --seeds 5 --jobs 2
    offline-bench sweep --preset omar-mpe --budget quick --executor ray --jobs 4
    offline-bench report --preset omar-mpe                 # then the table

    Each run's output goes to <runs>/.logs/<dataset>/<algo>/seed<k>.log.
    """
    from tqdm import tqdm

    from offline_bench.cli.data_cmds import sigterm_as_interrupt
    from offline_bench.paths import data_root, runs_root
    from offline_bench.sweep import LOG_DIR, SweepError, is_collected, resolve_grid, run_status, run_sweep

    try:
        specs = resolve_grid(_split(algos), _split(datasets), seeds, preset, budget, steps, sets)
    except SweepError as err:
        _fail(err)
    runs_dir, root_dir = runs_root(runs), data_root(root)
    if dry_run:
        collected = {d: is_collected(d, root_dir) for d in dict.fromkeys(s.dataset_id for s in specs)}
        for spec in specs:
            status = run_status(spec, runs_dir) if collected[spec.dataset_id] else "no-dataset"
            click.echo(f"{status:<10}  offline-bench {' '.join(spec.train_args(root_dir, runs_dir))}")
        return
    if collect:
        missing = [d for d in dict.fromkeys(s.dataset_id for s in specs) if not is_collected(d, root_dir)]
        if missing:
            click.echo(f"collecting {', '.join(missing)} first (logs: {runs_dir / LOG_DIR})", err=True)
    with tqdm(total=len(specs), desc="sweep", unit="run", dynamic_ncols=True) as bar:
        def on_event(outcome: RunOutcome) -> None:
            if outcome.status == "failed":
                tqdm.write(f"FAILED {outcome.spec.name}: {outcome.message}")
            elif outcome.status == "finished":
                tqdm.write(f"finished {outcome.spec.name} in {outcome.seconds:.0f} s")
            bar.update(1)

        try:
            # SIGTERM as Ctrl-C: run_sweep then stops the trains it started (they would outlive it otherwise)
            with sigterm_as_interrupt():
                summary = run_sweep(specs, root_dir, runs_dir, jobs=jobs, executor=executor, address=address,
                                    collect=collect, collect_steps=collect_steps, on_event=on_event)
        except SweepError as err:
            _fail(err)
        except KeyboardInterrupt:
            bar.close()
            click.echo("interrupted: run the same command to resume (finished runs are skipped, unfinished ones "
                       "resume from their last checkpoint)", err=True)
            raise SystemExit(130) from None
    for dataset_id in summary.missing_datasets:
        if dataset_id in summary.collect_errors:
            click.echo(f"skipped {dataset_id}: {summary.collect_errors[dataset_id]}", err=True)
        else:
            click.echo(f"skipped {dataset_id}: not collected in {root_dir} (offline-bench collect {dataset_id} "
                       f"--root {root_dir}, or sweep --collect)", err=True)
    click.echo(f"sweep: {summary.count('finished')} finished, {summary.count('already finished')} already "
               f"finished, {summary.count('failed')} failed, {summary.count('missing dataset')} skipped "
               f"(dataset missing) in {summary.seconds:.0f} s. Table: offline-bench report --runs {runs_dir}"
               + (f" --preset {preset}" if preset else ""))
    if not summary.ok:
        raise SystemExit(1)
