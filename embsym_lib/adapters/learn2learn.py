"""learn2learn adapter: Prototypical Networks whose query -> prototype score is a grid variant.

learn2learn supplies the episodes (``MetaDataset`` + ``TaskDataset`` with ``NWays`` / ``KShots`` /
``LoadData`` / ``RemapLabels``, and ``RandomClassRotation`` for Omniglot) and the Conv-4 backbone
(``learn2learn.vision.models.CNN4Backbone``). The episodic loop is the one of learn2learn's ProtoNet
example (``examples/vision/protonet_miniimagenet.py``): sort the episode by label, split support and
query, average the support embeddings into prototypes, cross-entropy over the query logits. It is
patched at the scoring step only: learn2learn's ``PrototypicalClassifier(normalize=...)`` normalizes both
sides at once and the example ignores its ``metric`` argument, so the logits come from ``PrototypeScorer``:

- grid variants: ``scale * embsym_lib.similarity`` score of (query embedding q, prototype d); the query is
  the first argument, so dnorm normalizes the prototypes only; ``learn`` is a ``LearnableSimilarity``
  trained with the backbone;
- ``euclidean`` (Snell et al.'s default, the fifth arm): ``-euclidean_scale * ||q - p||^2``.

Prototypes are the mean of the *raw* support embeddings (Snell et al.) unless ``prototype="normalized"``
(the mean of unit-normalized support embeddings), and the variant's normalization then applies to that mean.

``ADAPTER`` (the protocol of ``embsym_lib.adapters``) builds a ``ProtoNet`` (backbone + scorer), trains it
with ``train_protonet`` (learn2learn has no trainer: its task sampling, the example's loop) and swaps the
scorer for the cross-evaluation (``scored_with``).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..similarity import VARIANTS, check_variant, make_similarity, normalize

WARM_IMPORTS = ("learn2learn", "learn2learn.data.transforms")  # imported where used

EUCLIDEAN = "euclidean"
ARMS: tuple[str, ...] = (*VARIANTS, EUCLIDEAN)
FIXED_ARMS: tuple[str, ...] = tuple(a for a in ARMS if a != "learn")
PROTOTYPES: tuple[str, ...] = ("raw", "normalized")
VALIDATION_EPISODE_SEED = 20_000  # + the run's seed: the same validation episodes for every arm of a seed


def squared_euclidean_logits(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """-||q_i - p_j||^2, [N, D] x [M, D] -> [N, M], computed from differences (no cancellation)."""
    return -(q.unsqueeze(-2) - p.unsqueeze(-3)).pow(2).sum(-1)


class PrototypeScorer(nn.Module):
    """Logits of queries against prototypes for one arm: a grid variant times ``scale``, or squared Euclidean."""

    def __init__(self, arm: str, scale: float = 10.0, euclidean_scale: float = 1.0):
        super().__init__()
        self.arm = check_variant(arm, ARMS)
        self.scale = float(euclidean_scale if arm == EUCLIDEAN else scale)
        self.similarity = None if arm == EUCLIDEAN else make_similarity(arm)

    def forward(self, query_emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if self.similarity is None:
            return self.scale * squared_euclidean_logits(query_emb, prototypes)
        return self.scale * self.similarity.pairwise(query_emb, prototypes)

    @torch.no_grad()
    def gammas(self) -> dict[str, float]:
        return self.similarity.gammas() if hasattr(self.similarity, "gammas") else {}

    def extra_repr(self) -> str:
        return f"arm={self.arm!r}, scale={self.scale}"


def conv4(channels: int, hidden: int = 64) -> nn.Module:
    """The Conv-4 backbone (4 x [conv3x3, BN, ReLU, max-pool 2]), flattened: hidden x (size / 16)^2 features."""
    import learn2learn as l2l

    return l2l.vision.models.CNN4Backbone(hidden_size=hidden, layers=4, channels=channels, max_pool=True)


class ProtoNet(nn.Module):
    """What learn2learn's ProtoNet example trains: the backbone, and the scorer of the run's arm (its
    scoring step, where the grid is plugged in), with the prototype rule and the scales of every arm."""

    def __init__(
        self,
        backbone: nn.Module,
        scorer: PrototypeScorer,
        prototype: str = "raw",
        scale: float = 10.0,
        euclidean_scale: float = 1.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.scorer = scorer
        self.prototype = prototype
        self.scale = scale
        self.euclidean_scale = euclidean_scale

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def scorer_for(self, arm: str) -> PrototypeScorer:
        """The run's own scorer for its arm, a fresh fixed one (same scales) for any other."""
        if arm == self.scorer.arm:
            return self.scorer
        return PrototypeScorer(arm, self.scale, self.euclidean_scale)

    def forward(self, data, labels, ways: int, shots: int, queries: int):
        """Query logits and labels of one episode (``episode_logits``)."""
        return episode_logits(self.backbone, self.scorer, data, labels, ways, shots, queries, self.prototype)


