"""Training rollouts through a served sampler (``train.rollouts: vllm-server``): TRL's
``rollout_func`` hook, the weights loaded once per optimizer step, and TRL's importance-sampling
correction on the returned log-probabilities. Here the "server" samples from the tiny policy
itself (same weights, same temperature), so the correction must come out near 1; the real vLLM
server is tested in ``tests/test_vllm_server.py``."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sparft.generation.config import ServerConfig
from sparft.generation.server import VLLMServer
from sparft.testing import sum_questions, tiny_trainer
from sparft.training import TrainConfig
from sparft.training.heldout import LOGPROBS_ARGS, ServedChecks, rollout_server
from sparft.training.rollouts import ServedRollouts


class FakeChecks:
    """What ``ServedRollouts`` uses of ``ServedChecks``: a URL, a weights folder, settings.
    The URL is its own: the record of whose weights a server holds is kept per URL, in the
    machine's temporary folder, which tests running in parallel share."""

    def __init__(self, weights_dir: Path) -> None:
        self.model = "tiny"
        self.server_cfg = ServerConfig()
        self.weights_dir = weights_dir
        self.owned = None
        self.url = f"http://127.0.0.1:1/{uuid.uuid4().hex}/v1"

    def connect(self, policy: Any) -> str:
        return self.url

    load = ServedChecks.load  # the real write, load and claim (load_weights stubbed below)


class PolicySampler:
    """``httpx.post`` answering /v1/completions as vLLM does, from the live tiny policy."""

    def __init__(self, trainer: Any, temperature: float, shift: float = 0.0) -> None:
        self.trainer = trainer
        self.temperature = temperature
        self.shift = shift  # added to every returned log-probability: a sampler a bit off
        self.bodies: list[dict[str, Any]] = []
        self.logps: list[list[float]] = []

    def __call__(self, url: str, json: dict[str, Any], timeout: float) -> Any:
        self.bodies.append(json)
        model = self.trainer.model
        ids = torch.tensor([json["prompt"]])
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=json["max_tokens"], do_sample=True,
                temperature=self.temperature, top_k=0, pad_token_id=0,
            )  # fmt: skip
            completion = out[0, ids.shape[1] :]
            logits = model(out).logits[0, ids.shape[1] - 1 : -1] / self.temperature
            logps = torch.log_softmax(logits.float(), -1).gather(1, completion[:, None])[:, 0]
        logps = (logps + self.shift).tolist()
        self.logps.append(logps)
        choice = {"token_ids": completion.tolist(), "logprobs": {"token_logprobs": logps}}
        return httpx_response(url, {"choices": [choice]})


def served_by_itself(
    trainer: Any,
    cfg: TrainConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shift: float = 0.0,
) -> tuple[PolicySampler, ServedRollouts, list[Path]]:
    """``trainer``'s rollouts through ``ServedRollouts`` on a stand-in server that samples from
    the trainer's own policy; returns the sampler, the rollouts and the weight loads asked for."""
    import httpx

    from sparft.generation import server as serving

    loads: list[Path] = []
    monkeypatch.setattr(serving, "load_weights", lambda url, path: loads.append(path) or 0.1)
    sampler = PolicySampler(trainer, cfg.temperature, shift)
    monkeypatch.setattr(httpx, "post", sampler)
    checks = FakeChecks(tmp_path / "w")
    rollouts = ServedRollouts(checks, cfg.max_completion_length, cfg.temperature)
    rollouts._model[checks.url] = "tiny"
    rollouts.attach(trainer)
    return sampler, rollouts, loads


def httpx_response(url: str, payload: dict[str, Any]) -> Any:
    import httpx

    return httpx.Response(200, json=payload, request=httpx.Request("POST", url))


