"""``offline-bench train``: parse arguments, call ``offline_bench.train.train``, show a progress bar;
``offline-bench evaluate``: roll out trained runs' policies again (``offline_bench.train.reevaluate``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from offline_bench.cli.main import error_line, main


def _message(err: BaseException) -> str:
    """One line for the user (``cli.main.error_line``)."""
    return error_line(err)


class _ProgressBar:
    """A tqdm bar created on the first update (the start step is only known once a checkpoint is loaded)."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.shown_step = label, None, 0
        self.eval_step_score: tuple[Any, Any] = (None, None)

    def __call__(self, progress: Any) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=progress.steps, initial=progress.step - 1, desc=self.label, unit="upd",
                dynamic_ncols=True, mininterval=0.5, file=sys.stderr,
            )
            self.shown_step = progress.step - 1
        self.bar.update(progress.step - self.shown_step)
        self.shown_step = progress.step
        latest = (progress.eval_return, progress.eval_score)
        if latest != self.eval_step_score and progress.eval_return is not None:
            self.eval_step_score = latest
            postfix = {"return": f"{progress.eval_return:.1f}"}
            if progress.eval_score is not None:
                postfix["score"] = f"{progress.eval_score:.1f}"
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _show_config(resolved: Any) -> None:
    rows = resolved.describe()
    width = max(len(name) for _, name, *_ in rows)
    values = {name: repr(value) if isinstance(value, str) else str(value) for _, name, value, *_ in rows}
    vwidth = min(max(len(v) for v in values.values()), 24)
    section = None
    for sec, name, _, source, help_text in rows:
        if sec != section:
            section = sec
            algo_title = f"{resolved.algo_id} ({type(resolved.algo_config).__name__})"
            title = algo_title if sec == "algorithm" else "loop (TrainConfig)"
            click.echo(f"{sec}: {title}")
        click.echo(f"  {name:<{width}}  {values[name]:<{vwidth}}  {help_text}  [{source}]")


@main.command()
@click.option("--algo", required=True, help="Algorithm id: td3bc, cql, bear, dbr, ma-td3bc, ma-cql, ma-icq, omar "
              "(spellings like td3_bc or TD3+BC are accepted).")
@click.option("--dataset", "dataset_id", default=None, metavar="ID",
              help="Dataset id <task>-<quality>[-v<K>], e.g. hopper-medium (newest version) or spread-mixed-v0. "
              "Required unless --show-config.")
@click.option("--seed", type=int, default=None, help="Run seed (default 0): network init, batches and evaluation "
              "episodes derive from it; each seed has its own run directory.")
@click.option("--steps", type=int, default=None, help="Number of updates (overrides the per-task default).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of key: value overrides (algorithm or loop keys), above the shipped per-task files.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one config key (repeatable), e.g. --set hidden_sizes=[64,64] --set eval_every=1000.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Training device; auto (default) uses CUDA when available.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default $OFFLINE_BENCH_DATA, else ./datasets).")
@click.option("--runs", type=click.Path(file_okay=False), default=None,
              help="Runs directory (default $OFFLINE_BENCH_RUNS, else ./runs).")
@click.option("--show-config", is_flag=True, help="Print every config field with its value, help text and source, "
              "then exit without training.")
