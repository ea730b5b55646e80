"""RecBole adapter: the grid enters RecBole models at their scoring step, in the loss and in full-sort
prediction; RecBole's own Config, data preparation, samplers, Trainer and evaluator do the rest.

The user is the query and the item the candidate: ``s(user, item)`` with the user always first, so
qnorm normalizes the user side and dnorm the item side.

Two RecBole models are subclassed, each replacing only its inner products by ``embsym_lib.similarity``:

- ``GridBPR`` (matrix factorisation, RecBole's ``BPR``): user and item embedding tables.
- ``GridLightGCN`` (RecBole's ``LightGCN``): the propagated (layer-averaged) embeddings are scored;
  its L2 regulariser on the ego embeddings is kept as RecBole has it.

Both train with the loss named by ``grid_loss`` in the RecBole config:

- ``"bpr"`` (the project's primary choice): RecBole's ``BPRLoss`` on ``alpha * s(u, i+)`` and
  ``alpha * s(u, i-)`` with RecBole's sampled negative. It is exactly InfoNCE with one negative
  (-log sigmoid(a - b) = -log softmax over {a, b}), the recommender default, and linear in the batch.
- ``"infonce"``: in-batch softmax with scale alpha over the batch's positive items plus the sampled
  negatives, ``embsym_lib.losses.info_nce`` (quadratic in the batch).

RecBole 1.2.1 with today's stack needs four work-arounds, all kept here:

- NumPy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which ``Config`` reads when it starts
  (``compatibility_settings``); the aliases are restored before any RecBole module is imported.
- torch >= 2.6 loads checkpoints with ``weights_only=True``, which refuses RecBole's pickled config:
  we reload the best checkpoint ourselves (``load_best_checkpoint``), not through ``Trainer.evaluate``.
- ``recbole.quick_start`` imports ray (a newer one than RecBole pins here), so it is never imported;
  ``build_recbole`` drives Config -> create_dataset -> data_preparation -> model -> Trainer by hand.
- LightGCN builds its normalized adjacency with SciPy's private ``dok_matrix._update``, gone from current
  SciPy: ``GridLightGCN.get_norm_adj_mat`` builds the same matrix through COO (tested against the formula).

RecBole writes its tensorboard events relative to the working directory, so ``build_recbole`` and the
trainer run inside ``working_directory(run_dir)``; checkpoints go to run_dir/recbole_checkpoints and the
log to run_dir/recbole.log (``attach_log_file``).

``ADAPTER`` (the protocol of ``embsym_lib.adapters``): ``build_model`` drives Config -> dataset -> split
-> model (a RecBole model is built from its dataset, so it returns a ``RecBoleSetup``: model and data
together), ``fit`` is RecBole's Trainer with its early stopping and the best checkpoint reloaded,
``scored_with`` swaps the fixed variant in for RecBole's evaluator (the cross-evaluation).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ..losses import info_nce
from ..records import project_path
from ..similarity import LearnableSimilarity, Similarity, check_variant, make_similarity

LOSSES: tuple[str, ...] = ("bpr", "infonce")


def _restore_numpy_aliases() -> None:
    """RecBole 1.2.1's ``Config.compatibility_settings`` reads aliases that NumPy 2 removed."""
    for alias, target in {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "bool8": np.bool_,
    }.items():
        if alias not in np.__dict__:
            setattr(np, alias, target)


_restore_numpy_aliases()

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.general_recommender import BPR, LightGCN  # noqa: E402
from recbole.model.loss import BPRLoss  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

RECBOLE_ROOT = Path(__import__("recbole").__file__).resolve().parent
SHIPPED_DATASETS: dict[str, Path] = {"ml-100k": RECBOLE_ROOT / "dataset_example" / "ml-100k"}


class GridScoring:
    """Mixin for a RecBole recommender: the grid variant, its scale and the loss, read from the config."""

    def _init_grid(self, config) -> None:
        self.similarity: Similarity = make_similarity(check_variant(config["similarity_variant"]))
        self.score_scale = float(config["score_scale"])
        self.grid_loss = config["grid_loss"]
        if self.grid_loss not in LOSSES:
            raise ValueError(f"unknown grid_loss {self.grid_loss!r}; valid losses are: {', '.join(LOSSES)}")
        self.bpr_loss = BPRLoss()

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(all users, all items) exactly as they enter the score; row 0 of each is RecBole's padding."""
        raise NotImplementedError

    def grid_loss_value(self, user_e: torch.Tensor, pos_e: torch.Tensor, neg_e: torch.Tensor) -> torch.Tensor:
        if self.grid_loss == "bpr":
            pos = self.score_scale * self.similarity.paired(user_e, pos_e)
            neg = self.score_scale * self.similarity.paired(user_e, neg_e)
            return self.bpr_loss(pos, neg)
        return info_nce(user_e, pos_e, self.similarity, scale=self.score_scale, d_neg=neg_e)

    def gammas(self) -> dict[str, float]:
        return self.similarity.gammas() if isinstance(self.similarity, LearnableSimilarity) else {}


