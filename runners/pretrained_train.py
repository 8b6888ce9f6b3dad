"""Fine-tuning a pretrained model (models/pretrained.py) on a task rendered as text: a trial with steps > 0.

Step s draws the trial's training batch as every family's training does (`task.sample(batch_size, train_len,
train_seed(seed, s))`, on the CPU), renders each sequence in the model's rendering (no shots), tokenises it
(runners/pretrained_eval.Tokeniser) and groups the sequences by token length (`same_length_batches`): one forward
and backward per group, with the loss the cross-entropy of every answer token given the true prefix (teacher
forcing: the rest of the text is read, not trained on), averaged over the step's answer tokens:

    loss = sum over groups g, answers a in g, tokens j of a of  -log p(gold_j | text before it)  /  N

with N the answer tokens of the whole step, so a step's gradient does not depend on how its sequences fall into
groups. Then AdamW (train.make_optimizer) at the learning rate of train.lr_at (warm-up, cosine decay) after
clipping the gradients' norm at grad_clip. The loss is read every log_every steps into the training curve; a
non-finite one raises train.Diverged (status diverged). The time cap ends training (status timeout); every eval
slice is then scored as with steps = 0 (runners/pretrained_eval.py).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.memtasks import train_seed
from membench.memtasks.text import render_text
from membench.runners.pretrained_eval import TokenisedExample, Tokeniser, same_length_batches
from membench.runners.train import Diverged, TrainOutcome, clip_grad_norm, lr_at, make_optimizer


def answer_loss(model, batch: list[TokenisedExample], device: torch.device) -> torch.Tensor:
    """() float32: the summed cross-entropy of every answer token of a batch of equal-length sequences."""
    ids = torch.tensor([s.ids for s in batch], device=device)  # (B, T)
    read = sorted({a.first - 1 + j for s in batch for a in s.answers for j in range(len(a.gold))})
    column = {p: k for k, p in enumerate(read)}
    logits = model.logits(ids, torch.tensor(read, device=device))  # (B, K, V)
    rows, cols, gold = zip(*[(r, column[a.first - 1 + j], g) for r, s in enumerate(batch) for a in s.answers
                             for j, g in enumerate(a.gold)])
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # (N, V)
    return F.cross_entropy(picked, torch.tensor(gold, device=device), reduction="sum")


def fine_tune(model, config, device: torch.device) -> TrainOutcome:
    """Train `model` for config.steps steps (see the module doc); the outcome without its slices' results."""
    task = config.segment_task(config.segments[0])
    tokenise = Tokeniser(model.tokenizer, model.chat_template)
    params = [p for p in model.lm.parameters() if p.requires_grad]
    optimizer = make_optimizer(model.lm, config.lr, config.weight_decay, device)
    outcome = TrainOutcome(segment_steps=[0], head_rows=[None])
    model.lm.train()
    start, logged = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=device)  # summed on the device, read at each log
    for step in range(config.steps):
        if time.perf_counter() - start > config.time_cap:
            outcome.timed_out, outcome.stop_reason = True, "time_cap"
            break
        batch = task.sample(config.batch_size, config.train_len, train_seed(config.seed, step), "cpu")
        sequences = [tokenise(render_text(task, batch, i, mode=model.rendering)) for i in range(config.batch_size)]
        longest = max(len(s.ids) for s in sequences)
        if model.max_positions is not None and longest > model.max_positions:
            raise ConfigError(f"training length {config.train_len} renders to {longest} tokens, beyond the "
                              f"model's {model.max_positions} positions; train at a shorter length")
        answer_tokens = sum(len(a.gold) for s in sequences for a in s.answers)
        for group in same_length_batches(sequences, config.batch_size):
            loss = answer_loss(model, group, device) / answer_tokens
            loss.backward()
            loss_sum += loss.detach()
        clip_grad_norm(params, config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        outcome.steps, outcome.segment_steps = step + 1, [step + 1]
        outcome.tokens += sum(len(s.ids) for s in sequences)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            mean = float(loss_sum) / (step + 1 - logged)
            if not math.isfinite(mean):
                raise Diverged(f"training loss became {mean} at step {step + 1}")
            outcome.curve.append({"step": step + 1, "seconds": time.perf_counter() - start,
                                  "tokens": outcome.tokens, "train_loss": mean, "eval_accuracy": math.nan})
            logged, loss_sum = step + 1, torch.zeros((), device=device)
    outcome.train_seconds = time.perf_counter() - start
    model.lm.eval()
    return outcome
