"""The ``tracking`` section, kept apart from ``sparft.tracking`` so reading params never imports
MLflow (nor anything ``sparft.tracking`` needs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrackingConfig(BaseModel):
    """The ``tracking`` section: where runs are recorded."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Record stages and pipeline runs in MLflow.")
    uri: str = Field(
        "sqlite:///mlflow.db",
        description="MLflow tracking URI; the default is a SQLite file in the project folder. "
        "Env MLFLOW_TRACKING_URI overrides.",
    )
    experiment: str = Field("sparft", description="One experiment per project.")
    log_model: bool = Field(
        True, description="Log the trained policy as an MLflow model (transformers flavour)."
    )
    registered_model: str | None = Field(
        "sparft-policy", description="Model Registry name for trained policies; null: no registry."
    )