def train(
    algo: str,
    dataset_id: str | None,
    seed: int | None,
    steps: int | None,
    config_file: str | None,
    sets: tuple[str, ...],
    device: str | None,
    root: str | None,
    runs: str | None,
    show_config: bool,
) -> None:
    """Train an algorithm on a dataset file; writes (or resumes) runs/<dataset-id>/<algo>/seed<k>/.

    \b
    offline-bench train --algo td3bc --dataset hopper-medium --seed 0
    offline-bench train --algo omar --dataset spread-mixed --set omar_coe=0.7
    offline-bench train --algo cql --show-config

    Running the same command again resumes an unfinished run from its checkpoint; a finished run is not re-run
    (its result is shown). Different arguments for an existing run directory are refused: use another --runs.
    --steps, --seed and --device are the same keys as --set steps=..., seed=..., device=...; give each once.
    """
    from offline_bench.cli.data_cmds import sigterm_as_interrupt
    from offline_bench.config import parse_sets
    from offline_bench.train import TrainError, prepare
    from offline_bench.train import train as train_fn

    user_errors: tuple[type[BaseException], ...] = (TrainError, ValueError, KeyError, FileNotFoundError, OSError)
    try:
        overrides = parse_sets(sets)
        if show_config:
            _, resolved = prepare(algo, dataset_id, seed=seed, steps=steps, device=device,
                                  config_file=config_file, sets=overrides)
            _show_config(resolved)
            return
        if dataset_id is None:
            raise TrainError("--dataset is required (e.g. --dataset hopper-medium); see offline-bench datasets list")
        bar = _ProgressBar(f"{algo} {dataset_id}")
        try:
            # SIGTERM (a scheduler, `kill`, a stopped sweep) as Ctrl-C: the run's .lock is removed on the way out.
            with sigterm_as_interrupt():
                outcome = train_fn(algo, dataset_id, seed=seed, steps=steps, device=device, config_file=config_file,
                                   sets=overrides, root=root, runs=runs, on_progress=bar)
        finally:
            bar.close()
    except BrokenPipeError:
        raise  # stdout closed by a pager or `head`: main() exits quietly
    except user_errors as err:
        click.echo(f"Error: {_message(err)}", err=True)  # click's own usage errors read the same
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command to resume from the last checkpoint", err=True)
        sys.exit(130)

    result = outcome.result or {}
    if outcome.status == "already finished":
        click.echo(f"{outcome.run_dir} is already finished (result.json exists); not re-running. "
                   "Delete the directory or pass another --runs to train again.")
    elif outcome.start_step:
        click.echo(f"resumed {outcome.run_dir} from step {outcome.start_step}; finished at step {outcome.step}")
    else:
        click.echo(f"finished {outcome.run_dir} ({outcome.step} updates)")
    # the mean runs over the last k evaluations, or over all of them where the run made fewer than k
    k = min(int(result.get("last_k") or 0), int(result.get("evaluations") or 0)) or result.get("last_k")
    which = "the last evaluation" if k == 1 else f"mean of the last {k} evaluations"
    if result.get("normalized"):
        click.echo(f"normalized score: {result['score']:.1f} ({which}); "
                   f"final {result['final_score']:.1f}, best {result['best_score']:.1f}")
    elif result:
        click.echo(f"return: {result['last_k_return']:.1f} ({which}; "
                   "no reference returns, so no normalized score)")


def _evaluation_line(ev: Any) -> str:
    where = f"step {ev.step:,} of {ev.steps:,}" + ("" if ev.finished else ", unfinished: its last checkpoint")
    score = "" if ev.mean_score is None else f", normalized {ev.mean_score:.1f} ± {ev.std_score:.1f}"
    return (f"{ev.run_dir} ({ev.algo} on {ev.dataset_id}, {where}): {ev.episodes} episodes, "
            f"return {ev.mean_return:.1f} ± {ev.std_return:.1f}{score}, {ev.mean_length:.0f} steps per episode")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="RUN_DIR...")
@click.option("--episodes", type=click.IntRange(min=1), default=100, show_default=True,
              help="Episodes per run, run side by side with one batched policy forward per step.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Evaluation seed: the episodes' env seeds and torch's generator derive from it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device of the policy; auto uses CUDA when available.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default: the folder of the file each run trained on, where it exists, "
              "else $OFFLINE_BENCH_DATA, else ./datasets).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write every run's evaluation (per-episode returns, scores, lengths, seeds) to this file.")
def evaluate(run_dirs: tuple[str, ...], episodes: int, seed: int, device: str, root: str | None,
             json_path: str | None) -> None:
    """Evaluate trained runs' policies again: the last checkpoint of each RUN_DIR, over --episodes episodes.

    \b
    offline-bench evaluate runs/hopper-medium-v0/td3bc/seed0 --episodes 100
    offline-bench evaluate runs/hopper-medium-v0/cql/seed* --json cql-100.json

    The scores use the reference returns each run was trained with. Nothing is written into the run directories;
    several runs also print the mean ± std of their normalized scores over the runs.
    """
    from offline_bench.data.catalog import UnknownDatasetError
    from offline_bench.train import TrainError
    from offline_bench.train.loop import write_json
    from offline_bench.train.reevaluate import evaluate_run

    user_errors: tuple[type[BaseException], ...] = (TrainError, ValueError, UnknownDatasetError, OSError)
    results = []
    if json_path is not None:  # before evaluating: a folder that cannot be made must not cost the rollouts
        try:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            click.echo(f"Error: cannot create the folder of --json {json_path}: {err.strerror or err}", err=True)
            sys.exit(1)
    try:
        for run_dir in run_dirs:
            results.append(evaluate_run(run_dir, episodes=episodes, seed=seed, device=device, root=root))
            click.echo(_evaluation_line(results[-1]))
    except BrokenPipeError:
        raise
    except user_errors as err:
        click.echo(f"Error: {_message(err)}", err=True)
        sys.exit(1)
    scores = [ev.mean_score for ev in results]
    if len(results) > 1 and all(s is not None for s in scores):
        click.echo(f"{len(results)} runs: normalized {np.mean(scores):.1f} ± {np.std(scores):.1f} "
                   "(mean ± std over the runs of each run's mean)")
    if json_path is not None:
        try:
            write_json(Path(json_path), [ev.to_json() for ev in results])
        except OSError as err:
            click.echo(f"Error: cannot write --json {json_path}: {err.strerror or err}", err=True)
            sys.exit(1)
        click.echo(f"wrote {json_path}")
