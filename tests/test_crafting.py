"""Crafted poisons: crafted once per crafting configuration for a whole grid, stored as an
artifact that every trial and rerun reuses, recorded in each trial's provenance, resumable
when the crafting run is killed; a surrogate that is not in the registry is bad input."""

from __future__ import annotations

import json

import pytest

from patchbench.results.store import Store

from .conftest import tiny_spec

CRAFTED = '''
import json, os
from pathlib import Path

import torch
from pydantic import Field

from patchbench import hookimpl
from patchbench.components import DataBundle, FixedSubsetPatch, Params
from patchbench.crafting import SurrogateSpec

LOG = Path(os.environ["CRAFT_LOG"])


class MinMinParams(Params):
    surrogate: SurrogateSpec = SurrogateSpec(
        architecture={"name": "wrn", "params": {"depth": 10, "width": 1}}, lr=0.1,
        batch_size=64)
    rounds: int = Field(3, ge=1)
    eps: float = Field(8 / 255, gt=0)
    seed: int = 0
    die_after: int = 0
    """Raise KeyboardInterrupt after this round (0: never), once: a killed crafting run."""


class MinMin(FixedSubsetPatch):
    """Class-wise error-minimizing noise against a surrogate (a small test poison)."""

    name = "minmin"
    Params = MinMinParams
    crafts = True

    def craft(self, ctx):
        p, d = self.params, ctx.data
        surrogate = ctx.surrogate(p.surrogate)
        state = ctx.resume()
        noise = torch.zeros(d.num_classes, *d.image_shape, device=ctx.device)
        start = 0
        if state is not None:
            noise, start = state["noise"].to(ctx.device), int(state["round"])
            surrogate.restore(state["surrogate"])
        x_all, y_all = ctx.normalize(d.x_train), d.y_train
        for r in range(start, p.rounds):
            idx = torch.randperm(len(y_all), generator=ctx.generator, device=ctx.device)[:64]
            x, y = x_all[idx], y_all[idx]
            surrogate.train_step(x + noise[y], y)
            delta = noise[y].clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(surrogate.model(x + delta), y)
            loss.backward()
            step = -delta.grad.sign() * p.eps / 4
            for c in y.unique():
                noise[c] = (noise[c] + step[y == c].mean(0)).clamp(-p.eps, p.eps)
            ctx.save({"noise": noise.cpu(), "round": r + 1, "surrogate": surrogate.state()})
            ctx.progress(r + 1, p.rounds)
            with LOG.open("a") as f:
                f.write(json.dumps({"round": r + 1}) + "\\n")
            if p.die_after and r + 1 == p.die_after and not LOG.with_suffix(".died").exists():
                LOG.with_suffix(".died").touch()
                raise KeyboardInterrupt
        ctx.stats["rounds"] = p.rounds
        return {"noise": noise}

    def use_crafted(self, artifact):
        self.noise = artifact["noise"]

    def setup(self, data, device):
        self.poison_exactly(data, 1.0, self.params.seed, device)
        self.noise = self.noise.to(device)

    def apply(self, x, y, idx, split, gen):
        mask = self.poison_mask(idx, split).view(-1, 1, 1, 1)
        return torch.where(mask, x + self.noise[y], x), y

    def stamp(self, x, cls, gen):
        return x + self.noise[cls]

    def patch_only(self, cls, image_shape, gen):
        return self.noise[cls].clone()


@hookimpl
def register_patches(register):
    register(MinMin)
'''


@pytest.fixture
def crafted(fake_dist, tmp_path, monkeypatch):
    log = tmp_path / "craft.jsonl"
    monkeypatch.setenv("CRAFT_LOG", str(log))
    fake_dist("test-crafted", "0.1.0", {"test_crafted": CRAFTED})
    return log


def _spec(**params):
    spec = tiny_spec(patch={"name": "minmin", "params": params})
    spec["seeds"] = [0, 1]
    spec["evaluation"]["metrics"] = ["clean_acc", "mixed_acc", "patch_only_acc"]
    return spec


def _rounds(log) -> list[int]:
    return [json.loads(line)["round"] for line in log.read_text().splitlines()]


