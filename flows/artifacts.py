"""What the flows publish in Prefect: each stage's own artifact (its declaration says what),
and the link from a flow run to its MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from sparft.stages.stage import Stage


def publish(stage: Stage, config: Mapping[str, Any]) -> None:
    """The stage's artifact (a table or a markdown text), if it declares one and has one now."""
    if stage.artifact is None:
        return
    artifact = stage.artifact(config)
    if artifact is None:
        return
    if artifact.table is not None:
        create_table_artifact(artifact.table, key=artifact.key, description=artifact.description)
    elif artifact.markdown is not None:
        create_markdown_artifact(
            artifact.markdown, key=artifact.key, description=artifact.description
        )


def absolute_uri(uri: str, root: Path) -> str:
    """``sqlite:///mlflow.db`` is relative to the project; the link must work from anywhere."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(root / uri[len(prefix) :])
    return uri


def link_mlflow(flow_run: FlowRun | None, mlrun: Any, root: Path) -> None:
    """Give the Prefect flow run its MLflow parent run: a tag and an artifact with the link."""
    import mlflow

    run_id, experiment = mlrun.info.run_id, mlrun.info.experiment_id
    uri = absolute_uri(mlflow.get_tracking_uri(), root)
    if flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=[*flow_run.tags, f"mlflow-run:{run_id}"])
    path = f"#/experiments/{experiment}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        create_link_artifact(
            f"{uri.rstrip('/')}/{path}", link_text=f"MLflow run {run_id}", key="sparft-mlflow"
        )
        return
    create_markdown_artifact(
        f"MLflow parent run `{run_id}` (experiment id {experiment}) in `{uri}`.\n\n"
        f"Browse it: `mlflow ui --backend-store-uri {uri} --host 127.0.0.1`, then open "
        f"`http://127.0.0.1:5000/{path}`.",
        key="sparft-mlflow",
        description="the MLflow parent run of this flow run",
    )
