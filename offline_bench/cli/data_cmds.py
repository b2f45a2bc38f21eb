"""Dataset commands: ``collect`` and ``datasets list/show/verify/export/import/measure-random``.

They parse arguments, show progress and call ``offline_bench.data``; errors become one line on stderr and a
non-zero exit.
"""
from __future__ import annotations

import functools
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from offline_bench.cli.main import main, system_error_line

F = TypeVar("F", bound=Callable[..., Any])

ROOT_HELP = "Dataset directory (default: $OFFLINE_BENCH_DATA, else ./datasets)."


def root_option(func: F) -> F:
    return click.option("--root", type=click.Path(file_okay=False), default=None, help=ROOT_HELP)(func)  # type: ignore[return-value]


def clean_errors(func: F) -> F:
    """Turn the library's expected errors into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from offline_bench.data import DatasetError, MissingReferenceError, UnknownDatasetError
        from offline_bench.data.minari_io import MinariError

        try:
            return func(*args, **kwargs)
        except (DatasetError, UnknownDatasetError, MinariError, MissingReferenceError, ValueError, KeyError,
                OSError) as exc:
            logging.getLogger(__name__).debug("%s failed", func.__name__, exc_info=True)  # -vv shows the traceback
            message = system_error_line(exc) or str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
            raise click.ClickException(message.replace("\n", " ")) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the writer's clean-up runs exactly as for Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner thread): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _retrain_help() -> str:
    from offline_bench.data.catalog import retrain_estimates

    costs = ", ".join(f"{task} {steps} steps" + (f" ~{minutes:.0f} min" if minutes is not None else "")
                      for task, (steps, minutes) in retrain_estimates().items())
    return ("Mixed datasets only: when this machine has no saved behaviour run (--workdir), re-run the "
            "deterministic behaviour training up to the medium policy to rebuild its replay buffer: "
            f"{costs or 'no task has a medium policy yet'} (as long as the recorded runs took on 2 shared CPU cores).")


@main.command()
@click.argument("dataset_id", metavar="ID")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Transitions to collect (default: the recipe's size, 1,000,000). Mixed datasets have a fixed "
              "size (the replay buffer up to the medium policy) and refuse any other number.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Collection seed (>= 0); policy init, noise and every episode's env seed derive from it (mixed: "
              "must be 0, the behaviour run's own seeds apply).")
@click.option("--force", is_flag=True,
              help="Re-collect even if ROOT already holds this dataset (replacing one made differently).")
@click.option("--retrain", is_flag=True, help=_retrain_help())
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Mixed datasets only: the saved behaviour run whose mixed.npz holds the replay buffer "
              "(default runs/behaviour/<task>/seed<k>, under $OFFLINE_BENCH_RUNS if set).")
@root_option
@clean_errors
def collect(dataset_id: str, steps: int | None, seed: int, force: bool, retrain: bool, workdir: str | None,
            root: str | None) -> None:
    """Collect dataset ID (e.g. hopper-random, spread-random-v0, hopper-mixed) into ROOT/<id>.hdf5 and its
    manifest <id>.json.

    Medium and expert data are rollouts of the committed behaviour policies; mixed data is the behaviour run's
    replay buffer up to its medium policy (from a saved run, or rebuilt with --retrain). tag and world data run
    against the task's stored frozen opponent. The file is written under a temporary name and renamed when
    complete; Ctrl-C or SIGTERM leaves nothing that looks collected. An identical collection already in ROOT that
    verifies is kept as it is.
    """
    from tqdm import tqdm

    from offline_bench.data import catalog_entry, collect as collect_dataset
    from offline_bench.paths import data_root

    entry = catalog_entry(dataset_id)
    total = steps or entry.recipe.steps
    path = data_root(root) / f"{entry.dataset_id}.hdf5"
    before = path.stat().st_mtime_ns if path.exists() else None
    with tqdm(total=total, unit="step", desc=entry.dataset_id, disable=None, file=sys.stderr) as bar:

        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        try:
            with sigterm_as_interrupt():
                manifest = collect_dataset(entry.dataset_id, steps=steps, seed=seed, root=root, progress=progress,
                                           force=force, retrain=retrain, run_dir=workdir)
        except KeyboardInterrupt:
            bar.close()
            click.echo(f"Error: collection of {entry.dataset_id} interrupted; nothing was written", err=True)
            sys.exit(130)
    stats = manifest["episode_returns"]
    mean = "n/a" if stats["mean"] is None else f"{stats['mean']:.2f}"
    kept = before is not None and path.stat().st_mtime_ns == before
    click.echo(
        f"{entry.dataset_id}: {manifest['transitions']} transitions, {manifest['episodes']} episodes, "
        f"mean return {mean} -> {path} (sha256 {manifest['sha256'][:12]})"
        + ("; already collected identically and verified, kept (--force re-collects)" if kept else "")
    )


@main.group()
def datasets() -> None:
    """List, inspect, verify, export and import datasets."""


@datasets.command("list")
@root_option
@click.option("--no-verify", is_flag=True, help="Skip the full check (sha256, shapes, values) of collected files.")
@clean_errors
def list_datasets(root: str | None, no_verify: bool) -> None:
    """Every catalog id: its recipe status, whether it is collected in ROOT, and whether it verifies."""
    from offline_bench.behaviour.recipes import saved_mixed_buffer
    from offline_bench.data import all_dataset_ids, catalog_entry, dataset_status, load_dataset
    from offline_bench.data.format import DatasetError
    from offline_bench.paths import data_root

    click.echo(f"datasets in {data_root(root)}")
    click.echo(f"{'id':<30} {'recipe':<23} {'collected':<11} {'verified':<9} {'transitions':>11}")
    retrain = False
    for dataset_id in all_dataset_ids():
        status = dataset_status(dataset_id, root)
        entry = catalog_entry(dataset_id)
        recipe = entry.recipe.status
        if entry.quality == "mixed" and entry.recipe.collectable and saved_mixed_buffer(entry.task) is None:
            recipe, retrain = "collectable, --retrain", retrain or status != "collected"
        verified, transitions = "-", ""
        if status == "collected" and not no_verify:
            try:
                transitions = str(load_dataset(dataset_id, root).transitions)
                verified = "yes"
            except DatasetError:
                verified = "FAILED"
        collected = {"collected": "yes", "missing": "no", "incomplete": "incomplete"}[status]
        click.echo(f"{dataset_id:<30} {recipe:<23} {collected:<11} {verified:<9} {transitions:>11}")
    if retrain:
        click.echo("--retrain: no saved behaviour run of that task is on this machine, so `collect <id> --retrain` "
                   "re-runs its training up to the medium policy (`offline-bench collect --help` lists the time)")


@datasets.command()
@click.argument("dataset_id", metavar="ID")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON instead of a summary.")
@clean_errors
def show(dataset_id: str, root: str | None, as_json: bool) -> None:
    """Manifest, sizes, episode-return statistics and the behaviour policy's normalized score of ID."""
    from offline_bench.data import load_dataset
    from offline_bench.evaluate import has_references, normalized_score
    from offline_bench.train.loop import dataset_facts

    dataset = load_dataset(dataset_id, root)
    m = dataset.manifest
    if as_json:
        click.echo(json.dumps(m, indent=2, sort_keys=True))
        return
    stats, refs = m["episode_returns"], m["references"]
    used = dataset_facts(dataset)["references"]  # the pair training scores this file with: the manifest's, whole
    if stats["mean"] is None:
        score = "n/a"
    elif has_references(used["random"], used["expert"]):
        score = f"{normalized_score(stats['mean'], used['random'], used['expert']):.1f}"
        if used["source"] != "manifest":
            score += f" (against the task's current references, {used['random']} / {used['expert']})"
    else:
        score = "n/a (no expert reference for this task yet)"
    packages = ", ".join(f"{k} {v}" for k, v in m["env"].get("packages", {}).items())
    shapes = ", ".join(f"{k} {v['shape']}" for k, v in m["arrays"].items())
    lines = [
        f"id:               {m['dataset_id']}  (format v{m['format_version']}, offline-bench {m['package_version']})",
        f"file:             {dataset.path}  ({m['file_bytes'] / 2**20:.1f} MiB, sha256 {m['sha256']})",
        f"task:             {m['task']} ({m['env'].get('source')}), {m['n_agents']} agent(s), "
        f"obs sizes {m['obs_sizes']}, action sizes {m['action_sizes']}",
        f"simulated with:   {packages}",
        f"recipe:           {m['recipe'].get('description') or m['recipe'].get('kind')}",
        f"behaviour policy: {json.dumps(m['behaviour_policy'], sort_keys=True)}",
        f"seeds:            {json.dumps({k: v for k, v in m['seeds'].items() if k != 'episode_seeds'})}",
        *_opponent_lines(m["env"].get("opponents")),
        f"size:             {m['transitions']} transitions, {m['episodes']} episodes"
        + (" (last one cut by the size budget)" if m.get("last_episode_cut") else ""),
        f"arrays:           {shapes}",
        f"terminals:        {int(dataset.terminals.sum())}, timeouts: {int(dataset.timeouts.sum())}",
    ]
    if stats["mean"] is not None:
        lines.append(f"episode return:   mean {stats['mean']:.2f} ± {stats['std']:.2f} (min {stats['min']:.2f}, "
                     f"max {stats['max']:.2f}, {stats['episodes']} complete episodes, mean length "
                     f"{stats['mean_length']:.1f})")
    lines += [
        f"references:       random {refs['random']}, expert {refs['expert']} ({refs['source']}); "
        f"measured uniform-random {refs.get('measured_random')}",
        f"normalized score: {score}  (behaviour policy's mean return)",
    ]
    click.echo("\n".join(lines))


