"""Example Weightsmith plugin: two tasks on 2-D points with a tiny network of their own.

A plugin file tells Weightsmith how to build a model from a state dict, where the data come from
and (optionally) how to score it; see docs/plugins.md. This one defines two classification tasks
sharing a small MLP trunk (the tensors that get merged: ``trunk.0.weight`` … ``trunk.2.bias``), each
with a fixed random head kept in this file, like the demo zoo's frozen heads:

- ``quadrant``: which quadrant a point lies in (4 classes);
- ``ring``: how far from the origin it lies (3 classes).

Run ``python example_task.py`` once to train a base and one expert per task (a second of CPU) into
``example_task/`` beside this file, with a ready recipe; then

    weightsmith evaluate resources/plugins/example_task/recipe.json
    weightsmith learn adamerging resources/plugins/example_task/recipe.json --mode task

An Evaluate node (or ``--suite``) takes the plugin file itself as its task suite.
"""

from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
MODELS = HERE / "example_task"
CLASSES = {"quadrant": ["++", "-+", "--", "+-"], "ring": ["inner", "middle", "outer"]}
SIZES = {"train": 512, "val": 256, "test": 512, "unlabeled": 256}


class Net(nn.Module):
    """A shared trunk (merged) and one task's fixed head (kept here, never merged)."""

    def __init__(self, task):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        head = torch.randn(len(CLASSES[task]), 32, generator=torch.Generator().manual_seed(len(task)))
        self.register_buffer("head", head, persistent=False)

    def forward(self, points):
        return self.trunk(points) @ self.head.T


def labels_of(task, points):
    """The class of each point for ``task``."""
    if task == "quadrant":
        x_neg, y_neg = (points[:, 0] < 0).long(), (points[:, 1] < 0).long()
        return torch.where(y_neg == 0, x_neg, 3 - x_neg)
    radius = points.norm(dim=1)
    return (radius > 0.8).long() + (radius > 1.4).long()


def make_data(task, split):
    """``SIZES[split]`` points drawn from a fixed seed per (task, split), with their labels."""
    seed = 1000 * len(task) + list(SIZES).index(split)
    points = torch.randn(SIZES[split], 2, generator=torch.Generator().manual_seed(seed))
    return points, (None if split == "unlabeled" else labels_of(task, points))


def make_task(task):
    """The plugin entry for one task: the functions Weightsmith calls."""

    def build_model(state_dict):
        net = Net(task)
        net.load_state_dict(state_dict)  # strict: every trunk tensor must be there
        return net

    def data(split):
        return make_data(task, split)

    def metric(logits, labels):
        return (logits.argmax(dim=1) == labels).float().mean().item()

    expert = MODELS / "experts" / f"{task}.safetensors"
    return {"name": task, "classes": CLASSES[task], "build_model": build_model, "data": data, "metric": metric,
            "expert": str(expert) if expert.is_file() else None}


TASKS = [make_task(task) for task in CLASSES]


def train_checkpoints(folder=MODELS):
    """Write a base (random trunk) and one expert per task (the trunk fine-tuned with the task's head),
    plus ``recipe.json`` (base + experts → task arithmetic → Evaluate with this plugin)."""
    import json

    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = Net("quadrant").trunk.state_dict()
    (folder / "experts").mkdir(parents=True, exist_ok=True)
    save_file({f"trunk.{k}": v for k, v in base.items()}, str(folder / "base.safetensors"))
    for task in CLASSES:
        net = Net(task)
        net.trunk.load_state_dict(base)
        points, labels = make_data(task, "train")
        optimizer = torch.optim.Adam(net.trunk.parameters(), lr=0.02)
        for _ in range(200):
            loss = nn.functional.cross_entropy(net(points), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(folder / "experts" / f"{task}.safetensors"))
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": "base.safetensors"}}]
    nodes += [{"id": t, "type": "checkpoint", "params": {"path": f"experts/{t}.safetensors"}} for t in CLASSES]
    nodes += [{"id": "merge", "type": "merge", "params": {"method": "task_arithmetic", "lambda": 0.5}},
              {"id": "evaluate", "type": "evaluate", "params": {"suite": "../example_task.py"}}]
    edges = [{"from": "base", "to": "merge", "port": "base"}]
    edges += [{"from": t, "to": "merge", "port": "models"} for t in CLASSES]
    edges += [{"from": n, "to": "evaluate", "port": "models"} for n in ("merge", "base", *CLASSES)]
    recipe = {"format": "weightsmith-recipe", "version": 1, "name": "plugin-example", "nodes": nodes, "edges": edges}
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    return folder


if __name__ == "__main__":
    print(f"wrote {train_checkpoints()}")
