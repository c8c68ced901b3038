"""The optimizer a run trains with: AdamW under a one-cycle cosine schedule, as torch.optim.AdamW with
lr_scheduler.OneCycleLR computes it, on the host or with its schedule on the device; and StepGraph, which
that makes possible: the whole training step, optimizer included, replayed as one CUDA graph. train.py
builds the optimizer through build_optimizer and runs its steps through StepGraph on request."""
import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class AdamW:
    """AdamW's own values (train.py's RECIPE gives them); its learning rate and beta1 follow OneCycle."""
    weight_decay: float
    beta2: float
    eps: float


@dataclass(frozen=True)
class OneCycle:
    """One cycle, cosine-shaped: over the first pct_start of the steps lr rises from lr / div_factor to lr
    while beta1 falls from its first to its second value; then lr decays to lr / div_factor /
    final_div_factor and beta1 returns."""
    pct_start: float
    div_factor: float
    final_div_factor: float
    beta1: tuple


class OneCycleAdamW:
    """AdamW under a one-cycle cosine schedule: the same updates, learning rates and cycled beta1 as
    torch.optim.AdamW with lr_scheduler.OneCycleLR (test_optimizer.py checks this step by step), written out
    on foreach kernels because torch.optim's first call imports torch._dynamo: 1.4 s of a 9 s CPU run."""

    def __init__(self, params, max_lr, total_steps, weight_decay, beta2, eps, pct_start, div_factor,
                 final_div_factor, beta1):
        self.params = [p for p in params if p.requires_grad]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.max_lr, self.total_steps = max_lr, total_steps
        self.weight_decay, self.beta2, self.eps = weight_decay, beta2, eps
        self.pct_start, self.div_factor, self.final_div_factor, self.beta1 = pct_start, div_factor, \
            final_div_factor, beta1
        self.steps_done = 0
        self.tables = None  # the schedule on the device, once on_device() has run

    def schedule(self, step):
        """(lr, beta1) at `step`, cosine-shaped as OneCycleLR computes them."""
        initial = self.max_lr / self.div_factor
        peak_step = self.pct_start * self.total_steps - 1
        high, low = self.beta1
        if step <= peak_step:
            pct, lrs, betas = step / peak_step, (initial, self.max_lr), (high, low)
        else:
            pct = (step - peak_step) / (self.total_steps - 1 - peak_step)
            lrs, betas = (self.max_lr, initial / self.final_div_factor), (low, high)
        weight = (1 + math.cos(math.pi * pct)) / 2  # 1 at the phase start, 0 at its end
        return tuple(end + (start - end) * weight for start, end in (lrs, betas))

    @torch.no_grad()
    def step(self):
        """One AdamW update of every parameter, its schedule computed on the host; returns its learning rate."""
        lr, beta1 = self.schedule(self.steps_done)
        self.steps_done += 1
        self.update(lr, beta1, 1 - beta1 ** self.steps_done, math.sqrt(1 - self.beta2 ** self.steps_done))
        return lr

    def on_device(self):
        """Move the schedule onto the parameters' device for step_on_device: lr, beta1 and both bias
        corrections for every step as tables (computed by schedule(), in float64, then cast), indexed
        by a step counter that lives on the device too. A captured CUDA graph can then replay the
        whole step, schedule included, with no value from the host."""
        dev = self.params[0].device
        steps = range(self.total_steps)
        lr, beta1 = zip(*(self.schedule(t) for t in steps), strict=True)
        table = torch.tensor([lr, beta1, [1 - b ** (t + 1) for t, b in enumerate(beta1)],
                              [math.sqrt(1 - self.beta2 ** (t + 1)) for t in steps]], dtype=torch.float64)
        self.tables = table.to(device=dev, dtype=torch.float32)
        self.device_step = torch.full((), self.steps_done, dtype=torch.long, device=dev)

    @torch.no_grad()
    def step_on_device(self):
        """step(), with every per-step value read from the device tables at the device step counter
        (call on_device() first): no host value changes between steps, so CUDA graphs can capture it."""
        # index_select, not tables[:, step]: a 0-d index tensor would be read back to the host (a sync that
        # capture forbids)
        at = self.device_step.clamp(max=self.total_steps - 1).view(1)
        self.update(*self.tables.index_select(1, at).view(4).unbind())
        self.device_step += 1
        self.steps_done += 1

    def update(self, lr, beta1, correction1, correction2):
        """The AdamW update, the one both steps make: lr, beta1 and the two bias corrections are floats
        (step) or 0-d tensors on the device (step_on_device), so only overloads that take either are used
        (a list of weights for lerp, which has no tensor overload)."""
        grads = [p.grad for p in self.params]
        torch._foreach_mul_(self.params, 1 - lr * self.weight_decay)
        torch._foreach_lerp_(self.exp_avg, grads, [1 - beta1] * len(grads))
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, self.eps)
        step = torch._foreach_mul(self.exp_avg, -lr / correction1)  # what addcdiv computes, which takes no tensor
        torch._foreach_div_(step, denom)
        torch._foreach_add_(self.params, step)

    def learning_rates(self):
        """The learning rate of every step taken so far. Under a CUDA graph the host runs a step's code only
        when it is captured, so the count is read back from the device counter (one sync)."""
        done = int(self.device_step) if self.tables is not None else self.steps_done
        return [self.schedule(t)[0] for t in range(min(done, self.total_steps))]

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def build_optimizer(params, recipe, total_steps):
    """The optimizer and schedule a run trains with, from its recipe (train.Recipe): swap the optimizer here."""
    return OneCycleAdamW(params, recipe.lr, total_steps, **asdict(recipe.optimizer), **asdict(recipe.schedule))


class StepGraph:
    """A whole training step (forward, loss, backward, optimizer) of full batches as one CUDA graph,
    replayed once per step: at this model size GPU time is launches, not arithmetic, and a replay is one
    launch. The first WARMUP calls run the step eagerly on a side stream (real training steps, as
    torch.cuda.graph requires before capture); the next call captures it and replays it."""
    WARMUP = 3

    def __init__(self, step, x, y):
        self.step, self.x, self.y = step, torch.empty_like(x), torch.empty_like(y)  # the graph's inputs
        self.calls, self.graph = 0, None

    def __call__(self, x, y):
        """(output, loss) of one step on this batch, as the graph's own tensors (read them before the next call)."""
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                result = self.step(self.x, self.y)
            torch.cuda.current_stream().wait_stream(side)
            return result
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out, self.loss = self.step(self.x, self.y)
        self.graph.replay()
        return self.out, self.loss