def _opponent_lines(opponents: Any) -> list[str]:
    if opponents is None:
        return []
    if isinstance(opponents, dict):
        sha = f" (sha256 {opponents['sha256']})" if opponents.get("sha256") else ""
        return [f"opponents:        {opponents.get('description', opponents.get('kind'))}{sha}"]
    return [f"opponents:        {opponents}"]


@datasets.command()
@click.argument("dataset_id", metavar="ID")
@root_option
def verify(dataset_id: str, root: str | None) -> None:
    """Check ID's format version, size, sha256, shapes and values; exit 1 with the problem and the fix."""
    from offline_bench.data import UnknownDatasetError, verify_dataset

    try:
        ok, message = verify_dataset(dataset_id, root)
    except UnknownDatasetError as exc:
        ok, message = False, str(exc)
    if not ok:
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
    click.echo(message)


@datasets.command("export")
@click.argument("dataset_id", metavar="ID")
@click.option("--minari", "to_minari", is_flag=True, required=True,
              help="Write the local Minari dataset offline-bench/<id> (under $MINARI_DATASETS_PATH).")
@click.option("--force", is_flag=True, help="Replace an existing Minari dataset of the same id.")
@root_option
@clean_errors
def export(dataset_id: str, to_minari: bool, force: bool, root: str | None) -> None:
    """Export collected dataset ID to another format (Minari)."""
    from offline_bench.data.minari_io import export_minari

    target = export_minari(dataset_id, root, force=force)
    click.echo(f"exported as Minari dataset {target}; read it with minari.load_dataset({target!r})")