def dataset_labels(dataset) -> list[int]:
    """Integer labels of a few-shot split without loading its images where the dataset allows it."""
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return [int(y) for y in dataset.tensors[1].tolist()]
    items = getattr(dataset, "items", None)
    if items is not None:  # embsym_lib.data.fewshot._SubsetByClass
        return [int(y) for _, y in items]
    inner = getattr(dataset, "dataset", None)
    if inner is not None and hasattr(inner, "y"):  # a wrapped learn2learn MiniImagenet
        return [int(y) for y in inner.y]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def meta_dataset(dataset):
    """``learn2learn.data.MetaDataset`` over ``dataset`` with its label index built from ``dataset_labels``."""
    import learn2learn as l2l

    labels_to_indices: dict[int, list[int]] = {}
    for i, y in enumerate(dataset_labels(dataset)):
        labels_to_indices.setdefault(y, []).append(i)
    return l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices)


def episode_tasks(
    meta, ways: int, shots: int, queries: int, num_tasks: int = -1, rotate_classes: bool = False
):
    """learn2learn's ``TaskDataset``: ``ways`` classes, ``shots + queries`` images each, labels 0..ways-1."""
    import learn2learn as l2l
    from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels

    transforms = [NWays(meta, ways), KShots(meta, shots + queries), LoadData(meta), RemapLabels(meta)]
    if rotate_classes:
        transforms.append(l2l.vision.transforms.RandomClassRotation(meta, [0.0, 90.0, 180.0, 270.0]))
    return l2l.data.TaskDataset(meta, task_transforms=transforms, num_tasks=num_tasks)


def split_episode(
    data: torch.Tensor, labels: torch.Tensor, ways: int, shots: int, queries: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support, support labels, query, query labels): per class, the first ``shots`` items are support."""
    order = torch.sort(labels, stable=True).indices
    data, labels = data[order], labels[order]
    per_class = shots + queries
    if labels.numel() != ways * per_class:
        raise ValueError(f"episode has {labels.numel()} items, expected {ways} ways x {per_class}")
    support_mask = torch.zeros(labels.numel(), dtype=torch.bool, device=labels.device)
    for offset in range(shots):
        support_mask[torch.arange(ways, device=labels.device) * per_class + offset] = True
    return data[support_mask], labels[support_mask], data[~support_mask], labels[~support_mask]


def class_prototypes(
    support_emb: torch.Tensor, support_labels: torch.Tensor, ways: int, prototype: str = "raw"
):
    """[ways, D]: the mean support embedding of each class (of raw or of unit-normalized embeddings)."""
    if prototype not in PROTOTYPES:
        raise ValueError(f"unknown prototype {prototype!r}; valid: {', '.join(PROTOTYPES)}")
    emb = normalize(support_emb) if prototype == "normalized" else support_emb
    sums = torch.zeros(ways, emb.shape[-1], dtype=emb.dtype, device=emb.device).index_add_(
        0, support_labels, emb
    )
    counts = torch.bincount(support_labels, minlength=ways).clamp_min(1).to(emb.dtype).unsqueeze(-1)
    return sums / counts


def episode_logits(
    backbone: nn.Module, scorer: PrototypeScorer, data, labels, ways, shots, queries, prototype="raw"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query logits [ways * queries, ways] and query labels of one episode of images."""
    emb = backbone(data)
    support, support_labels, query, query_labels = split_episode(emb, labels, ways, shots, queries)
    return scorer(query, class_prototypes(support, support_labels, ways, prototype)), query_labels