def test_crafted_once_for_the_grid_and_reused_by_reruns(crafted, write_spec, run_cli, tmp_path):
    spec = write_spec(_spec())
    out = tmp_path / "out"
    code, _, err = run_cli("run", spec, "--out", out)
    assert code == 0, err
    assert _rounds(crafted) == [1, 2, 3]  # 6 trials (2 arms, a control, 2 seeds): one craft
    assert "minmin: crafting its poison on the local executor" in err
    records = Store.in_dir(out).records()
    patched = [r for r in records if r["patch"] == "minmin"]
    assert len(patched) == 4 and len({r["artifact"]["key"] for r in patched}) == 1
    meta = patched[0]["artifact"]
    assert meta["rounds"] == 3 and meta["seconds"] > 0 and not meta["resumed"]
    assert all("artifact" not in r for r in records if r["patch"] == "none")
    code, _, err = run_cli("run", spec, "--out", out, "--force")
    assert code == 0, err
    assert _rounds(crafted) == [1, 2, 3]  # not crafted again
    assert "minmin: reusing its crafted poison" in err
    code, _, err = run_cli("run", write_spec(_spec(rounds=2), "other.yaml"), "--out", out)
    assert code == 0, err
    assert _rounds(crafted) == [1, 2, 3, 1, 2]  # another configuration: crafted anew


def test_a_killed_crafting_run_resumes(crafted, write_spec, run_cli, tmp_path):
    spec = write_spec(_spec(rounds=4, die_after=2))
    out = tmp_path / "out"
    code, _, err = run_cli("run", spec, "--out", out)
    assert code == 130 and "interrupted" in err
    assert list((out / "artifacts").glob("*.partial")) and not list((out / "artifacts").glob("*.pt"))
    code, _, err = run_cli("run", spec, "--out", out)
    assert code == 0, err
    assert "(resuming a killed crafting run)" in err
    assert _rounds(crafted) == [1, 2, 3, 4]  # rounds 1 and 2 are not crafted twice
    record = next(r for r in Store.in_dir(out).records() if r["patch"] == "minmin")
    assert record["artifact"]["resumed"] is True
    assert not list((out / "artifacts").glob("*.partial"))


def test_the_artifact_holds_the_noise_and_the_preview_draws_it(crafted, write_spec, run_cli, tmp_path):
    from patchbench.crafting import load_crafted

    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(_spec()), "--out", out)
    assert code == 0, err
    tensors, meta = load_crafted(next((out / "artifacts").glob("minmin-*.pt")))
    assert tensors["noise"].abs().max() <= 8 / 255 + 1e-7 and tensors["noise"].abs().sum() > 0
    code, _, err = run_cli("preview", write_spec(_spec()), "--out", tmp_path / "p.png",
                           "--set", f"output.dir={out}")
    assert code == 0, err


@pytest.mark.parametrize("field, value, message", [
    ("architecture", {"name": "nope"}, "patch.params.surrogate.architecture.name: unknown "
     "architecture 'nope'"),
    ("optimizer", {"name": "sgd", "params": {"momentum": 2}},
     "patch.params.surrogate.optimizer.params.momentum:"),
])
def test_a_bad_surrogate_is_one_line(crafted, write_spec, run_cli, field, value, message):
    surrogate = {"architecture": {"name": "wrn", "params": {"depth": 10, "width": 1}},
                 field: value}
    code, out, err = run_cli("validate", write_spec(_spec(surrogate=surrogate)))
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_preview_of_a_poison_not_crafted_yet_says_how(crafted, write_spec, run_cli, tmp_path):
    code, _, err = run_cli("preview", write_spec(_spec()), "--out", tmp_path / "p.png",
                           "--set", f"output.dir={tmp_path / 'none'}")
    assert code == 2 and "minmin is crafted and not yet" in err and "crafts it" in err


def test_a_checkpoint_of_another_model_restarts_the_trial_with_its_crafted_poison(
        crafted, write_spec, run_cli, tmp_path):
    """The restart after an unusable checkpoint builds the trial afresh: with its artifact,
    or the crafted poison would be missing from the rebuilt trial."""
    import torch

    from patchbench.plugins import get_registry
    from patchbench.spec import load_spec, plan_trials
    from patchbench.train import checkpoint as ckpt
    from patchbench.train.trainer import train_trial

    path, out = write_spec(_spec()), tmp_path / "out"
    code, _, err = run_cli("run", path, "--out", out, "--only", "*/large_lr/minmin/seed0")
    assert code == 0, err
    record = next(r for r in Store.in_dir(out).records() if r["patch"] == "minmin")
    registry = get_registry()
    spec = load_spec(path, [], registry)
    trial = next(t for t in plan_trials(spec, registry) if t.key == record["key"])
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load()
    stale = tmp_path / "stale.pt"
    ckpt.save(stale, {key: 0 for key in ckpt.KEYS} | {"model": {"w": torch.zeros(1)}})
    result = train_trial(spec, trial, data, torch.device("cpu"), registry, checkpoint=stale,
                         artifacts={"minmin": record["artifact"]["path"]})
    assert result.status == "completed" and result.resumed_after_epoch is None
    assert [h["clean_acc"] for h in result.history] == \
        [h["clean_acc"] for h in record["history"]]  # the same trial, from its beginning