@datasets.command("import")
@click.argument("source_id", metavar="MINARI_ID")
@click.option("--as", "dataset_id", default=None,
              help="Catalog id to store it as (default: MINARI_ID without its offline-bench/ namespace).")
@click.option("--force", is_flag=True,
              help="Replace a dataset of the same id already in ROOT (collected or imported).")
@root_option
@clean_errors
def import_(source_id: str, dataset_id: str | None, force: bool, root: str | None) -> None:
    """Import the local single-agent Minari dataset MINARI_ID into ROOT in offline-bench's format.

    A dataset of the same id already in ROOT is kept, and nothing is written, unless --force is given.
    """
    from offline_bench.data.minari_io import import_minari

    manifest = import_minari(source_id, dataset_id, root, force=force)
    click.echo(f"imported {source_id} as {manifest['dataset_id']}: {manifest['transitions']} transitions, "
               f"{manifest['episodes']} episodes (sha256 {manifest['sha256'][:12]})")


@datasets.command("measure-random")
@click.argument("task")
@click.option("--episodes", type=click.IntRange(min=1), default=100, show_default=True,
              help="Episodes to average over.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed (>= 0) of the env seeds and the actions.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@clean_errors
def measure_random(task: str, episodes: int, seed: int, as_json: bool) -> None:
    """Mean return of uniform-random actions on TASK (the measured random reference; team mean for multi-agent).

    tag and world run against the task's stored frozen opponent, as their datasets do.
    """
    from tqdm import tqdm

    from offline_bench.data import measure_random_return

    with tqdm(total=episodes, unit="episode", desc=task, disable=None, file=sys.stderr) as bar:
        stats = measure_random_return(task, episodes, seed, progress=lambda done, _: bar.update(done - bar.n))
    if as_json:
        click.echo(json.dumps(stats, sort_keys=True))
        return
    click.echo(f"{task}: uniform-random return {stats['mean']:.6f} ± {stats['std']:.6f} over {stats['episodes']} "
               f"episodes (seed {seed}, mean length {stats['mean_length']:.1f})"
               + (f"; opponents: {stats['opponents']}" if "opponents" in stats else ""))
