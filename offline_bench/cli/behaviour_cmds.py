"""`offline-bench behaviour ...`: train the behaviour policies of a task, and export them into datasets/policies/."""
from __future__ import annotations

import json
from pathlib import Path

import click

from offline_bench.cli.main import main

try:  # make the committed behaviour policies' medium / mixed / expert recipes collectable by `offline-bench collect`
    from offline_bench.behaviour.recipes import register_behaviour_recipes

    register_behaviour_recipes()
except Exception as err:  # noqa: BLE001 - a broken index must not take the whole CLI down
    import logging

    logging.getLogger(__name__).warning("behaviour recipes not registered: %s", err)


@main.group()
def behaviour() -> None:
    """Behaviour policies (SAC / MATD3 trained online) that make the medium, mixed and expert datasets."""


def _check_task(task: str) -> None:
    """A usage error naming the known tasks when ``task`` has no behaviour recipe, before any run directory is
    looked at (else the error would be about a missing run, and its advice would fail the same way)."""
    from offline_bench.behaviour.tasks import recipe

    try:
        recipe(task)
    except KeyError as err:
        raise click.UsageError(str(err.args[0] if err.args else err)) from None


@behaviour.command()
@click.argument("task")
@click.option("--steps", type=int, default=None, help="Training budget in env steps (default: the task's recipe).")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/behaviour/<task>/seed<k>); an existing one is resumed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a trainer field (eval_every, checkpoint_every, ...) or learner field (hidden_sizes, ...).")
@click.option("--device", default="cpu", show_default=True, help="torch device of the networks.")
@click.option("--opponent-steps", type=int, default=None,
              help="tag / world: co-training steps before the opponents are frozen (default: the recipe's).")
def train(task: str, steps: int | None, seed: int, workdir: str | None, sets: tuple[str, ...], device: str,
          opponent_steps: int | None) -> None:
    """Train TASK's behaviour policies, resuming WORKDIR if it holds a checkpoint.

    The medium policy is frozen the first time the evaluated return reaches the task's medium target (PyBullet);
    multi-agent tasks pick it after the run (a third of the way from random to expert). Then measures the
    expert (best) policy over 50 episodes.
    """
    import dataclasses

    from tqdm import tqdm

    from offline_bench.behaviour.tasks import recipe
    from offline_bench.behaviour.trainer import TrainerConfig, default_config, default_workdir, train_behaviour
    from offline_bench.config import parse_sets, replace

    _check_task(task)
    try:
        overrides = parse_sets(sets)
    except (KeyError, ValueError) as err:
        raise click.UsageError(str(err.args[0] if err.args else err)) from None
    trainer_keys = {f.name for f in dataclasses.fields(TrainerConfig)}
    config = default_config(task, seed=seed, **({"steps": steps} if steps is not None else {}))
    try:
        config = replace(config, {k: v for k, v in overrides.items() if k in trainer_keys})
    except (KeyError, ValueError) as err:
        raise click.UsageError(str(err)) from None
    algo_overrides = {k: v for k, v in overrides.items() if k not in trainer_keys}
    if opponent_steps is None:
        opponent_steps = recipe(task).opponent_steps
    run_dir = Path(workdir) if workdir else default_workdir(task, seed)
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True, desc=task)
    shown = {"episode": float("nan"), "eval": float("nan"), "stage": ""}

    def progress(info: dict) -> None:
        if info.get("stage") != shown["stage"]:  # tag / world: the opponents' co-training stage comes first
            shown["stage"] = info.get("stage", "")
            bar.reset(total=opponent_steps if shown["stage"] == "opponents" else config.steps)
            bar.set_description(f"{task} {shown['stage']}".strip())
        if "episode_return" in info:
            shown["episode"] = info["episode_return"]
        if "eval_return" in info:
            shown["eval"] = info["eval_return"]
        bar.update(info["step"] - bar.n)
        bar.set_postfix(ret=f"{shown['episode']:.1f}", eval=f"{shown['eval']:.1f}", refresh=False)

    summary = train_behaviour(config, run_dir, algo_overrides, device, progress, opponent_steps)
    bar.close()
    click.echo(json.dumps({k: summary[k] for k in ("task", "step", "wall_time_s", "random", "medium", "expert")}, indent=2))


@behaviour.command()
@click.argument("task")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Run directory to read.")
def status(task: str, seed: int, workdir: str | None) -> None:
    """Show a behaviour run's progress: step, wall time, last evaluations, medium / best."""
    from offline_bench.behaviour.trainer import default_workdir

    _check_task(task)
    run_dir = Path(workdir) if workdir else default_workdir(task, seed)
    path = run_dir / "summary.json"
    if not path.exists():
        raise click.ClickException(f"no behaviour run in {run_dir}; start one with `offline-bench behaviour train {task}`")
    summary = json.loads(path.read_text())
    evals = summary.pop("evals")
    summary["last_evals"] = evals[-5:]
    click.echo(json.dumps(summary, indent=2))


@behaviour.command()
@click.argument("task")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Run directory to export from.")
@click.option("--episodes", type=int, default=50, show_default=True, help="Episodes to measure each policy.")
@click.option("--expert/--no-expert", default=None,
              help="Export the best snapshot as the expert policy (default: only when the run finished its budget).")
@click.option("--policies", type=click.Path(file_okay=False), default=None,
              help="Policy folder to export into (default: the repository's datasets/policies).")
@click.option("--medium/--keep-medium", default=True, show_default=True,
              help="Export the run's medium policy, or keep the one already in the index together with the run "
                   "that made it (what --retrain of the mixed data re-runs); this run's expert is then recorded as "
                   "expert_run.")
def export(task: str, seed: int, workdir: str | None, episodes: int, expert: bool | None, policies: str | None,
           medium: bool) -> None:
    """Copy a run's medium and best (expert) actors into datasets/policies/TASK/ and record them in the index.

    Safe while the run is still training: it reads the run's files and measures the returns on its own envs.
    """
    from offline_bench.behaviour.export import export_policies
    from offline_bench.behaviour.trainer import default_workdir

    _check_task(task)
    run_dir = Path(workdir) if workdir else default_workdir(task, seed)
    try:
        entry = export_policies(task, run_dir, episodes=episodes, root=policies, include_expert=expert,
                                include_medium=medium)
    except (FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(entry, indent=2))


@behaviour.command("collect-mixed")
@click.argument("task")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default: $OFFLINE_BENCH_DATA, else ./datasets).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="The behaviour run that saved mixed.npz (default runs/behaviour/<task>/seed<k>).")
@click.option("--retrain", is_flag=True,
              help="When no saved run is there, re-run the deterministic training up to the medium step.")
@click.option("--force", is_flag=True, help="Replace a TASK-mixed dataset in ROOT that was made differently.")
@click.pass_context
def collect_mixed_cmd(ctx: click.Context, task: str, root: str | None, workdir: str | None, retrain: bool,
                      force: bool) -> None:
    """Write TASK-mixed at its newest version (hopper-mixed-v0, spread-mixed-v1, ...): the behaviour run's replay
    buffer from step 0 to the medium policy, in order.

    An alias of `offline-bench collect TASK-mixed` (see its --help for what --retrain costs per task).
    """
    from offline_bench.cli.data_cmds import collect

    ctx.invoke(collect, dataset_id=f"{task}-mixed", steps=None, seed=0, force=force, retrain=retrain,
               workdir=workdir, root=root)
