"""The training engine shared by training, retraining and every unlearning method.

A method is an :class:`~forgetmi.engine.objective.Objective`: the streams of data it draws and
the loss it computes on a step's batches. The engine owns everything else: device placement,
Accelerate/DeepSpeed, mixed precision, accumulation, clipping, the LR schedule, deterministic
sharded batch plans, checkpoint/resume (:class:`~forgetmi.engine.state.LoopState`), early
stopping, logging and timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from forgetmi.data.batches import batch_loader, to_device
from forgetmi.engine import checkpoint as ckpt
from forgetmi.engine.distributed import (autocast, broadcast_buffers, fill_deepspeed_config,
                                         is_deepspeed, offloads_optimizer, place_buffers,
                                         zero_stage)
from forgetmi.engine.objective import Objective, Stream
from forgetmi.engine.optim import build_optimizer, build_scheduler
from forgetmi.engine.sampling import BatchPlan
from forgetmi.engine.state import LoopState
from forgetmi.engine.trainable import (check_gradients, freeze_unreached, log_trainable,
                                       trainable_record)
from forgetmi.errors import ForgetMIError
from forgetmi.utils.atomic import write_json
from forgetmi.utils.progress import progress
from forgetmi.utils.run_folder import settings_hash

logger = logging.getLogger("forgetmi.engine")


class NonFiniteLossError(ForgetMIError):
    """The loss became NaN or infinite; the last checkpoint is left untouched."""


class SimulatedCrash(ForgetMIError):
    """Raised by ``train.stop_after`` to test resumption: the run stops without saving."""


# What the checkpoint's trainer state holds beside the LoopState's own entries.
BESIDE_STATE = ("scheduler", "objective")


def _tally(sums: dict[str, float], counts: dict[str, int], terms: dict[str, float]) -> None:
    """Add one micro-step's loss terms to running sums and counts per term: a method that
    alternates phases logs some terms only on some steps, and each term is averaged over the
    steps that computed it."""
    for k, v in terms.items():
        sums[k] = sums.get(k, 0.0) + v
        counts[k] = counts.get(k, 0) + 1


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 05 min``: an ETA as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _short(value, width: int = 40) -> str:
    """A setting's value as an error line shows it: its repr, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _means(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Each term's mean over the steps that computed it."""
    return {k: v / counts[k] for k, v in sums.items()}


@dataclass
class _Window:
    """The loss terms since the last logged update (not checkpointed: a log line only)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return _means(self.sums, self.counts)

    def clear(self) -> None:
        self.sums, self.counts = {}, {}


