"""Parameter schemas: one declarative model per family, the single source of truth for its parameters.

A family's parameters are a pydantic model that extends ``RunParams`` (``families/<name>/spec.py``).
From it derive:

- **validation**, before any compute: types (ordinary numeric notation such as ``1e-3`` is a float),
  finite numbers, ranges, choices, unknown names refused, and the family's cross-field checks
  (``model_validator``); every problem is one ``ParamError`` naming the parameter;
- **the defaults**: the schema's defaults are the offline profile; ``params/<profile>/<family>.yaml``
  holds only the grid and the deviations from them;
- **the notebook's parameters cell** (``tools/sync_parameters.py`` writes it, a test checks it);
- **the reference** ``docs/parameters.md`` (written by the same tool, checked by the same test).

Names mean the same in every family (the glossary at the top of ``docs/parameters.md``): ``lr``,
``gamma_lr``, ``warmup_ratio``, ``epochs``, ``batch_size``, ``eval_batch_size``, ``scale``,
``embedding_dim``, ``data_dir``, ``device``, ``threads``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from .runtime import PRECISIONS
from .similarity import VARIANTS

SEED_MAX = 2**32 - 1  # NumPy's legacy seeding (RecBole, PyKEEN use it) accepts seeds below 2**32
RESERVED = ("variant", "seed", "profile", "run_dir")
DEVICES = ("cpu", "cuda", "auto")


class ParamError(ValueError):
    """A parameter problem found before any compute; the message says what and where."""


# Shared field types: one meaning, one range, wherever a family uses the name.
LearningRate = Annotated[float, Field(gt=0, description="optimizer learning rate")]
GammaLearningRate = Annotated[
    float, Field(ge=0, description="learning rate of learn's two γ (0: the main learning rate)")
]
WarmupRatio = Annotated[float, Field(ge=0, lt=1, description="share of the steps with a linear warmup")]
Epochs = Annotated[int, Field(ge=1, description="passes over the training data")]
BatchSize = Annotated[int, Field(ge=2, description="training batch size (in-batch negatives: ≥ 2)")]
EvalBatchSize = Annotated[int, Field(ge=1, description="batch size for encoding and evaluation")]
Scale = Annotated[
    float, Field(gt=0, description="logit scale α = 1/τ applied to every variant (the paper: 20)")
]
EmbeddingDim = Annotated[int, Field(ge=1, description="embedding dimension")]
Count = Annotated[int, Field(ge=1)]
NonNegativeCount = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
FisherVariants = Annotated[
    list[Literal[VARIANTS]],
    Field(
        description="variants whose runs compute the Fisher predictor (it depends on the untrained model "
        "and the seed only: one variant's run carries it for every variant of its seed)"
    ),
]
ScoreTestVariants = Annotated[
    list[Literal[VARIANTS]],
    Field(
        description="variants whose trained runs compute the Fisher score test on held-out pairs (its "
        "input is the trained model: dot, with both magnitudes free and neither side it chooses between)"
    ),
]
Precision = Annotated[
    Literal[PRECISIONS],
    Field(
        description="the model's forward passes: fp32; bf16 autocast with float32 outputs (scores and loss stay "
        "fp32); or auto: bf16 where the device has bf16 matrix units (CPU AMX, a bf16 GPU), else fp32. "
        "The record's extra gives what ran (docs/performance.md)"
    ),
]
Positive = Annotated[float, Field(gt=0)]
DataSeed = Annotated[
    int, Field(ge=0, le=SEED_MAX, description="seed of the generated data (the same for every run)")
]


class RunParams(BaseModel):
    """What every run has. ``variant``, ``seed``, ``profile`` and ``run_dir`` are set by the runner."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    variant: str = Field("cosine", description="the grid variant (or family arm) this run trains with")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="training seed: Python, NumPy and torch")
    profile: str = Field("offline", description="the parameter set the run belongs to")
    run_dir: str = Field("", description="the run's folder (empty: outputs/<family>/adhoc-...)")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where to train: cpu, cuda, or auto (cuda when available)"
    )
    threads: int = Field(1, ge=1, le=1024, description="CPU threads torch may use in this run")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        """pydantic would read ``lr: true`` as 1.0; a boolean where a number belongs is a mistake."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and field.annotation in (int, float):
                    raise ValueError(f"parameter {name!r}: expected a number, got {value!r}")
        return data


def validate(
    schema: type[RunParams], params: dict[str, Any], where: str, check_data: bool = True
) -> dict[str, Any]:
    """``params`` checked and completed with the schema's defaults; ParamError naming every problem.
    ``check_data=False`` skips the checks that local data exist (``data_checked``): a sweep can be listed,
    or a report made from records copied elsewhere, without the data."""
    try:
        return schema.model_validate(params, context={"check_data": check_data}).model_dump()
    except ValidationError as e:
        raise ParamError(f"{where}: " + "; ".join(describe(err, schema) for err in e.errors())) from None


def data_checked(info: ValidationInfo) -> bool:
    """In a family's ``model_validator``: whether to check that local data (folders, files) exist."""
    return bool((info.context or {}).get("check_data", True))


def describe(err: dict[str, Any], schema: type[RunParams]) -> str:
    """One pydantic error as a sentence that names the parameter."""
    name = ".".join(str(x) for x in err.get("loc", ())) or "parameters"
    if err["type"] == "extra_forbidden":
        return f"unknown parameter {name!r}; valid parameters are: {', '.join(schema.model_fields)}"
    if err["type"] == "value_error":  # raised by a model validator: its message is the sentence
        return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
    value = err.get("input")
    return f"parameter {name!r}: {err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}"


def defaults(schema: type[RunParams]) -> dict[str, Any]:
    """Every parameter's default, in declaration order."""
    return {name: field.get_default(call_default_factory=True) for name, field in schema.model_fields.items()}


def literal(value: Any) -> str:
    """A default as a Python literal in the repository's style (double quotes)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def parameters_cell(schema: type[RunParams], family: str) -> str:
    """The notebook's ``parameters`` cell: every parameter with its default (the offline profile)."""
    lines = [
        f"# Generated from embsym_lib/families/{family}/spec.py (tools/sync_parameters.py); edit the schema there.",
        *(f"{name} = {literal(value)}" for name, value in defaults(schema).items()),
    ]
    return "\n".join(lines)


def reference_rows(schema: type[RunParams]) -> list[dict[str, str]]:
    """One row per parameter for docs/parameters.md: name, type, default, constraint, meaning."""
    rows = []
    for name, field in schema.model_fields.items():
        constraint = ", ".join(
            f"{op} {getattr(m, attr)}"
            for m in field.metadata
            for attr, op in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
            if getattr(m, attr, None) is not None
        )
        base = RunParams.model_fields.get(name)
        rows.append(
            {
                "name": name,
                "type": _type_name(field.annotation),
                "default": literal(field.get_default(call_default_factory=True)),
                "constraint": constraint,
                "meaning": field.description or (base.description if base else "") or "",
            }
        )
    return rows


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")
