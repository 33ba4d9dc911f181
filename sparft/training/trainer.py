"""GRPO training where a curriculum plans every generation batch: TRL's GRPOTrainer, extended
only where it must be.

TRL's own sampler is fed by a prefetching dataloader, so a sampler-based curriculum would pick
one step behind the rewards it learns from, and TRL assumes every prompt has
``num_generations`` rollouts (``rewards.view(-1, num_generations)``). ``CurriculumGRPOTrainer``
instead asks the curriculum for the step's plan in ``_generate_and_score_completions`` (zero
lag): each planned prompt repeated by its own rollout count, the step's rows split evenly over
the processes. TRL then generates and scores as usual, with its group size set to 1 for the
call so that nothing reshapes by a fixed size, and the advantages are recomputed here within
each prompt's own group from the rewards TRL gathered over all processes
(``sparft.training.advantages``, the same formulas as TRL's). The loss is TRL's, untouched: its
normalisation counts completion tokens and rows, not groups. Every process computes the same
plan from the same seed and the same gathered rewards, then takes its own slice, so DDP ranks
never disagree.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any, cast

import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from sparft.curricula import Curriculum, Group
from sparft.curricula.base import load_state, save_state
from sparft.training.advantages import group_advantages
from sparft.training.checkpoints import CHECKPOINT_PREFIX, SETTINGS_FILE
from sparft.training.replay import ReplayBuffer, ReplayConfig, StoredGroup


def _pad(rows: Sequence[torch.Tensor], value: float, side: str, width: int) -> torch.Tensor:
    """Rows of unequal length as one (rows, width) tensor, padded on ``side``."""
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        if side == "left":
            out[i, width - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out


# TRL's per-row batch tensors a step assembled from several generation rounds carries: the side
# each is padded on, and the padding (None: the tokenizer's pad token)
ROW_KEYS: dict[str, tuple[str, float | None]] = {
    "prompt_ids": ("left", None),
    "prompt_mask": ("left", 0),
    "completion_ids": ("right", None),
    "completion_mask": ("right", 0),
    "old_per_token_logps": ("right", 0.0),
    "sampling_per_token_logps": ("right", 0.0),
    "ref_per_token_logps": ("right", 0.0),
    "importance_sampling_ratio": ("right", 1.0),  # a served sampler's correction (rollouts.py)
    "tool_mask": ("right", 1),
}


class CurriculumGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation batches, group sizes included, come from a ``Curriculum``,
    optionally mixed with replayed groups (``sparft.training.replay``)."""

    def __init__(
        self,
        *args: Any,
        curriculum: Curriculum,
        solve_reward: str,
        replay: ReplayConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.curriculum = curriculum
        self._rows = {str(row["id"]): row for row in cast(Any, self.train_dataset)}
        self._solve_index = self.reward_func_names.index(solve_reward)
        self._gathered: torch.Tensor | None = None
        self._generation_seconds = 0.0
        self._rollout_seconds = 0.0
        self.replay = replay if replay is not None and replay.enabled else None
        self.buffer = ReplayBuffer(self.replay.capacity) if self.replay else None
        self._replay_rng = np.random.default_rng(self.args.seed)
        corrected = self.use_vllm and self.vllm_importance_sampling_correction
        if self.replay and (self.tools or corrected):
            raise NotImplementedError(
                "train.replay with tools or vLLM importance-sampling correction: not done"
            )
        curriculum.bind_rollout(self._reference_rollout)
        # what the run's settings hash to: saved in each checkpoint, so that train.resume: auto
        # continues only a run of the same settings (set by whoever knows the settings)
        self.settings_fingerprint: str | None = None

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> torch.Tensor:
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered = rewards
        return rewards

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        assert self.model is not None
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        started = perf_counter()
        self._rollout_seconds = 0.0
        budget = int(cast(GRPOConfig, self.args).generation_batch_size or 0)
        procs = self.accelerator.num_processes
        replayed = self._draw_replay(budget, procs)
        fresh = budget - sum(len(rows) for _, rows in replayed)
        prompts_per_step = budget // int(self.num_generations or 1)
        n_prompts = max(1, min(fresh, round(prompts_per_step * fresh / budget)))
        plan = self.curriculum.plan(n_prompts, fresh)
        own_seconds = perf_counter() - started - self._rollout_seconds
        rounds: list[tuple[list[Any], dict[str, Any], torch.Tensor]] = []
        groups: list[Group] = []
        while plan:  # more than one round only for a curriculum that filters groups
            output, gathered = self._generate_round(plan)
            rounds.append((plan, output, gathered))
            groups += self._groups(plan, gathered, self._advantages(gathered, plan)[0])
            plan = self.curriculum.more(groups)
        scored = perf_counter()
        kept = self.curriculum.keep(groups)
        if len(rounds) == 1 and len(kept) == len(groups):
            plan, output, gathered = rounds[0]
        else:
            if self.buffer is not None:
                raise NotImplementedError("train.replay with a curriculum that filters: not done")
            output, gathered, plan = self._assemble(rounds, kept)
        advantages, zero_std = self._advantages(gathered, plan)
        per_rank = fresh // procs
        start = self.accelerator.process_index * per_rank
        output["advantages"] = advantages[start : start + per_rank]
        metrics = self._metrics["train"]
        metrics["frac_reward_zero_std"][-1] = zero_std.float().mean().item()
        # TRL's completion log keeps the last round's rows: show their advantages beside them
        last = advantages if len(rounds) == 1 else self._advantages(rounds[-1][2], rounds[-1][0])[0]
        logged = cast(Any, self._logs)["advantages"]
        logged.clear()
        logged.extend(last.tolist())
        extra: dict[str, Any] = {}
        if self.buffer is not None:
            output, extra = self._with_replay(output, plan, gathered, replayed, start)
        record = self.curriculum.observe(groups, extra)
        elapsed = perf_counter() - started
        self._generation_seconds += elapsed
        for key in (
            "solve_rate", "effective_prompt_ratio", "gradient_rollout_share", "unique_seen",
            "rollouts_total",
        ):  # fmt: skip
            metrics[f"curriculum/{key}"].append(float(record[key]))
        if "gen_batches" in record:
            metrics["curriculum/gen_batches"].append(float(record["gen_batches"]))
        if "arm" in record:
            metrics["curriculum/arm"].append(float(record["arm"]))
        metrics["curriculum/max_group"].append(float(record["max_group"]))
        for key, value in extra.items():
            metrics[key].append(float(value))
        for key, value in self.curriculum.metrics().items():
            metrics[f"curriculum/{key}"].append(value)
        metrics["time/generation_s"].append(elapsed)
        metrics["time/reference_rollouts_s"].append(self._rollout_seconds)
        metrics["time/curriculum_s"].append(own_seconds + perf_counter() - scored)
        return output

    def _generate_round(self, plan: Sequence[Any]) -> tuple[dict[str, Any], torch.Tensor]:
        """Generate and score one plan's rows (this process's share); TRL's output for them and
        the rewards of every process's rows."""
        rows = [self._rows[a.prompt_id] for a in plan for _ in range(a.rollouts)]
        per_rank = len(rows) // self.accelerator.num_processes
        start = self.accelerator.process_index * per_rank
        local = [dict(r) for r in rows[start : start + per_rank]]
        self._gathered = None
        group = self.num_generations
        self.num_generations = 1  # nothing in TRL may reshape rewards by a fixed group size
        try:
            output = super()._generate_and_score_completions(local)
        finally:
            self.num_generations = group
        if self._gathered is None:
            raise RuntimeError("GRPOTrainer did not compute rewards through _calculate_rewards")
        return output, self._gathered

    def _advantages(
        self, gathered: torch.Tensor, plan: Sequence[Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return group_advantages(
            gathered,
            [a.rollouts for a in plan],
            self.reward_weights,
            self.scale_rewards,
            self.multi_objective_aggregation,
        )

    def _assemble(
        self, rounds: Sequence[tuple[list[Any], dict[str, Any], torch.Tensor]], kept: list[int]
    ) -> tuple[dict[str, Any], torch.Tensor, list[Any]]:
        """The step's batch from the kept groups of several generation rounds: every process's
        rows gathered, the kept ones in order, this process's share padded to common widths.
        Returns TRL's batch (advantages still to set), the kept rows' rewards and their plan."""
        unsupported = {k for _, output, _ in rounds for k in output} - set(ROW_KEYS) - {
            "advantages", "num_items_in_batch"
        }  # fmt: skip
        if unsupported:
            raise NotImplementedError(f"a curriculum that filters, with {sorted(unsupported)}")
        procs = self.accelerator.num_processes
        spans: list[tuple[Any, list[dict[str, np.ndarray]], torch.Tensor]] = []
        rows: list[dict[str, np.ndarray]] = []
        rewards: list[torch.Tensor] = []
        plan: list[Any] = []
        for part, output, gathered in rounds:
            local = [
                {k: output[k][i].cpu().numpy() for k in ROW_KEYS if k in output}
                for i in range(output["completion_ids"].size(0))
            ]
            every = gather_object(local) if procs > 1 else local
            at = 0
            for a in part:
                spans.append((a, every[at : at + a.rollouts], gathered[at : at + a.rollouts]))
                at += a.rollouts
        for i in kept:
            a, group_rows, group_rewards = spans[i]
            plan.append(a)
            rows.extend(group_rows)
            rewards.append(group_rewards)
        per_rank = len(rows) // procs
        mine = rows[self.accelerator.process_index * per_rank :][:per_rank]
        device = rounds[0][1]["completion_ids"].device
        batch: dict[str, Any] = {}
        for key, (side, fill) in ROW_KEYS.items():
            if key in mine[0]:
                value = self._tokenizer.pad_token_id if fill is None else fill
                tensors = [torch.as_tensor(r[key]) for r in mine]
                width = max(len(t) for t in tensors)
                batch[key] = _pad(tensors, value, side, width).to(device)
        loss_mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return batch, torch.cat(rewards), plan

    def _groups(
        self, plan: Sequence[Any], gathered: torch.Tensor, advantages: torch.Tensor
    ) -> list[Group]:
        """One ``Group`` per planned prompt from the gathered rewards and the advantages."""
        total, solved = self._totals(gathered)
        adv = advantages.detach().cpu().numpy()
        groups, at = [], 0
        for a in plan:
            span = slice(at, at + a.rollouts)
            groups.append(Group(a.prompt_id, total[span], solved[span], adv[span]))
            at += a.rollouts
        return groups

    def _totals(self, rewards_per_func: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Weighted total reward (NaN where unscorable) and correctness of every row."""
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        total = (rewards_per_func * weights).nansum(dim=1)
        total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        solved = torch.nan_to_num(rewards_per_func[:, self._solve_index], nan=0.0)
        return total.cpu().numpy(), solved.cpu().numpy()

    # --- reference rollouts (DOTS) ------------------------------------------------------------

    def _reference_rollout(self, ids: list[str], n: int, temperature: float) -> list[np.ndarray]:
        """Each prompt's ``n`` correctness values under the current policy, sampled at
        ``temperature``; the rows are shared out over the processes and gathered back."""
        began = perf_counter()
        if isinstance(self.reward_funcs[self._solve_index], torch.nn.Module | str):
            raise NotImplementedError("reference rollouts with a reward model: not done")
        func = cast(Callable[..., list[float | None]], self.reward_funcs[self._solve_index])
        rows = [self._rows[i] for i in ids for _ in range(n)]
        procs, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = math.ceil(len(rows) / procs)
        mine = rows[rank * share : (rank + 1) * share]
        texts = self._sample([r["prompt"] for r in mine], temperature)
        columns = {k: [r[k] for r in mine] for k in (mine[0] if mine else {}) if k != "prompt"}
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        values = func(
            prompts=[r["prompt"] for r in mine],
            completions=completions,
            completion_ids=None,
            trainer_state=self.state,
            **columns,
        ) if mine else []  # fmt: skip
        local = [0.0 if v is None else float(v) for v in values]
        flat = gather_object(local) if procs > 1 else local
        self._rollout_seconds += perf_counter() - began
        return [np.asarray(flat[i * n : (i + 1) * n], dtype=float) for i in range(len(ids))]

    def _sample(self, prompts: list[Any], temperature: float) -> list[str]:
        tokenizer = cast(PreTrainedTokenizerBase, self.processing_class)
        texts: list[str] = []
        chunk = self.args.per_device_train_batch_size
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                for at in range(0, len(prompts), chunk):
                    enc = cast(Any, tokenizer.apply_chat_template)(
                        prompts[at : at + chunk], add_generation_prompt=True, tokenize=True,
                        padding=True, return_tensors="pt", return_dict=True,
                    ).to(self.accelerator.device)  # fmt: skip
                    with torch.no_grad():
                        out = model.generate(
                            **enc, do_sample=True, temperature=temperature, top_p=1.0,
                            max_new_tokens=self.max_completion_length,
                            pad_token_id=tokenizer.pad_token_id,
                        )  # fmt: skip
                    new = out[:, enc["input_ids"].shape[1] :]
                    texts += tokenizer.batch_decode(new, skip_special_tokens=True)
            finally:
                model.train(was_training)
        return texts

    # --- rollout replay -----------------------------------------------------------------------

    def _draw_replay(self, budget: int, procs: int) -> list[tuple[StoredGroup, np.ndarray]]:
        """Groups to replay this step and the rows of each: at most the budget's non-fresh
        share, the total trimmed to a multiple of the process count."""
        if self.buffer is None or not len(self.buffer) or self.replay is None:
            return []
        allowance = budget - math.ceil(self.replay.sigma * budget)
        groups = self.buffer.sample(allowance, self._replay_rng)
        picked = [(g, np.arange(len(g))) for g in groups]
        excess = sum(len(g) for g in groups) % procs
        while excess and picked:
            group, rows = picked[-1]
            cut = min(excess, len(rows))
            picked[-1] = (group, rows[: len(rows) - cut])
            excess -= cut
            if not len(picked[-1][1]):
                picked.pop()
        return picked

    def _logps(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-token log-probabilities of the completions under the current policy."""
        with torch.no_grad():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([prompt_mask, completion_mask], dim=1),
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps

    def _stored_groups(
        self, output: dict[str, Any], plan: Sequence[Any], gathered: torch.Tensor
    ) -> list[StoredGroup]:
        """This step's fresh groups as the buffer keeps them, from every process's rows. The
        behaviour policy's log-probabilities are the sampler's: a vLLM server's when it sampled
        (``train.rollouts: vllm-server``), else the trainer's at generation time."""
        behaviour = output.get("sampling_per_token_logps", output.get("old_per_token_logps"))
        if behaviour is None:
            behaviour = self._logps(
                output["prompt_ids"], output["prompt_mask"],
                output["completion_ids"], output["completion_mask"],
            )  # fmt: skip
        ref = output.get("ref_per_token_logps")
        local = []
        for i in range(output["completion_ids"].size(0)):
            pm, cm = output["prompt_mask"][i].bool(), output["completion_mask"][i].bool()
            local.append(
                (
                    output["prompt_ids"][i][pm].cpu().numpy(),
                    output["completion_ids"][i][cm].cpu().numpy(),
                    behaviour[i][cm].float().cpu().numpy(),
                    None if ref is None else ref[i][cm].float().cpu().numpy(),
                )
            )
        rows = gather_object(local) if self.accelerator.num_processes > 1 else local
        rewards = gathered.detach().cpu().numpy()
        total, solved = self._totals(gathered)
        groups, at = [], 0
        for a in plan:
            span = range(at, at + a.rollouts)
            groups.append(
                StoredGroup(
                    prompt_id=a.prompt_id,
                    step=self.curriculum.step,
                    prompt_ids=[rows[j][0] for j in span],
                    completion_ids=[rows[j][1] for j in span],
                    rewards=rewards[at : at + a.rollouts],
                    total=total[at : at + a.rollouts],
                    correct=solved[at : at + a.rollouts],
                    behaviour_logps=[rows[j][2] for j in span],
                    ref_logps=None if ref is None else [cast(np.ndarray, rows[j][3]) for j in span],
                )
            )
            at += a.rollouts
        return groups

    def _with_replay(
        self,
        output: dict[str, Any],
        plan: Sequence[Any],
        gathered: torch.Tensor,
        replayed: list[tuple[StoredGroup, np.ndarray]],
        start: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The fresh batch with this process's share of the replayed rows appended; advantages
        become per-token ``A * pi_old / mu`` (1 for fresh rows). Under a served sampler the
        fresh rows keep TRL's importance-sampling ratio and replayed rows get 1: their weight
        already divides by the sampler's probability. The step's fresh groups then enter the
        buffer (after the draw, so a group is never replayed in its own step)."""
        assert self.buffer is not None
        unsupported = {"pixel_values", "tool_mask"} & set(output)
        if unsupported:
            raise NotImplementedError(f"train.replay with {sorted(unsupported)}: not done")
        stored = self._stored_groups(output, plan, gathered)
        procs, rank = self.accelerator.num_processes, self.accelerator.process_index
        flat = [(g, int(r)) for g, rows in replayed for r in rows]
        share = len(flat) // procs
        mine = flat[rank * share : (rank + 1) * share]
        extra = {
            "replay/rows": float(len(flat)),
            "replay/groups": float(len(replayed)),
            "replay/buffer_groups": float(len(self.buffer)),
        }
        if not mine:
            self.buffer.add(stored)
            return output, extra
        sizes = [len(g) for g, _ in replayed]
        rewards = torch.tensor(
            np.concatenate([g.rewards for g, _ in replayed]), dtype=torch.float32
        )
        adv_all, _ = group_advantages(
            rewards, sizes, self.reward_weights, self.scale_rewards,
            self.multi_objective_aggregation,
        )  # fmt: skip
        offsets = dict(zip([id(g) for g, _ in replayed], np.cumsum([0, *sizes[:-1]]), strict=True))
        adv = torch.stack([adv_all[offsets[id(g)] + r] for g, r in mine])
        device = output["completion_ids"].device
        pad = self._tokenizer.pad_token_id
        tensors = {
            "p": [torch.as_tensor(g.prompt_ids[r]) for g, r in mine],
            "c": [torch.as_tensor(g.completion_ids[r]) for g, r in mine],
            "mu": [torch.as_tensor(g.behaviour_logps[r]) for g, r in mine],
        }
        width_p = max(output["prompt_ids"].size(1), *(len(t) for t in tensors["p"]))
        width_c = max(output["completion_ids"].size(1), *(len(t) for t in tensors["c"]))

        def widen(t: torch.Tensor, value: float, side: str, width: int) -> torch.Tensor:
            return _pad(list(t.cpu()), value, side, width).to(device)

        prompt_ids = torch.cat([widen(output["prompt_ids"], pad, "left", width_p),
                                _pad(tensors["p"], pad, "left", width_p).to(device)])  # fmt: skip
        prompt_mask = torch.cat([widen(output["prompt_mask"], 0, "left", width_p),
                                 _pad([torch.ones_like(t) for t in tensors["p"]], 0, "left",
                                      width_p).to(device)])  # fmt: skip
        replay_c = _pad(tensors["c"], pad, "right", width_c).to(device)
        replay_cm = _pad([torch.ones_like(t) for t in tensors["c"]], 0, "right", width_c).to(device)
        replay_pm = prompt_mask[-len(mine) :]
        pi_old = self._logps(prompt_ids[-len(mine) :], replay_pm, replay_c, replay_cm)
        mu = _pad([t.float() for t in tensors["mu"]], 0.0, "right", width_c).to(device)
        weight = torch.exp(pi_old - mu) * replay_cm
        n_fresh = output["completion_ids"].size(0)
        fresh_adv = output["advantages"].unsqueeze(1).expand(n_fresh, width_c)
        merged = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": torch.cat(
                [widen(output["completion_ids"], pad, "right", width_c), replay_c]
            ),
            "completion_mask": torch.cat(
                [widen(output["completion_mask"], 0, "right", width_c), replay_cm]
            ),
            "advantages": torch.cat([fresh_adv, adv.to(device).unsqueeze(1) * weight]),
        }
        mask = merged["completion_mask"]
        merged["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        if "old_per_token_logps" in output:
            merged["old_per_token_logps"] = torch.cat(
                [widen(output["old_per_token_logps"], 0.0, "right", width_c), pi_old]
            )
        if "importance_sampling_ratio" in output:
            ratio = output["importance_sampling_ratio"]
            if self.vllm_importance_sampling_mode.startswith("sequence"):  # one per row
                merged["importance_sampling_ratio"] = torch.cat(
                    [ratio, ratio.new_ones(len(mine), 1)]
                )
            else:
                merged["importance_sampling_ratio"] = torch.cat(
                    [widen(ratio, 1.0, "right", width_c), torch.ones_like(mu)]
                )
            merged["sampling_per_token_logps"] = torch.cat(
                [widen(output["sampling_per_token_logps"], 0.0, "right", width_c), mu]
            )
        if "ref_per_token_logps" in output:
            stored_ref = [torch.as_tensor((g.ref_logps or [])[r]).float() for g, r in mine]
            ref = _pad(stored_ref, 0.0, "right", width_c).to(device)
            merged["ref_per_token_logps"] = torch.cat(
                [widen(output["ref_per_token_logps"], 0.0, "right", width_c), ref]
            )
        live = weight[replay_cm.bool()]
        extra["replay/mean_weight"] = float(live.mean()) if live.numel() else 1.0
        self.buffer.add(stored)
        return merged, extra

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        before = self._generation_seconds
        started = perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        spent = perf_counter() - started - (self._generation_seconds - before)
        self._metrics["train"]["time/update_s"].append(spent)
        return loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # Written before TRL's files, whose trainer_state.json marks the checkpoint complete.
        folder = Path(self._get_output_dir(trial=trial))
        folder = folder / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.args.should_save:
            state = {
                "curriculum": self.curriculum.state_dict(),
                "replay": self.buffer.state_dict() if self.buffer is not None else None,
                "replay_rng": self._replay_rng.bit_generator.state,
            }
            save_state(state, folder)
            if self.settings_fingerprint is not None:
                payload = json.dumps({"fingerprint": self.settings_fingerprint})
                (folder / SETTINGS_FILE).write_text(payload)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint: Any) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            state = load_state(checkpoint)
            self.curriculum.load_state_dict(state["curriculum"])
            if self.buffer is not None and state.get("replay") is not None:
                self.buffer.load_state_dict(state["replay"])
            self._replay_rng.bit_generator.state = state["replay_rng"]


def quiet_known_warnings() -> None:
    """Silence what is known and harmless: TRL 1.16 turns checkpointing off and on around
    every generation through transformers' old method names, and each call warns that the
    name goes away in transformers 6. Nothing else is filtered."""
    warnings.filterwarnings(
        "ignore",
        message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be "
        r"removed in v6",
        category=FutureWarning,
    )


quiet_known_warnings()