class Engine:
    def __init__(self, accelerator, model: torch.nn.Module, objective: Objective, train,
                 output_dir: Path, seed: int, tracker,
                 evaluate: Callable[[torch.nn.Module], dict] | None = None,
                 save_model: Callable[[dict, Path], None] | None = None, job: str | None = None,
                 settings: dict | None = None):
        self.accelerator = accelerator
        self.job = job   # train | retrain | unlearn, recorded for the evaluation
        # Everything the run computes with (run_folder.training_settings): a checkpoint of
        # other settings is not resumed.
        self.settings = settings
        self.objective = objective
        self.train = train
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.tracker = tracker
        self.evaluate = evaluate
        self.save_model = save_model
        self.checkpoint_dir = self.output_dir / "checkpoints"

        streams = objective.streams()
        primaries = [s for s in streams if s.primary]
        if len(primaries) != 1:
            raise ValueError("an objective needs exactly one primary stream")
        names = {s.name: s for s in streams}
        for s in streams:
            if s.follows is not None and (s.follows not in names or
                                          len(names[s.follows].dataset) != len(s.dataset)):
                raise ValueError(f"stream {s.name!r} follows {s.follows!r}, which must be another "
                                 "stream over a dataset of the same length")
        leads = [s for s in streams if s.lead_epochs]
        if len(leads) > 1 or any(s.primary or s.follows or t.follows == s.name
                                 for s in leads for t in streams):
            raise ValueError("an objective may have one lead stream: not primary, not a copy, "
                             "and not copied")
        self.streams: list[Stream] = streams
        world, rank = accelerator.num_processes, accelerator.process_index
        self.plans = {s.name: BatchPlan(len(s.dataset), s.batch_size, world, rank, seed, s.name,
                                        s.shuffle) for s in streams}
        self.primary = primaries[0]
        self.lead: Stream | None = leads[0] if leads else None
        self.steps_per_epoch = self.plans[self.primary.name].steps_per_epoch(train.grad_accum)
        # Micro-steps of one pass over each stream (a method may schedule phases with them).
        objective.plan({s.name: self.plans[s.name].steps_per_epoch(train.grad_accum)
                        for s in streams})
        if self.lead is not None:   # fail now, not at the first lead epoch
            try:
                self.plans[self.lead.name].once(0, self.lead_steps(0), self.lead_steps(0))
            except ValueError as err:
                raise ForgetMIError(f"{err}: lower train.grad_accum or the processes") from None
        self.total_updates = sum(map(self.epoch_steps, range(train.epochs))) // train.grad_accum
        if train.max_steps:
            self.total_updates = min(self.total_updates, train.max_steps)

        fill_deepspeed_config(accelerator, self.primary.batch_size, train.grad_accum,
                              train.max_grad_norm)
        objective.prepare_model(model)
        freeze_unreached(model, objective.reads)
        self.trainable = trainable_record(model, objective.name)
        if accelerator.is_main_process:
            log_trainable(self.trainable)
        optimizer = build_optimizer(model, train.lr, train.weight_decay,
                                    cpu_offload=offloads_optimizer(accelerator),
                                    text_lr=train.text_lr, fused=train.fused_optimizer)
        # The schedule is stepped by hand once per optimizer update (Accelerate's wrapper would
        # step it once per process), so it is kept out of prepare().
        self.scheduler = build_scheduler(optimizer, train.scheduler, self.total_updates,
                                         train.warmup_ratio)
        place_buffers(accelerator, model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        objective.setup(accelerator)

    # -- helpers -----------------------------------------------------------------------------
    def lead_steps(self, epoch: int) -> int:
        """Micro-steps of ``epoch`` that draw the lead stream alone (they open the epoch)."""
        if self.lead is None or epoch >= self.lead.lead_epochs:
            return 0
        return self.objective.steps_per_pass[self.lead.name]

    def epoch_steps(self, epoch: int) -> int:
        return self.lead_steps(epoch) + self.steps_per_epoch

    def _loaders(self, epoch: int, start: int) -> dict:
        """This rank's loaders for the rest of ``epoch``, resuming at micro-step ``start``."""
        loaders = {}
        lead = self.lead_steps(epoch)
        # The other streams count only the steps that draw them, so they lose no batch.
        begun = max(0, start - lead)
        first_global = epoch * self.steps_per_epoch + begun
        planned = {}
        for stream in sorted(self.streams, key=lambda s: s.follows is not None):
            plan = self.plans[stream.name]
            if stream.follows is not None:
                batches = planned[stream.follows]
            elif stream is self.lead:
                if start >= lead:
                    continue
                batches = plan.once(epoch, lead, start)
            elif stream.primary:
                batches = plan.epoch(epoch, self.steps_per_epoch, begun)
            else:
                batches = plan.steps(first_global, self.steps_per_epoch - begun)
            planned[stream.name] = batches
            loaders[stream.name] = batch_loader(stream.dataset, batches, self.train.num_workers,
                                                seed=self.seed + epoch)
        return loaders

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], device=self.accelerator.device,
                              dtype=torch.float64)
        tensor = self.accelerator.reduce(tensor, reduction="mean")
        return dict(zip(keys, tensor.tolist()))

    def _grad_norm(self, clip_result) -> float | None:
        if clip_result is not None:
            return float(clip_result)
        if is_deepspeed(self.accelerator):
            norm = self.model.get_global_grad_norm()
            return None if norm is None else float(norm)
        return None

    def _checkpoint(self, state: LoopState) -> None:
        # LambdaLR's state holds only numbers (its lambda is a closure, saved as None).
        scheduler_state = self.scheduler.state_dict()
        ckpt.save_latest(self.accelerator, self.checkpoint_dir,
                         {**state.to_dict(), "scheduler": scheduler_state,
                          "objective": self.objective.state_dict()},
                         keep=max(self.train.keep_checkpoints, 1))

    def _ranks_agree(self) -> bool | None:
        """Whether every rank ends with the same weights (None under ZeRO-3, which shards them).

        Catches runs whose processes never joined one group and trained apart.
        """
        if zero_stage(self.accelerator) == 3:
            return None
        digest = hashlib.sha256()
        for _, param in sorted(self.accelerator.unwrap_model(self.model).state_dict().items()):
            digest.update(param.detach().float().cpu().numpy().tobytes())
        mine = torch.tensor(list(digest.digest()[:8]), dtype=torch.int64,
                            device=self.accelerator.device)
        every = self.accelerator.gather(mine).reshape(self.accelerator.num_processes, -1)
        agree = bool((every == every[0]).all())
        if not agree:
            logger.error("weights differ across ranks: the processes did not train together")
        return agree

    def _save_best(self, tag: str) -> None:
        if self.save_model is None:
            return
        state = self.accelerator.get_state_dict(self.model)  # collective under ZeRO-3
        if self.accelerator.is_main_process:
            self.save_model(state, self.output_dir / tag)
        self.accelerator.wait_for_everyone()

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, state: LoopState | None = None) -> LoopState:
        """Train to the end, resuming from the latest checkpoint when ``train.resume``; return
        the final loop state. ``state``: what :meth:`resume` returned, if the caller called it."""
        state = self.resume() if state is None else state
        if state.done:
            logger.info("run already finished in %s; nothing to do", self.output_dir)
            return state
        if self.accelerator.is_main_process:
            write_json(self.output_dir / "trainable.json", self.trainable)
        self.objective.train_mode(self.model)
        window = _Window()   # runs across epochs: a log line may span an epoch's end
        stop = False
        self._pace = (time.perf_counter(), state.epoch)   # for the progress lines' ETA
        while state.epoch < self.train.epochs and not stop:
            stop = self._run_epoch(state, window)
        self._finish(state)
        return state

    def resume(self) -> LoopState:
        """A fresh state; or, resuming, the latest checkpoint's, its model, optimizer, RNG,
        schedule and objective state restored. Writes nothing: a checkpoint of other settings
        is refused here, before the run has touched its folder."""
        fingerprint = self._fingerprint()
        state = LoopState(fingerprint=fingerprint, settings=self.settings)
        if self.train.resume:
            resumed = ckpt.load_latest(self.accelerator, self.checkpoint_dir,
                                       check=lambda saved, folder:
                                       self._check_checkpoint(saved, state, folder))
            if resumed is not None:
                # The schedule is a pure function of its step count: restored from JSON rather
                # than from a pickle.
                self.scheduler.load_state_dict(resumed.pop("scheduler"))
                self.objective.load_state_dict(resumed.pop("objective", {}))
                # Saved entries over the fresh ones (a checkpoint without fingerprint keeps
                # this run's).
                state = LoopState.from_dict({**state.to_dict(), **resumed}, self.checkpoint_dir)
        return state

    def _run_epoch(self, state: LoopState, window: _Window) -> bool:
        """The rest of epoch ``state.epoch`` from micro-step ``state.step``, then its
        bookkeeping, validation and checkpoint; whether training stops there."""
        acc = self.accelerator
        epoch = state.epoch
        loaders = self._loaders(epoch, state.step)
        iterators = {name: iter(loader) for name, loader in loaders.items()}
        epoch_steps, lead = self.epoch_steps(epoch), self.lead_steps(epoch)
        bar = progress(total=epoch_steps, initial=state.step, desc=f"epoch {epoch}", leave=False)
        stop = False
        tic = time.perf_counter()
        for micro in range(state.step, epoch_steps):
            drawn = ([self.lead.name] if micro < lead else
                     [s.name for s in self.streams if s is not self.lead])
            batch = {name: to_device(next(iterators[name]), acc.device) for name in drawn}
            self.objective.at_step(epoch, micro)
            loss, terms, clip, skipped = self._micro_step(state, epoch, micro, batch)
            if micro < lead:
                state.lead_steps += 1
            else:
                state.other_steps += 1
            bar.update(1)
            terms = {"loss": float(loss.detach()), **terms}
            _tally(window.sums, window.counts, terms)
            _tally(state.epoch_sums, state.epoch_counts, terms)
            state.step = micro + 1
            if not acc.sync_gradients:
                continue
            stop = self._after_update(state, epoch, clip, skipped, window, bar)
            if state.updates % self.train.checkpoint_every == 0 and not stop:
                state.train_seconds += time.perf_counter() - tic
                tic = time.perf_counter()
                self._checkpoint(state)
            if stop:
                break
        bar.close()
        state.train_seconds += time.perf_counter() - tic
        if state.step >= epoch_steps:
            self._close_epoch(state, epoch)
        stop = self._end_of_epoch(epoch, state) or stop
        self._checkpoint(state)
        return stop

    def _micro_step(self, state: LoopState, epoch: int, micro: int,
                    batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, float], object, int]:
        """One micro-step: the loss (refused on every rank if any rank's is not finite),
        backward and, when the accumulation syncs, clipping and the optimizer step.

        Returns the loss, its terms, the clipping result (None when not clipped) and
        DeepSpeed's count of skipped steps before this backward()."""
        acc, train = self.accelerator, self.train
        with acc.accumulate(self.model):
            with autocast(acc):
                loss, terms = self.objective.compute_loss(self.model, batch)
            bad = acc.reduce((~torch.isfinite(loss.detach())).float().reshape(1), "sum")
            if bad.item() > 0:
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {micro} "
                    f"({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                    "the last checkpoint is intact; lower the learning rate or use fp32")
            # DeepSpeed steps inside backward(); its counter tells whether it skipped.
            skipped = getattr(self.model, "skipped_steps", 0)
            acc.backward(loss)
            if acc.sync_gradients and state.updates == 0 and not is_deepspeed(acc):
                # DeepSpeed keeps gradients in its own buffers, not in .grad.
                check_gradients(acc.unwrap_model(self.model), self.objective.name)
            clip = None
            if acc.sync_gradients and train.max_grad_norm > 0 and not is_deepspeed(acc):
                clip = acc.clip_grad_norm_(self.model.parameters(), train.max_grad_norm)
                # fp16's loss scaler skips such steps itself; elsewhere they would
                # write NaN into the weights (the norm is the same on every rank).
                if acc.mixed_precision != "fp16" and not torch.isfinite(clip):
                    raise NonFiniteLossError(
                        f"non-finite gradients at epoch {epoch}, step {micro} with "
                        f"precision {acc.mixed_precision}; the last checkpoint is "
                        "intact (bf16 convolutions on CPU are known to do this at "
                        "small image sizes: use fp32 there)")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss, terms, clip, skipped

    def _after_update(self, state: LoopState, epoch: int, clip, skipped: int, window: _Window,
                      bar) -> bool:
        """An optimizer update is done: advance the schedule and the count, log every
        ``train.log_every`` updates, and apply the step limits; whether ``train.max_steps``
        stops training here (``train.stop_after`` raises :class:`SimulatedCrash`)."""
        train = self.train
        # fp16's loss scaler skips updates whose gradients overflowed (DeepSpeed counts
        # them; Accelerate's optimizer says so): the schedule does not advance on them.
        if (getattr(self.model, "skipped_steps", 0) > skipped
                or getattr(self.optimizer, "step_was_skipped", False)):
            state.skipped_updates += 1
            logger.warning("update %d skipped (fp16 gradient overflow)", state.updates + 1)
        else:
            self.scheduler.step()
        state.updates += 1
        updates = state.updates
        grad_norm = self._grad_norm(clip)
        if updates % train.log_every == 0:
            logged = self._reduce_mean(window.means())
            logged.update(lr=self.scheduler.get_last_lr()[0], epoch=epoch)
            if grad_norm is not None:
                logged["grad_norm"] = grad_norm
            self.tracker.log({f"train/{k}": v for k, v in logged.items()}, updates)
            bar.set_postfix(loss=f"{logged['loss']:.4f}")
            window.clear()
        stop = bool(train.max_steps and updates >= train.max_steps)
        if train.stop_after and updates >= train.stop_after:
            bar.close()
            raise SimulatedCrash(f"stopped on purpose after {updates} updates")
        return stop

    def _close_epoch(self, state: LoopState, epoch: int) -> None:
        """Epoch ``epoch`` ran whole: move on to the next, log its mean loss terms (summed in
        the checkpointed state, so a resumed epoch counts whole) and tell the objective."""
        state.epoch, state.step = epoch + 1, 0
        if state.epoch_counts:
            means = self._reduce_mean(_means(state.epoch_sums, state.epoch_counts))
            self.tracker.log({f"epoch/{k}": v for k, v in means.items()} | {"epoch": epoch},
                             state.updates)
            self.objective.end_epoch(epoch, means)
            self._log_progress(epoch, means)
        state.epoch_sums, state.epoch_counts = {}, {}

    def _log_progress(self, epoch: int, means: dict) -> None:
        """``epoch k/N: loss …, s/epoch, ETA``: one line per epoch from rank 0, so a log file or
        a Slurm log shows how far a run is (the bar is for terminals only)."""
        if not self.accelerator.is_main_process:
            return
        started, first = getattr(self, "_pace", (time.perf_counter(), epoch))
        done = epoch + 1
        per_epoch = (time.perf_counter() - started) / max(done - first, 1)
        terms = "  ".join(f"{k} {means[k]:.4f}" for k in sorted(means, key=lambda k: k != "loss"))
        logger.info("%s epoch %d/%d: %s  (%.1f s/epoch, ETA %s)", self.job, done,
                    self.train.epochs, terms, per_epoch,
                    _duration(per_epoch * (self.train.epochs - done)))

    def _fingerprint(self) -> dict:
        """What a checkpoint must agree on to be resumed: a hash of the run's training settings
        (every setting but where and how it logs and checkpoints), the model's shapes, the data
        each stream draws, and the batch plan (batch sizes, accumulation, world size, seed)."""
        model = self.accelerator.unwrap_model(self.model)
        shapes = hashlib.sha256(json.dumps(
            sorted((k, list(v.shape)) for k, v in model.state_dict().items())).encode())
        fingerprint = {"model": shapes.hexdigest()[:16],
                       "streams": {s.name: [len(s.dataset), s.batch_size] +
                                   ([s.lead_epochs] if s.lead_epochs else [])
                                   for s in self.streams},
                       "grad_accum": self.train.grad_accum, "seed": self.seed,
                       "world_size": self.accelerator.num_processes}
        if self.settings is not None:
            fingerprint["settings"] = settings_hash(self.settings)
        return fingerprint

    def _check_checkpoint(self, saved: dict, state: LoopState, folder: Path) -> None:
        """Refuse, before anything is loaded, a checkpoint of a run with other settings or one
        whose trainer state holds entries this engine does not know."""
        self._check_fingerprint(saved, state, self.output_dir)
        LoopState.check_keys((k for k in saved if k not in BESIDE_STATE), folder)

    @staticmethod
    def _check_fingerprint(saved: dict, state: LoopState, output_dir: Path) -> None:
        """One line naming what differs (the settings that changed, else what the fingerprint
        saw change: the data's rows, the world size ...) and how to go on."""
        before, current = saved.get("fingerprint"), state.fingerprint
        if before is None or before == current:
            return
        changed = []
        if "settings" in before and before["settings"] != current.get("settings"):
            old, new = saved.get("settings") or {}, state.settings or {}
            changed = [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}"
                       for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        scalars = ("world_size",) if changed else ("world_size", "grad_accum", "seed")
        changed += [f"{k} {before.get(k)} -> {current[k]}" for k in scalars
                    if before.get(k) != current[k]]
        changed = changed or [f"{k} differ" for k in sorted(current)
                              if k != "settings" and before.get(k) != current[k]]
        more = "; ..." if len(changed) > 3 else ""
        raise ckpt.CheckpointError(
            f"{output_dir}: its checkpoint is of a run with other settings "
            f"({'; '.join(changed[:3])}{more}); resume with its settings (its config.yaml), or "
            "start afresh: another --output_dir, or --resume=false")

    def _end_of_epoch(self, epoch: int, state: LoopState) -> bool:
        """Validate, track the best model, and decide on early stopping."""
        if self.evaluate is None:
            return False
        broadcast_buffers(self.accelerator, self.model)
        tic = time.perf_counter()
        metrics = self.evaluate(self.model)
        self.objective.train_mode(self.model)
        state.eval_seconds += time.perf_counter() - tic
        self.tracker.log({f"val/{k}": v for k, v in metrics.items()} | {"epoch": epoch},
                         state.updates)
        score = metrics.get(self.train.early_stopping_metric)
        if score is None:
            raise ForgetMIError(f"early_stopping_metric {self.train.early_stopping_metric!r} is "
                                f"not among the validation metrics: {', '.join(sorted(metrics))}")
        if self.accelerator.is_main_process:   # epochs counted from 1, as the progress line
            logger.info("%s epoch %d/%d: validation %s = %.4f", self.job, epoch + 1,
                        self.train.epochs, self.train.early_stopping_metric, score)
        if state.best is None or score > state.best:
            state.best, state.best_epoch, state.bad_epochs = float(score), epoch, 0
            self._save_best("best")
            return False
        state.bad_epochs += 1
        patience = self.train.early_stopping_patience
        if patience and state.bad_epochs >= patience:
            logger.info("early stopping: no improvement for %d epoch(s)", patience)
            return True
        return False

    def _keeps_last(self, state: LoopState) -> bool:
        """Whether the model is the last epoch's weights rather than the best-validated ones."""
        return self.evaluate is None or state.best is None or self.train.final_model == "last"

    def _model_epoch(self, state: LoopState) -> int | None:
        """The epoch (0-based) whose weights were written as the model."""
        if self._keeps_last(state):
            return state.epoch - 1 if state.epoch else None
        return state.best_epoch

    def _finish(self, state: LoopState) -> None:
        """Write the final model: the best validated one when there was validation, unless
        ``train.final_model`` is ``last`` (then the weights the last epoch ended with)."""
        state.done = True
        broadcast_buffers(self.accelerator, self.model)
        tag = "model"
        if self._keeps_last(state):
            self._save_best(tag)
        elif self.accelerator.is_main_process and self.save_model is not None:
            best = self.output_dir / "best"
            final = self.output_dir / tag
            import shutil
            tmp = self.output_dir / ".model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(best, tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        self.accelerator.wait_for_everyone()
        self._checkpoint(state)
        agree = self._ranks_agree()
        if self.accelerator.is_main_process:
            write_json(self.output_dir / "timing.json",
                       {"job": self.job, "train_seconds": round(state.train_seconds, 3),
                        "eval_seconds": round(state.eval_seconds, 3),
                        "updates": state.updates, "epochs_run": state.epoch,
                        "model_epoch": self._model_epoch(state),
                        "world_size": self.accelerator.num_processes,
                        "distributed_type": str(self.accelerator.distributed_type),
                        "zero_stage": zero_stage(self.accelerator),
                        "rows": {s.name: len(s.dataset) for s in self.streams},
                        "skipped_updates": state.skipped_updates,
                        "phases": {"lead_steps": state.lead_steps,
                                   "other_steps": state.other_steps},
                        "ranks_agree": agree})
            # Finished (timing.json says so): its optimizer state is no longer needed.
            self.prune_finished()
        self.accelerator.wait_for_everyone()
        self.tracker.finish()

    def prune_finished(self) -> None:
        """A finished run keeps its model and, under ``train.keep_checkpoints`` 0, no
        checkpoint (main process)."""
        if self.train.keep_checkpoints == 0 and self.checkpoint_dir.exists():
            freed = ckpt.remove_checkpoints(self.checkpoint_dir)
            logger.info("run finished: its checkpoints deleted (%.1f MB; "
                        "train.keep_checkpoints=N keeps the N latest)", freed / 1e6)