class GridBPR(GridScoring, BPR):
    """RecBole's BPR (matrix factorisation) with grid scoring in the loss, ``predict`` and full sort."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._init_grid(config)

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def calculate_loss(self, interaction):
        user_e = self.get_user_embedding(interaction[self.USER_ID])
        pos_e = self.get_item_embedding(interaction[self.ITEM_ID])
        neg_e = self.get_item_embedding(interaction[self.NEG_ITEM_ID])
        return self.grid_loss_value(user_e, pos_e, neg_e)

    def predict(self, interaction):
        user_e, item_e = self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])
        return self.similarity.paired(user_e, item_e)

    def full_sort_predict(self, interaction):
        user_e = self.get_user_embedding(interaction[self.USER_ID])
        return self.similarity.pairwise(user_e, self.item_embedding.weight).view(-1)


class GridLightGCN(GridScoring, LightGCN):
    """RecBole's LightGCN with grid scoring on the propagated embeddings; the ego-embedding L2 term stays."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._init_grid(config)

    def get_norm_adj_mat(self):
        """RecBole's D^-1/2 A D^-1/2 of the user-item graph, built through COO: RecBole 1.2.1 fills a
        ``dok_matrix`` with its private ``_update``, which current SciPy no longer has."""
        inter = self.interaction_matrix
        n = self.n_users + self.n_items
        rows = np.concatenate([inter.row, inter.col + self.n_users])
        cols = np.concatenate([inter.col + self.n_users, inter.row])
        adj = sp.coo_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n)).tocsr()
        adj.data[:] = 1.0  # duplicate user-item pairs count once, as in the dok construction
        degree = np.asarray((adj > 0).sum(axis=1)).ravel() + 1e-7
        d_inv_sqrt = sp.diags(np.power(degree, -0.5))
        lap = sp.coo_matrix(d_inv_sqrt @ adj @ d_inv_sqrt)
        index = torch.as_tensor(np.vstack([lap.row, lap.col]), dtype=torch.long)
        return torch.sparse_coo_tensor(
            index, torch.as_tensor(lap.data, dtype=torch.float32), lap.shape, check_invariants=True
        )

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()

    def calculate_loss(self, interaction):
        self.restore_user_e, self.restore_item_e = None, None
        user, pos_item, neg_item = (
            interaction[self.USER_ID],
            interaction[self.ITEM_ID],
            interaction[self.NEG_ITEM_ID],
        )
        user_all, item_all = self.forward()
        loss = self.grid_loss_value(user_all[user], item_all[pos_item], item_all[neg_item])
        reg = self.reg_loss(
            self.user_embedding(user),
            self.item_embedding(pos_item),
            self.item_embedding(neg_item),
            require_pow=self.require_pow,
        )
        return loss + self.reg_weight * reg

    def predict(self, interaction):
        user_all, item_all = self.forward()
        return self.similarity.paired(
            user_all[interaction[self.USER_ID]], item_all[interaction[self.ITEM_ID]]
        )

    def full_sort_predict(self, interaction):
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.forward()
        user_e = self.restore_user_e[interaction[self.USER_ID]]
        return self.similarity.pairwise(user_e, self.restore_item_e).view(-1)


MODELS: dict[str, type] = {"bpr": GridBPR, "lightgcn": GridLightGCN}


def model_class(name: str) -> type:
    if name not in MODELS:
        raise ValueError(f"unknown recommender model {name!r}; valid models are: {', '.join(MODELS)}")
    return MODELS[name]


