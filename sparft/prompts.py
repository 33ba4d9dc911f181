"""The prompt template shared by probing, training and evaluation, so all three ask alike."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Short on purpose: SmolLM2-135M asked to "reason step by step" rambles (about 100 tokens a
# completion against 40) and solved fewer of the easiest arithmetic problems.
DEFAULT_TEMPLATE = "{question}\nPut your final answer within \\boxed{{}}."


class PromptConfig(BaseModel):
    """The ``prompt`` section: chat messages built around each question."""

    model_config = ConfigDict(extra="forbid")

    system: str | None = Field(None, description="Optional system message.")
    template: str = Field(DEFAULT_TEMPLATE, description="User message; must contain {question}.")

    @field_validator("template")
    @classmethod
    def _has_question(cls, template: str) -> str:
        if "{question}" not in template:
            raise ValueError("template must contain the placeholder {question}")
        template.format(question="")
        return template


def build_messages(question: str, cfg: PromptConfig | None = None) -> list[dict[str, str]]:
    """Chat messages for one question, ready for a backend or TRL's conversational format."""
    cfg = cfg or PromptConfig()
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    messages.append({"role": "user", "content": cfg.template.format(question=question)})
    return messages
