"""The project's own `kedro` commands (Kedro adds the `cli` group of `<package>.cli` to its CLI):

    kedro reproduce <MLflow run id> [--allow-code-change]

re-runs what the run ran (flat_pipeline.reproduce: its environment, pipelines, runtime parameters, filters, and every
input at the version it read; a benchmark method's run or a tune trial alone), then compares every metric with the
original's and writes the table to the console and to the new run (`reproduction.md`, metric
`reproduction.largest_difference`, tag `reproduces`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from kedro.framework.cli.project import run  # noqa: F401  `python -m flat_pipeline` finds `run` here

logger = logging.getLogger(__name__)


@click.group(name="flat_pipeline")
def cli() -> None:
    """flat_pipeline's own commands."""


@cli.command()
@click.argument("run_id")
@click.option("--allow-code-change", is_flag=True, help="Run even though this checkout's code differs from the run's.")
def reproduce(run_id: str, allow_code_change: bool) -> None:
    """Re-run MLflow run RUN_ID as it ran and compare every metric with it."""
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    from flat_pipeline.hooks.run_tags import git_commit, git_diff_sha256
    from flat_pipeline.reproduce import (
        REPRODUCES_TAG,
        ReproduceError,
        compare,
        metric_histories,
        recipe_of,
        source_problem,
    )

    project = find_kedro_project(Path.cwd())
    if project is None:
        raise click.ClickException("not in a Kedro project")
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.load_context()  # kedro-mlflow points MLflow at the project's store (mlflow.yml, MLFLOW_TRACKING_URI)
    client = mlflow.MlflowClient()
    try:
        recipe = recipe_of(run_id, client)
    except ReproduceError as error:
        raise click.ClickException(str(error)) from None
    commit = git_commit(project)
    problem = source_problem(recipe, commit, git_diff_sha256(project) if commit and commit.endswith("-dirty") else None)
    if problem and not allow_code_change:
        raise click.ClickException(
            f"{problem}: the re-run would not run the same code. Check out {recipe.commit} (`git checkout "
            f"{(recipe.commit or '').removesuffix('-dirty')}`), or pass --allow-code-change to run and compare anyway"
        )
    if problem:
        click.secho(f"WARNING: {problem}; running anyway (--allow-code-change)", fg="red", err=True)
    filters = "".join(f" --{key.replace('_', '-')} {value}" for key, value in recipe.filters.items())
    click.echo(f"reproducing {run_id}: kedro run --env {recipe.env} --pipelines {','.join(recipe.pipelines)}{filters}; "
               f"runtime parameters {recipe.runtime_params}; inputs {recipe.load_versions}")  # fmt: skip
    with KedroSession.create(project_path=project, env=recipe.env, runtime_params=recipe.runtime_params) as session:
        catalog_names = list(session.load_context().catalog.keys())
        session.run(pipeline_names=recipe.pipelines, load_versions=_pins(recipe.load_versions, catalog_names),
                    **recipe.filters)  # fmt: skip
    new_run = mlflow.last_active_run()
    if new_run is None:
        raise click.ClickException("the re-run opened no MLflow run")
    target = new_run.info.run_id
    if recipe.child_tags:  # the method's or trial's child run of the new run
        wanted = " and ".join(f"tags.{key} = '{value}'" for key, value in recipe.child_tags.items())
        found = f"tags.`mlflow.parentRunId` = '{target}' and {wanted}"
        children = client.search_runs([new_run.info.experiment_id], found)
        if not children:
            raise click.ClickException(f"the re-run {target} has no child run with {recipe.child_tags}")
        target = children[0].info.run_id
    comparison = compare(recipe.metrics, metric_histories(client, target, client.get_run(target).data.metrics))
    table = comparison.markdown(run_id, target)
    client.set_tag(target, REPRODUCES_TAG, run_id)
    if problem:
        client.set_tag(target, "reproduction.code_differs", problem[:5000])
    client.log_metric(target, "reproduction.largest_difference", comparison.largest)
    client.log_text(target, table, "reproduction.md")
    click.echo(table)
    sys.stdout.flush()


def _pins(versions: dict[str, str], catalog_names: list[str]) -> dict[str, str]:
    """`--load-versions` for every catalog entry of each dataset: its transcoded views too (base_model@model, ...)."""
    pins = {}
    for name, version in versions.items():
        views = [entry for entry in catalog_names if entry.split("@", 1)[0] == name]
        for entry in views or [name]:
            pins[entry] = version
    return pins