class RecordingTrainer(Trainer):
    """RecBole's Trainer, unchanged, except that every validation result is kept with its epoch, and an
    optional ``on_valid(model)`` callback records whatever else the run wants per epoch (norms)."""

    def __init__(self, config, model, on_valid=None):
        super().__init__(config, model)
        self.valid_history: list[dict[str, Any]] = []
        self.on_valid = on_valid

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        entry = {"epoch": len(self.valid_history), "valid_score": float(valid_score), **dict(valid_result)}
        if self.on_valid is not None:
            entry.update(self.on_valid(self.model))
        self.valid_history.append(entry)
        return valid_score, valid_result


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[Path]:
    """Run RecBole with ``path`` as the working directory (its log and tensorboard paths are relative)."""
    previous = Path.cwd()
    Path(path).mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(previous)


def dataset_dir(dataset: str, data_dir: str) -> Path:
    """Where RecBole reads ``<dataset>.inter`` from: the shipped copy for ml-100k, else data_dir/dataset."""
    if dataset in SHIPPED_DATASETS:
        return SHIPPED_DATASETS[dataset]
    return Path(data_dir).expanduser().resolve() / dataset


def check_atomic_files(dataset: str, data_dir: str) -> Path:
    """The dataset's ``.inter`` file, or one clear error. A missing folder would make RecBole try to
    download (and prompt on ``input()`` for large datasets), so it must exist before RecBole starts."""
    folder = dataset_dir(dataset, data_dir)
    inter = folder / f"{dataset}.inter"
    if not inter.is_file():
        where = f"data_dir={data_dir!r}" if dataset not in SHIPPED_DATASETS else "the recbole package"
        raise FileNotFoundError(
            f"RecBole atomic file not found: {inter} (dataset {dataset!r}, {where}); expected "
            f"<data_dir>/{dataset}/{dataset}.inter with a header like "
            "'user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float'"
        )
    return inter


def recbole_config(
    model: str,
    dataset: str,
    data_dir: str,
    settings: dict[str, Any],
    run_dir: Path,
    device: str | None = None,
) -> Config:
    """RecBole's Config for one of our models. ``settings`` are plain RecBole keys (epochs, eval_args, ...)
    plus ours (similarity_variant, score_scale, grid_loss). ``device`` (``cpu``/``cuda``): where RecBole
    puts the model and the batches; None: RecBole's own choice (cuda whenever torch sees a GPU)."""
    check_atomic_files(dataset, data_dir)
    run_dir = Path(run_dir).resolve()
    config_dict = {
        "data_path": str(Path(data_dir).expanduser().resolve()) if data_dir else "dataset/",
        "checkpoint_dir": str(run_dir / "recbole_checkpoints"),
        "use_gpu": torch.cuda.is_available() if device is None else device == "cuda",
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        **settings,
    }
    config = Config(model=model_class(model), dataset=dataset, config_dict=config_dict)
    if device is not None:  # RecBole picks cuda whenever one is visible, whatever use_gpu says
        config["device"] = torch.device(device)
    return config


def attach_log_file(run_dir: Path, level: int = logging.INFO) -> Path:
    """Send RecBole's log (the root logger, where its Trainer writes) to run_dir/recbole.log; a handler this
    function attached for an earlier run is closed first, so that runs in one process never share a file."""
    path = (Path(run_dir) / "recbole.log").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_embsym_recbole", False)]:
        root.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path)
    handler._embsym_recbole = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    return path


@dataclass
class RecBoleSetup:
    config: Config
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any


def build_recbole(
    model: str,
    dataset: str,
    data_dir: str,
    settings: dict[str, Any],
    run_dir: Path,
    seed: int,
    device: str | None = None,
) -> RecBoleSetup:
    """Config -> create_dataset -> data_preparation -> model, as ``run_recbole`` would, with our model class."""
    with working_directory(run_dir):
        config = recbole_config(model, dataset, data_dir, {**settings, "seed": seed}, run_dir, device)
        init_seed(config["seed"], config["reproducibility"])
        full = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, full)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = model_class(model)(config, train_data.dataset).to(config["device"])
    return RecBoleSetup(config, full, train_data, valid_data, test_data, net)


def load_best_checkpoint(trainer: Trainer) -> None:
    """Reload the trainer's best checkpoint (RecBole pickles its Config into it, hence weights_only=False)."""
    checkpoint = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))


def item_popularity(train_data) -> np.ndarray:
    """Training interaction count per item id (index 0, RecBole's padding, counts 0)."""
    ds = train_data.dataset
    items = ds.inter_feat[ds.iid_field].numpy()
    return np.bincount(items, minlength=ds.item_num)


