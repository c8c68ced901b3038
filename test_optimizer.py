"""optimizer.py: AdamW under a one-cycle schedule makes torch's updates, on the host and with its
schedule on the device."""
import pytest
import torch
import torch.nn.functional as F

import data
import train
from model import build_model
from optimizer import AdamW, build_optimizer


def test_optimizer_steps_lower_the_loss(mnist_train):
    torch.manual_seed(0)
    model = build_model("fastnet").train()
    x, y = data.to_input(mnist_train[0][:128]), mnist_train[1][:128]
    opt = build_optimizer(model.parameters(), train.recipe("fastnet", lr=0.01), total_steps=15)
    losses = []
    for _ in range(15):
        loss = F.nll_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow  # torch.optim imports torch._dynamo on first use: seconds the default run cannot spare
def test_optimizer_matches_torch_adamw_one_cycle(mnist_train):
    """build_optimizer makes exactly the updates of torch.optim.AdamW + OneCycleLR with the recipe's values."""
    torch.manual_seed(0)
    ours, theirs = build_model("fastnet"), build_model("fastnet")
    theirs.load_state_dict(ours.state_dict())
    x, y = data.to_input(mnist_train[0][:64]), mnist_train[1][:64]
    config = train.recipe("fastnet")
    opt_cfg, sched_cfg = config.optimizer, config.schedule
    opt = build_optimizer(ours.parameters(), config, total_steps=30)
    ref = torch.optim.AdamW(theirs.parameters(), lr=config.lr, weight_decay=opt_cfg.weight_decay,
                            betas=(sched_cfg.beta1[0], opt_cfg.beta2), eps=opt_cfg.eps)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        ref, max_lr=config.lr, total_steps=30, pct_start=sched_cfg.pct_start, div_factor=sched_cfg.div_factor,
        final_div_factor=sched_cfg.final_div_factor, max_momentum=sched_cfg.beta1[0],
        base_momentum=sched_cfg.beta1[1])
    for _ in range(30):
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            F.nll_loss(model(x), y).backward()
        expected_lr = sched.get_last_lr()[0]
        ref.step()
        sched.step()
        assert opt.step() == pytest.approx(expected_lr, rel=1e-12)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_device_schedule_equals_the_host_schedule_step_for_step():
    """The tables a captured step reads (lr, beta1, both bias corrections) are the host schedule's values,
    for every step of a real run's length."""
    config = train.recipe("fastnet")
    total = 469
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(3))], config, total_steps=total)
    opt.on_device()
    lr, beta1, correction1, correction2 = opt.tables.double()
    for t in range(total):
        host_lr, host_beta1 = opt.schedule(t)
        assert lr[t] == pytest.approx(host_lr, rel=1e-6) and beta1[t] == pytest.approx(host_beta1, rel=1e-6)
        assert correction1[t] == pytest.approx(1 - host_beta1 ** (t + 1), rel=1e-6)
        assert correction2[t] == pytest.approx((1 - opt.beta2 ** (t + 1)) ** 0.5, rel=1e-6)
    first = config.lr / config.schedule.div_factor
    assert (lr[0], lr[-1]) == (pytest.approx(first), pytest.approx(first / config.schedule.final_div_factor))
    assert config.lr * 0.999 < lr.max() <= config.lr


def test_step_on_device_makes_the_host_steps_updates(mnist_train):
    """step_on_device (what a CUDA graph replays) and step() train two copies of a model to the same weights,
    and its device counter follows the steps."""
    torch.manual_seed(0)
    host_model, device_model = build_model("fastnet"), build_model("fastnet")
    device_model.load_state_dict(host_model.state_dict())
    x, y = data.to_input(mnist_train[0][:64]), mnist_train[1][:64]
    config = train.recipe("fastnet")
    host = build_optimizer(host_model.parameters(), config, total_steps=40)
    device = build_optimizer(device_model.parameters(), config, total_steps=40)
    device.on_device()
    for _ in range(40):
        for model, opt in ((host_model, host), (device_model, device)):
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
        host.step()
        device.step_on_device()
    assert int(device.device_step) == device.steps_done == 40
    for a, b in zip(host_model.parameters(), device_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_optimizer_takes_its_values_from_the_recipe():
    params = [torch.nn.Parameter(torch.zeros(3))]
    config = train.recipe("fastnet", lr=0.5, optimizer=AdamW(weight_decay=0.3, beta2=0.9, eps=1e-6))
    opt = build_optimizer(params, config, total_steps=10)
    assert (opt.max_lr, opt.weight_decay, opt.beta2, opt.eps) == (0.5, 0.3, 0.9, 1e-6)