@contextmanager
def seeded_python_random(seed: int) -> Iterator[None]:
    """learn2learn samples episodes with Python's ``random``: fix it for a block, then restore it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@torch.no_grad()
def embed(
    backbone: nn.Module, dataset, device: str = "cpu", batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N, D] (eval mode) and labels of every item of ``dataset``, on the CPU."""
    backbone.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks, labels = [], []
    for x, y in loader:
        chunks.append(backbone(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(chunks), torch.cat(labels).long()


@torch.no_grad()
def evaluate_arms(
    backbone: nn.Module,
    dataset,
    scorers: dict[str, PrototypeScorer],
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    episode_seed: int,
    prototype: str = "raw",
    rotate_classes: bool = False,
    device: str = "cpu",
    return_norms: bool = False,
) -> dict[str, Any]:
    """Per-episode accuracy of every scorer on the *same* ``episodes`` episodes of ``dataset``.

    Without per-task image transforms the embeddings are computed once (eval mode: an image's embedding
    does not depend on its episode) and the episodes are sampled by learn2learn over the embeddings,
    with the same label index, so they are the episodes the images would give. With Omniglot's class
    rotation every episode is embedded on its own.
    """
    backbone.eval()
    if rotate_classes:
        tasks = episode_tasks(meta_dataset(dataset), ways, shots, queries, episodes, rotate_classes=True)
    else:
        emb, labels = embed(backbone, dataset, device)
        tasks = episode_tasks(
            meta_dataset(torch.utils.data.TensorDataset(emb, labels)), ways, shots, queries, episodes
        )
    accuracies: dict[str, list[float]] = {arm: [] for arm in scorers}
    query_norms, prototype_norms = [], []
    with seeded_python_random(episode_seed):
        for i in range(episodes):
            data, episode_labels = tasks[i]
            data, episode_labels = data.to(device), episode_labels.to(device).long()
            emb_episode = backbone(data).float() if rotate_classes else data
            support, support_labels, query, query_labels = split_episode(
                emb_episode, episode_labels, ways, shots, queries
            )
            protos = class_prototypes(support, support_labels, ways, prototype)
            for arm, scorer in scorers.items():
                predicted = scorer.to(device)(query, protos).argmax(-1)
                accuracies[arm].append(float((predicted == query_labels).float().mean()))
            if return_norms:
                query_norms.append(query.norm(dim=-1).cpu())
                prototype_norms.append(protos.norm(dim=-1).cpu())
    out: dict[str, Any] = {"accuracy": {arm: np.asarray(v) for arm, v in accuracies.items()}}
    if return_norms:
        out["query_norms"] = torch.cat(query_norms)
        out["prototype_norms"] = torch.cat(prototype_norms)
    return out


def episode_loss(logits: torch.Tensor, query_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over an episode's query logits (Snell et al.; learn2learn's example)."""
    return F.cross_entropy(logits.float(), query_labels)


def train_protonet(
    model: ProtoNet,
    train_dataset,
    validation_dataset,
    *,
    train_ways: int,
    shots: int,
    train_queries: int,
    episodes: int,
    lr: float = 1e-3,
    lr_halve_every: int = 0,
    eval_every: int = 50,
    val_ways: int = 5,
    val_queries: int = 15,
    val_episodes: int = 100,
    val_seed: int = 0,
    rotate_classes: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = episode_loss,
    log=print,
) -> dict[str, Any]:
    """Episodic training (Adam, as Snell et al.), keeping the backbone + scorer with the best validation accuracy.

    learn2learn samples the episodes (``TaskDataset.sample``); the loop is its ProtoNet example's, on the
    model's device. Validation uses the run's own arm on ``val_episodes`` fixed episodes (``val_seed``) of
    held-out classes. Returns the loss and validation curves, the best validation accuracy and its
    episode, and learn's gammas.
    """
    backbone, scorer, prototype, device = model.backbone, model.scorer, model.prototype, model.device
    params = list(backbone.parameters()) + list(scorer.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_halve_every, gamma=0.5)
        if lr_halve_every > 0
        else None
    )
    tasks = episode_tasks(
        meta_dataset(train_dataset), train_ways, shots, train_queries, rotate_classes=rotate_classes
    )
    losses, train_accuracy = [], []
    val_x, val_y, gamma_curve = [], [], []
    best = {"accuracy": -1.0, "episode": 0, "state": None}
    started = time.perf_counter()

    def validate(episode: int) -> None:
        acc = evaluate_arms(
            backbone,
            validation_dataset,
            {scorer.arm: scorer},
            val_ways,
            shots,
            val_queries,
            val_episodes,
            val_seed,
            prototype,
            rotate_classes,
            device,
        )["accuracy"][scorer.arm].mean()
        val_x.append(episode)
        val_y.append(float(acc))
        if acc > best["accuracy"]:
            best.update(
                accuracy=float(acc),
                episode=episode,
                state=(copy.deepcopy(backbone.state_dict()), copy.deepcopy(scorer.state_dict())),
            )

    for episode in range(1, episodes + 1):
        backbone.train()
        data, labels = tasks.sample()
        logits, query_labels = episode_logits(
            backbone, scorer, data.to(device), labels.to(device), train_ways, shots, train_queries, prototype
        )
        loss = loss_fn(logits, query_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.item())
        train_accuracy.append(float((logits.argmax(-1) == query_labels).float().mean()))
        if scorer.gammas():
            gamma_curve.append(scorer.gammas())
        if episode % eval_every == 0 or episode == episodes:
            validate(episode)
            log(f"episode {episode}: loss {np.mean(losses[-eval_every:]):.3f}, val acc {val_y[-1]:.3f}")
    backbone.load_state_dict(best["state"][0])
    scorer.load_state_dict(best["state"][1])
    return {
        "loss": losses,
        "train_accuracy": train_accuracy,
        "val_episode": val_x,
        "val_accuracy": val_y,
        "best_val_accuracy": best["accuracy"],
        "best_episode": best["episode"],
        "gamma_curve": gamma_curve,
        "train_seconds": time.perf_counter() - started,
    }


class Learn2LearnAdapter:
    """``embsym_lib.adapters.Adapter`` for learn2learn's Prototypical Networks."""

    library = "learn2learn"

    def build_model(self, params: dict[str, Any], channels: int = 1) -> ProtoNet:
        """Conv-4 over ``channels``-channel images, then the scorer of ``params["variant"]`` (learn's γ
        train with the backbone)."""
        backbone = conv4(channels, params["hidden"])
        scorer = PrototypeScorer(params["variant"], params["scale"], params["euclidean_scale"])
        return ProtoNet(backbone, scorer, params["prototype"], params["scale"], params["euclidean_scale"])

    def similarity(self, model: ProtoNet):
        """The grid's ``Similarity`` in the scorer (None for the Euclidean arm)."""
        return model.scorer.similarity

    def make_loss(self, model: ProtoNet, params: dict[str, Any]):
        return episode_loss

    def fit(self, model: ProtoNet, loss, data, params: dict[str, Any], log=print) -> dict[str, Any]:
        """``train_protonet`` on ``data`` (``embsym_lib.data.fewshot.FewShotSplits``): train episodes of
        ``train_ways`` x (``shots`` + ``train_queries``), validation as the test episodes' shape."""
        return train_protonet(
            model,
            data.train,
            data.validation,
            train_ways=params["train_ways"],
            shots=params["shots"],
            train_queries=params["train_queries"],
            episodes=params["episodes"],
            lr=params["lr"],
            lr_halve_every=params["lr_halve_every"],
            eval_every=params["eval_every"],
            val_ways=params["ways"],
            val_queries=params["queries"],
            val_episodes=params["val_episodes"],
            val_seed=VALIDATION_EPISODE_SEED + params["seed"],
            rotate_classes=data.rotate_classes,
            loss_fn=loss,
            log=log,
        )

    def embed(self, model: ProtoNet, split, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, labels) of every image of ``split``: an episode's queries are some of these rows
        and its prototypes the class means of others (``split_episode``, ``class_prototypes``)."""
        return embed(model.backbone, split, model.device)

    @contextmanager
    def scored_with(self, model: ProtoNet, variant: str) -> Iterator[ProtoNet]:
        """The model scoring with the fixed arm ``variant`` (same scales) inside the block."""
        own = model.scorer
        model.scorer = model.scorer_for(variant)
        try:
            yield model
        finally:
            model.scorer = own


ADAPTER = Learn2LearnAdapter()
