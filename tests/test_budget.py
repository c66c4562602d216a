"""--time-budget's steps and schedule (utils/train/budget.py), on a clock the tests set."""
from __future__ import annotations

import math
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch

from utils.model.spec import ModelSpec
from utils.train import budget as budget_module
from utils.train.budget import BudgetSchedule, StepBudget

COSINE = SimpleNamespace(schedule="cosine", step_epochs=30, step_gamma=0.1)


@pytest.fixture
def clock(monkeypatch):
    """The process clock, in seconds, as the test sets it."""
    now = SimpleNamespace(t=10.0)
    monkeypatch.setattr(budget_module, "process_seconds", lambda: now.t)
    return now


def optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(schedule, steps):
    out = []
    for _ in range(steps):
        out.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return out


def test_the_clock_counts_from_the_start_of_the_process():
    """The budget is the user's wall clock: interpreter start-up and imports count."""
    age = subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True,
                         text=True, check=True).stdout
    assert budget_module.process_seconds() == pytest.approx(int(age), abs=1.5)


def test_the_schedule_warms_up_then_decays_to_zero_at_its_last_step():
    schedule = BudgetSchedule(optimizer(0.1), total_steps=100, warmup=5)
    got = lrs(schedule, 100)
    assert got[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert got[5] == pytest.approx(0.1) and got[-1] < 1e-4 and got == sorted(got[:5]) + got[5:]
    assert all(a >= b for a, b in zip(got[5:], got[6:]))
    steps = BudgetSchedule(optimizer(0.1), 100, 0, "step", step_size=40, gamma=0.5)
    assert lrs(steps, 100)[::40] == pytest.approx([0.1, 0.05, 0.025])


def test_stretching_the_schedule_changes_only_what_is_left():
    short, long = (BudgetSchedule(optimizer(), 100, 5) for _ in range(2))
    first = lrs(short, 30)
    assert lrs(long, 30) == first
    long.total_steps = 200
    assert short.factor(60) < long.factor(60)  # the rest of the cosine, stretched
    assert long.factor(199) < 1e-3


def test_a_restored_schedule_keeps_its_step_count_and_curve():
    schedule = BudgetSchedule(optimizer(), 120, 6)
    lrs(schedule, 50)
    restored = BudgetSchedule(optimizer(), 1, 0)  # as --resume restores a run's state
    restored.optimizer.load_state_dict(schedule.optimizer.state_dict())
    restored.load_state_dict(schedule.state_dict())
    assert (restored.total_steps, restored.warmup, restored.steps_done) == (120, 6, 50)
    assert lrs(restored, 70) == lrs(schedule, 70)


def test_the_steps_that_fit_come_from_the_clock_and_the_measured_pace(clock):
    budget = StepBudget(seconds=100, reserve=10, warmup_steps=50, say=False)
    budget.step_seconds, budget.epoch_overhead = 0.1, 2.0
    schedule = budget.scheduler(optimizer(), steps_per_epoch=20, epochs=1, cfg=COSINE)
    assert schedule.total_steps == 400  # 80 s left at 0.1 s a step + 2 s per 20 steps
    assert schedule.warmup == 20  # 50 asked for, at most 5 % of the steps
    clock.t = 40.0
    lrs(schedule, 20)
    budget.epoch_done(train_seconds=4.0, epoch_seconds=5.0, steps_per_epoch=20)
    assert schedule.total_steps == 20 + 200  # 50 s left at 0.2 s a step + 1 s an epoch
    assert budget.epochs(20, first_epoch=0, planned=99) == 11
    assert [total for _, total in budget.fits] == [400, 220] and not budget.done()


def test_the_run_stops_at_its_last_step_or_at_the_deadline(clock):
    budget = StepBudget(seconds=100, reserve=10, warmup_steps=0, say=False)
    budget.step_seconds = 1.0
    schedule = budget.scheduler(optimizer(), 10, 1, COSINE)  # 80 steps
    lrs(schedule, 79)
    assert not budget.done()
    lrs(schedule, 1)
    assert budget.done()
    late = StepBudget(seconds=100, reserve=10, warmup_steps=0, say=False)
    late.step_seconds = 1.0
    late.scheduler(optimizer(), 10, 1, COSINE)
    clock.t = 90.0
    assert late.done()  # the reserve is the test's and the report's
    agreed = StepBudget(100, 10, 0, agree=lambda n: n, say=False)
    agreed.step_seconds = 1.0
    agreed.scheduler(optimizer(), 10, 1, COSINE)
    assert not agreed.done()  # torchrun: the agreed step count decides, not each clock


def test_epochs_given_beside_a_budget_are_a_most(clock):
    budget = StepBudget(seconds=1000, reserve=0, warmup_steps=0, say=False)
    budget.step_seconds, budget.most_steps = 0.1, 30
    assert budget.scheduler(optimizer(), 10, 3, COSINE).total_steps == 30
    assert not budget.time_limited  # the epochs ended it: "more --epochs" is the advice
    short = StepBudget(seconds=10, reserve=0, warmup_steps=0, say=False)
    short.step_seconds, short.most_steps = 0.1, 3000
    short.scheduler(optimizer(), 10, 300, COSINE)
    assert short.time_limited  # the clock ended it: "a longer --time-budget"


def test_a_resumed_run_follows_its_planned_steps_without_a_clock(clock):
    budget = StepBudget(seconds=math.inf, reserve=0, warmup_steps=0, say=False)
    schedule = budget.scheduler(optimizer(), steps_per_epoch=10, epochs=4, cfg=COSINE)
    assert schedule.total_steps == 40
    clock.t = 1e9
    assert not budget.done()


def test_the_stem_choice_is_saved_and_older_descriptions_keep_theirs():
    spec = ModelSpec.create("mobilenetv1", ["a", "b"], (32, 32), small_input_drops=1)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again.small_input_drops == 1 and again.arch_args() == {"small_input_drops": 1}
    x = torch.rand(1, 3, 32, 32)
    assert again.build().forward_features(x).shape[-2:] == (2, 2)
    older = {k: v for k, v in spec.to_dict().items() if k != "small_input_drops"}
    assert ModelSpec.from_dict(older).build().forward_features(x).shape[-2:] == (4, 4)


@pytest.mark.parametrize("value, needle", [
    ("1", "small_input_drops must be a whole number"),
    (1.5, "small_input_drops must be a whole number"),
    (7, "small_input_drops must be 1 or 2, got 7"),
])
def test_a_bad_stem_choice_in_a_description_is_a_one_line_error(value, needle):
    from utils.cli import UserError

    values = {**ModelSpec.create("mobilenetv1", ["a", "b"], (32, 32)).to_dict(),
              "small_input_drops": value}
    with pytest.raises(UserError, match=needle):
        ModelSpec.from_dict(values).build()