def test_the_server_gets_the_logprob_mode_the_correction_needs() -> None:
    cfg = rollout_server(ServerConfig(extra_args=["--enforce-eager"]))
    assert cfg.extra_args == ["--enforce-eager", *LOGPROBS_ARGS]
    assert rollout_server(cfg).extra_args == cfg.extra_args  # added once
    own = ServerConfig(extra_args=["--logprobs-mode", "raw_logprobs"])
    assert rollout_server(own) == own  # the user's own choice stays


@pytest.mark.parametrize("lora", ["off", "on"])
def test_rollouts_come_from_the_served_sampler_with_its_correction(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: str
) -> None:
    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=2, num_generations=4, max_completion_length=6,
        beta=0.0, num_threads=1, checkpoint_dir=str(tmp_path / "c"), rollouts="vllm-server",
        lora=lora,
    )  # fmt: skip
    trainer = tiny_trainer(cfg, tiny_lm_dir, sum_questions(4, plus=1))
    sampler, rollouts, loads = served_by_itself(trainer, cfg, monkeypatch, tmp_path)

    trainer.model.train()
    out = trainer._generate_and_score_completions([{}] * 8)
    assert len(sampler.bodies) == 8 and all(b["max_tokens"] == 6 for b in sampler.bodies)
    assert {b["logprobs"] for b in sampler.bodies} == {0}
    assert all(b["return_token_ids"] for b in sampler.bodies) and "seed" not in sampler.bodies[0]
    assert loads == [tmp_path / "w"] and (tmp_path / "w" / "model.safetensors").is_file()
    # TRL's correction: the served log-probabilities against the trainer's, here the same policy
    mask = out["completion_mask"].bool()
    diff = (out["old_per_token_logps"] - out["sampling_per_token_logps"])[mask]
    assert diff.abs().max() < 1e-3, diff
    ratio = out["importance_sampling_ratio"]
    assert torch.allclose(ratio.expand_as(mask)[mask], torch.ones(int(mask.sum())), atol=1e-3)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, out)
    assert torch.isfinite(loss)
    # a later round of the same step loads nothing; the next step loads once
    trainer._generate_and_score_completions([{}] * 8)
    assert len(loads) == 1
    trainer.state.global_step = 1
    trainer._generate_and_score_completions([{}] * 8)
    assert len(loads) == 2 and rollouts.loaded_step == 1


