"""The ``federated:`` block of a strategy preset, validated with pydantic.

A federated preset names a Flower server strategy (any class in ``flwr.serverapp.strategy``)
with its parameters, how many clients there are, how the data is split between them, how
many rounds each experience gets, and which core preset every client runs locally. The
server strategy is built here, once at validation (so a bad parameter fails before any work)
and again at run time.
"""
from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator,
                      model_validator)

import clsim.federated  # noqa: F401  (sets Flower's environment before flwr is imported)

# Arguments clsim supplies or that take callables; a preset may not set them.
RESERVED_SERVER_PARAMS = {"self", "weighted_by_key", "arrayrecord_key", "configrecord_key",
                          "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn", "strategy"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IidPartition(_Strict):
    """Equal random shares (flwr-datasets ``IidPartitioner`` on a shuffled split)."""

    kind: Literal["iid"]


class DirichletPartition(_Strict):
    """Label skew: per-class shares drawn from Dir(alpha) (``DirichletPartitioner``)."""

    kind: Literal["dirichlet"]
    alpha: PositiveFloat = 0.5
    min_partition_size: NonNegativeInt = 2
    self_balancing: bool = False


class ColumnPartition(_Strict):
    """One client per value of a column (``NaturalIdPartitioner``); ``label``: one class per client."""

    kind: Literal["by_column"]
    column: Literal["label"] = "label"


PartitionConfig = Annotated[Union[IidPartition, DirichletPartition, ColumnPartition], Field(discriminator="kind")]


class FailConfig(_Strict):
    """Fault injection for tests: client ``client`` raises in its training of round ``round``."""

    client: NonNegativeInt
    round: PositiveInt


class ClientResources(_Strict):
    """Ray resources per simulated client. GPUs are asked for only when CUDA is visible; unset,
    the clients share one GPU (``1 / clients`` each)."""

    num_cpus: PositiveFloat = 1.0
    num_gpus: Annotated[float, Field(ge=0, le=8)] | None = None

    def gpus(self, clients: int, cuda: bool) -> float:
        if not cuda:
            return 0.0
        return 1.0 / clients if self.num_gpus is None else self.num_gpus


class FederatedConfig(_Strict):
    server: str = "FedAvg"
    server_params: dict[str, Any] = Field(default_factory=dict)
    clients: PositiveInt = 2
    rounds_per_experience: PositiveInt = 1
    partition: PartitionConfig = Field(default_factory=lambda: IidPartition(kind="iid"))
    local: str | None = None  # a core preset; None: this preset's own template + plugins
    client_lag: list[NonNegativeInt] | None = None  # client c trains on experience k - lag[c]
    fail: FailConfig | None = None
    client_resources: ClientResources = Field(default_factory=ClientResources)
    node_timeout: PositiveFloat = 120.0  # seconds to wait for missing SuperNodes before giving up
    round_timeout: PositiveFloat = 3600.0  # seconds to wait for the replies of one round

    @field_validator("server")
    @classmethod
    def _known_server(cls, name: str) -> str:
        server_class(name)  # raises ValueError naming the choices
        return name

    @model_validator(mode="after")
    def _consistent(self) -> "FederatedConfig":
        if self.client_lag is not None and len(self.client_lag) != self.clients:
            raise ValueError(f"client_lag needs one entry per client ({self.clients}), got {len(self.client_lag)}")
        if self.fail is not None and self.fail.client >= self.clients:
            raise ValueError(f"fail.client must be a client index below clients={self.clients}")
        return self

    def lag(self, client: int) -> int:
        return self.client_lag[client] if self.client_lag else 0

    def client_experience(self, client: int, experience: int) -> int:
        """The experience client ``client`` trains on while the federation is at ``experience``."""
        return max(0, experience - self.lag(client))

    def hparams(self) -> dict[str, Any]:
        out = {"federated.server": self.server, "federated.clients": self.clients,
               "federated.rounds_per_experience": self.rounds_per_experience,
               "federated.partition": self.partition.kind, "federated.local": self.local or "(own)"}
        out.update({f"federated.{k}": v for k, v in self.server_params.items()})
        if self.client_lag:
            out["federated.client_lag"] = str(self.client_lag)
        return out


def server_strategies() -> dict[str, type]:
    """Concrete, model-agnostic strategies in ``flwr.serverapp.strategy`` (not the DP wrappers or XGBoost)."""
    import flwr.serverapp.strategy as fs

    out = {}
    for name in fs.__all__:
        cls = getattr(fs, name)
        if not (inspect.isclass(cls) and issubclass(cls, fs.Strategy)) or inspect.isabstract(cls):
            continue
        if name.startswith(("DifferentialPrivacy", "FedXgb")):
            continue
        out[name] = cls
    return out


def server_class(name: str) -> type:
    choices = server_strategies()
    if name not in choices:
        raise ValueError(f"server {name!r} is not a strategy in flwr.serverapp.strategy; "
                         f"expected one of {sorted(choices)}")
    return choices[name]


def server_params_accepted(cls: type) -> set[str]:
    sig = inspect.signature(cls.__init__)
    return {n for n, p in sig.parameters.items()
            if n not in RESERVED_SERVER_PARAMS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_server_strategy(cfg: FederatedConfig):
    """The Flower strategy, unchanged; node minimums default to the preset's client count."""
    cls = server_class(cfg.server)
    accepted = server_params_accepted(cls)
    unknown = sorted(set(cfg.server_params) - accepted)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for {cls.__name__}; expected one of {sorted(accepted)}")
    params = dict(cfg.server_params)
    defaults = {"min_available_nodes": cfg.clients, "min_train_nodes": min(2, cfg.clients),
                "min_evaluate_nodes": min(2, cfg.clients)}
    for key, value in defaults.items():
        if key in accepted:
            params.setdefault(key, value)
    with clsim.federated.quiet_flower():
        return cls(**params)