@contextlib.contextmanager
def scored_with(model, variant: str) -> Iterator[None]:
    """Temporarily score ``model``'s trained embeddings with another fixed variant (cross-evaluation)."""
    original = model.similarity
    model.similarity = make_similarity(variant)
    try:
        yield
    finally:
        model.similarity = original


# --- the adapter ------------------------------------------------------------------------------------


def _net(model):
    """The RecBole model of a ``RecBoleSetup``, or the model itself."""
    return model.model if isinstance(model, RecBoleSetup) else model


def recbole_keys(params: dict[str, Any]) -> dict[str, Any]:
    """A run's parameters under RecBole's own config keys, and the grid keys our models read."""
    keys = {
        "embedding_size": params["embedding_dim"],
        "learning_rate": params["lr"],
        "train_batch_size": params["batch_size"],
        "similarity_variant": params["variant"],
        "score_scale": float(params["scale"]),
        "grid_loss": params["loss"],
    }
    keys.update(
        {
            k: params[k]
            for k in ("n_layers", "reg_weight", "epochs", "stopping_step", "eval_batch_size")
            if k in params
        }
    )
    return keys


class RecBoleAdapter:
    """``embsym_lib.adapters.Adapter`` for RecBole. A RecBole model is built from its dataset, so
    ``build_model`` returns a ``RecBoleSetup`` (Config, dataset, split loaders and model); the other
    methods take that setup or its model."""

    library = "recbole"

    def build_model(self, params: dict[str, Any], settings: dict[str, Any] | None = None) -> RecBoleSetup:
        """RecBole's Config for ``params`` (``model``, ``dataset``, ``data_dir``, ``run_dir``, ``seed``,
        ``device`` and the hyperparameters, ``recbole_keys``) over ``settings``, the family's RecBole keys
        (protocol, preprocessing; None: RecBole's defaults), then the dataset, the split and our model.
        RecBole's log goes to run_dir/recbole.log."""
        from ..runtime import resolve_device

        run_dir = Path(params["run_dir"])
        attach_log_file(run_dir)
        data_dir = str(project_path(params["data_dir"])) if params.get("data_dir") else ""
        return build_recbole(
            params["model"],
            params["dataset"],
            data_dir,
            {**(settings or {}), **recbole_keys(params)},
            run_dir,
            params["seed"],
            resolve_device(params.get("device") or "cpu"),
        )

    def similarity(self, model) -> Similarity:
        return _net(model).similarity

    def make_loss(self, model, params: dict[str, Any]) -> Callable:
        """The model's ``calculate_loss`` (what RecBole's Trainer calls): ``grid_loss`` on the grid's scores."""
        return _net(model).calculate_loss

    def fit(
        self,
        model,
        loss,
        data: RecBoleSetup,
        params: dict[str, Any],
        log: Callable[[str], None] | None = None,
        on_valid: Callable[[Any], dict[str, float]] | None = None,
    ) -> dict[str, Any]:
        """RecBole's Trainer.fit on ``data``'s train and valid loaders (early stopping on ``valid_metric``,
        best checkpoint in run_dir/recbole_checkpoints), then the best checkpoint reloaded. ``on_valid(model)``
        adds its values to each validation entry. Returns ``train_loss`` (per epoch), ``valid`` (one dict per
        validation: epoch, valid_score, RecBole's valid metrics, on_valid's values) and the ``trainer``
        (RecBole's evaluator evaluates the test split through it)."""
        net = _net(model)
        if loss is not None and loss != net.calculate_loss:
            net.calculate_loss = loss
        with working_directory(Path(params["run_dir"])):
            trainer = RecordingTrainer(data.config, net, on_valid=on_valid)
            trainer.fit(data.train_data, data.valid_data, saved=True, verbose=True, show_progress=False)
            trainer.tensorboard.close()
        load_best_checkpoint(trainer)
        if log is not None:
            log(f"trained {len(trainer.valid_history)} epochs; best checkpoint reloaded")
        losses = trainer.train_loss_dict
        return {
            "train_epoch": [int(e) for e in losses],
            "train_loss": [float(v) for v in losses.values()],
            "valid": trainer.valid_history,
            "trainer": trainer,
        }

    def embed(
        self, model, split=None, params: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(every user, every item) exactly as they enter the score, rows indexed by RecBole's ids (row 0 is
        its padding); a split selects users by id, not rows."""
        return _net(model).scoring_embeddings()

    def scored_with(self, model, variant: str):
        return scored_with(_net(model), variant)


ADAPTER = RecBoleAdapter()