def test_a_lora_policy_is_served_merged_and_left_as_it_was(tiny_lm_dir: Path) -> None:
    """The server gets the base model's names with each adapted weight plus its adapters'
    delta: what peft's own merge gives, while the policy itself stays unmerged."""
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sparft.training.heldout import served_state

    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    names = set(base.state_dict())
    policy = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
    for name, param in policy.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters change something
            torch.nn.init.normal_(param, std=0.05)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    state = served_state(policy)
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert set(state) == names == set(expected)
    for name in names:
        torch.testing.assert_close(state[name], expected[name], rtol=0, atol=1e-6)
    q_proj = next(n for n in names if n.endswith("q_proj.weight"))
    adapted = f"base_model.model.{q_proj}".replace("q_proj.weight", "q_proj.base_layer.weight")
    assert not torch.equal(state[q_proj], before[adapted])  # the delta is in
    after = policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_replay_keeps_the_samplers_logprobs_and_corrects_fresh_rows_only(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``train.replay`` the buffer keeps the served sampler's log-probabilities as the
    behaviour policy's; a step with replayed rows keeps TRL's ratio on its fresh rows and 1 on
    the replayed ones (their weight pi_old / mu already corrects them)."""
    import numpy as np

    from sparft.training import ReplayConfig

    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=2, num_generations=4, max_completion_length=6,
        beta=0.0, num_threads=1, checkpoint_dir=str(tmp_path / "c"), rollouts="vllm-server",
        replay=ReplayConfig(enabled=True, sigma=0.5),
    )  # fmt: skip
    trainer = tiny_trainer(cfg, tiny_lm_dir, sum_questions(6, plus=2), informative=True)
    sampler = served_by_itself(trainer, cfg, monkeypatch, tmp_path, shift=-0.01)[0]  # a bit off
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    trainer._generate_and_score_completions([{}] * 8)
    stored = [g for g in trainer.buffer.groups if len(g) == 4]
    assert stored, "no informative group to replay"

    def served(row: np.ndarray) -> bool:
        return any(len(lps) == len(row) and np.allclose(lps, row, atol=1e-5)
                   for lps in sampler.logps)  # fmt: skip

    assert all(served(b) for group in stored for b in group.behaviour_logps)
    trainer.state.global_step = 1
    trainer._draw_replay = lambda budget, procs: [(stored[0], np.arange(4))]
    batch = trainer._generate_and_score_completions([{}] * 8)
    mask = batch["completion_mask"].bool()
    ratio = batch["importance_sampling_ratio"].expand_as(mask)
    assert torch.equal(ratio[4:][mask[4:]], torch.ones(int(mask[4:].sum())))
    # TRL's default mode weighs a row by the ratio of its sequence: exp(0.01 per token) here
    assert trainer.vllm_importance_sampling_mode.startswith("sequence")
    expected = torch.exp(0.01 * mask[:4].sum(1, keepdim=True)).expand_as(mask[:4])
    assert torch.allclose(ratio[:4][mask[:4]], expected[mask[:4]], atol=1e-3)
    assert batch["sampling_per_token_logps"].shape == mask.shape
    assert torch.isfinite(trainer.compute_loss(trainer.model, batch))
    assert trainer.curriculum.history[-1]["replay/rows"] == 4


def test_one_server_for_checks_and_rollouts_with_the_logprob_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage builds one served endpoint when the checks or the rollouts use a vLLM
    server, with the log-probability mode only where rollouts need it; the compare flow's
    shared server follows the same rule."""
    from sparft.config import Params
    from sparft.stages.train import served
    from sparft.training.heldout import SERVER_ENV, SharedServer

    monkeypatch.delenv(SERVER_ENV, raising=False)
    monkeypatch.setattr("sparft.models.prepare_model", lambda name: name)

    def params(rollouts: str, checks: str, every: int = 2) -> Params:
        train = {"rollouts": rollouts, "checkpoint_dir": str(tmp_path / "c"),
                 "heldout": {"every": every, "backend": checks}}  # fmt: skip
        return Params.model_validate({"train": train})

    assert served(params("hf", "hf"), "m") is None
    assert served(params("hf", "vllm-server", every=0), "m") is None
    checks_only = served(params("hf", "vllm-server"), "m")
    assert checks_only is not None and "--logprobs-mode" not in checks_only.server_cfg.extra_args
    both = served(params("vllm-server", "hf", every=0), "m")
    assert both is not None and both.server_cfg.extra_args[-2:] == list(LOGPROBS_ARGS)
    assert SharedServer.for_params(params("hf", "hf")) is None
    shared = SharedServer.for_params(params("vllm-server", "hf", every=0))
    assert shared is not None and shared.cfg.extra_args[-2:] == list(LOGPROBS_ARGS)


@pytest.mark.parametrize(
    ("server", "seeded"),
    [
        (None, False),  # a server named by URL: whether it takes seeds is not known
        (VLLMServer("m", ServerConfig(), cpu=False), True),
        (VLLMServer("m", ServerConfig(), cpu=True), True),  # whole prefills: seeds work
        (VLLMServer("m", ServerConfig(extra_args=["--enable-chunked-prefill"]), cpu=True), False),
    ],
)
def test_rollout_requests_carry_seeds_where_the_server_takes_them(
    tmp_path: Path, server: VLLMServer | None, seeded: bool
) -> None:
    checks = FakeChecks(tmp_path)
    checks.owned = None if server is None else SimpleNamespace(server=server)
    rollouts = ServedRollouts(checks, max_tokens=8, temperature=1.0, seed=3)
    bases = [rollouts._seed_base() for _ in range(2)]
    if seeded:
        assert None not in bases and bases[0] != bases[1]  # a new stream at every call
    else:
        assert bases == [None, None]
