"""The ``federated:`` block of a strategy preset: its schema, and the resolver extension that
checks it (``clsim.config.presets.Extension``).

A federated preset names a Flower server strategy (any class in ``flwr.serverapp.strategy``)
with its parameters, how many clients there are, how the data is split between them, how many
rounds each experience gets, and which core preset every client runs locally. Everything is
checked without importing Flower: server parameters against the strategy class's source
(``clsim.config.signatures``), like every preset parameter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from clsim.config import ConfigError, signatures, validation_to_error
from clsim.config import Strict as _Strict

SERVER_MODULE = "flwr.serverapp.strategy"
# Arguments clsim supplies or that take callables; a preset may not set them.
RESERVED_SERVER_PARAMS = {"weighted_by_key", "arrayrecord_key", "configrecord_key",
                          "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn", "strategy"}


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


class LagSpread(_Strict):
    """``client_lag: {max: K}``: lags 0..K spread evenly over the clients, in partition order
    (client c lags ``c * (K + 1) // clients``) — for federations too large to list one lag each."""

    max: NonNegativeInt

    def of(self, client: int, clients: int) -> int:
        return client * (self.max + 1) // clients


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
    # EWC's anchor weights on the clients: ``local`` (the client's own weights after its last round of an
    # experience, where its importances were computed) or ``global`` (the global model it receives at its
    # next experience's first round, i.e. the average after that experience's last round)
    ewc_anchor: Literal["local", "global"] = "local"
    client_lag: list[NonNegativeInt] | LagSpread | None = None  # client c trains on experience k - lag[c]
    fail: FailConfig | None = None
    client_resources: ClientResources = Field(default_factory=ClientResources)
    node_timeout: PositiveFloat = 120.0  # seconds to wait for missing SuperNodes before giving up
    round_timeout: PositiveFloat = 3600.0  # seconds to wait for the replies of one round

    @field_validator("server")
    @classmethod
    def _known_server(cls, name: str) -> str:
        server_class(name)  # raises ValueError naming the choices
        return name

    # rounds and experiences: round r (1-based) belongs to experience (r - 1) // rounds_per_experience
    def experience_of_round(self, rnd: int) -> int:
        return (rnd - 1) // self.rounds_per_experience

    def ends_experience(self, rnd: int) -> bool:
        """Round ``rnd`` is the last of its experience (the global model is evaluated after it)."""
        return rnd > 0 and rnd % self.rounds_per_experience == 0

    def first_round(self, experience: int) -> int:
        return experience * self.rounds_per_experience + 1

    @model_validator(mode="after")
    def _consistent(self) -> "FederatedConfig":
        if isinstance(self.client_lag, list) and len(self.client_lag) != self.clients:
            raise ValueError(f"client_lag needs one entry per client ({self.clients}), got {len(self.client_lag)} "
                             f"(or {{max: K}}: lags 0..K spread evenly over the clients)")
        if self.fail is not None and self.fail.client >= self.clients:
            raise ValueError(f"fail.client must be a client index below clients={self.clients}")
        return self

    def lag(self, client: int) -> int:
        if isinstance(self.client_lag, LagSpread):
            return self.client_lag.of(client, self.clients)
        return self.client_lag[client] if self.client_lag else 0

    @property
    def max_lag(self) -> int:
        return max((self.lag(c) for c in range(self.clients)), default=0) if self.client_lag is not None else 0

    def client_experience(self, client: int, experience: int) -> int:
        """The experience client ``client`` trains on while the federation is at ``experience``."""
        return max(0, experience - self.lag(client))

    def describe(self, core: str) -> str:
        """How ``clsim validate`` shows a federated strategy: the server, and what every client runs."""
        params = ", ".join(f"{k}={v}" for k, v in self.server_params.items())
        anchor = "; EWC anchored at the global model" if self.ewc_anchor == "global" else ""
        return (f"Flower {self.server}({params}), {self.clients} clients ({self.partition.kind}), "
                f"{self.rounds_per_experience} round(s)/experience; each client: {core}{anchor}")

    def hparams(self) -> dict[str, Any]:
        out = {"federated.server": self.server, "federated.clients": self.clients,
               "federated.rounds_per_experience": self.rounds_per_experience,
               "federated.partition": self.partition.kind, "federated.local": self.local or "(own)"}
        out.update({f"federated.{k}": v for k, v in self.server_params.items()})
        if self.ewc_anchor != "local":
            out["federated.ewc_anchor"] = self.ewc_anchor
        if self.client_lag:
            lag = self.client_lag
            out["federated.client_lag"] = f"max {lag.max}, spread" if isinstance(lag, LagSpread) else str(lag)
        return out


def server_strategies() -> list[str]:
    """Concrete, model-agnostic strategies in ``flwr.serverapp.strategy`` (not the DP wrappers or XGBoost)."""
    return [n for n in signatures.exported_names(SERVER_MODULE)
            if n not in ("Strategy", "Result") and not n.startswith(("DifferentialPrivacy", "FedXgb"))]


def server_class(name: str) -> signatures.ClassInfo:
    choices = server_strategies()
    info = signatures.class_info(SERVER_MODULE, name) if name in choices else None
    if info is None:
        raise ValueError(f"server {name!r} is not a strategy in {SERVER_MODULE}; expected one of {sorted(choices)}")
    return info


def server_params_accepted(info: signatures.ClassInfo) -> dict[str, signatures.Param]:
    return {p.name: p for p in info.params if p.name not in RESERVED_SERVER_PARAMS}


def server_params(cfg: "FederatedConfig") -> dict[str, Any]:
    """The server strategy's keyword arguments: the preset's, node minimums defaulting to its client count."""
    accepted = server_params_accepted(server_class(cfg.server))
    params = dict(cfg.server_params)
    for key, value in {"min_available_nodes": cfg.clients, "min_train_nodes": min(2, cfg.clients),
                       "min_evaluate_nodes": min(2, cfg.clients)}.items():
        if key in accepted:
            params.setdefault(key, value)
    return params


class FederatedExtension:
    """The resolver's handler of a preset's ``federated:`` block (see ``clsim.config.presets.Extension``)."""

    key = "federated"
    fields = frozenset(FederatedConfig.model_fields)

    def resolve(self, block: dict, overrides: dict, *, preset_file: Path, file: Path | None, where: str,
                experiences: int) -> tuple["FederatedConfig", str | None]:
        if not isinstance(block, dict):
            raise ConfigError(preset_file, "federated", f"expected a mapping, got {type(block).__name__}")
        try:
            FederatedConfig.model_validate(block)
        except ValidationError as exc:
            raise validation_to_error(preset_file, exc, prefix="federated") from None
        try:
            fed = FederatedConfig.model_validate({**block, **overrides})
        except ValidationError as exc:
            raise validation_to_error(file, exc, prefix=where) from None
        ours = "server_params" in overrides or "server" in overrides
        src, field = (file, f"{where}.server_params") if ours else (preset_file, "federated.server_params")
        accepted = server_params_accepted(server_class(fed.server))
        for key, value in fed.server_params.items():
            if key not in accepted:
                raise ConfigError(src, f"{field}.{key}", f"unknown parameter for {fed.server}; "
                                                         f"expected one of {sorted(accepted)}")
            if (why := signatures.check(accepted[key], value)) is not None:
                raise ConfigError(src, f"{field}.{key}", f"{fed.server}: {why}")
        too_long = [fed.max_lag] if fed.max_lag > experiences - 1 else []
        if too_long:
            src, field = (file, f"{where}.client_lag") if "client_lag" in overrides else (preset_file,
                                                                                          "federated.client_lag")
            raise ConfigError(src, field, f"{too_long[0]} is longer than the stream of {experiences} experiences; "
                                          f"expected at most {experiences - 1}")
        return fed, fed.local

    def load(self, data: dict) -> "FederatedConfig":
        return FederatedConfig.model_validate(data)

    def check(self, fed: "FederatedConfig", plugins, file: Path | None, where: str) -> None:
        if fed.ewc_anchor == "global" and not any(_is_ewc(c) for c in plugins):
            raise ConfigError(file, f"{where}.ewc_anchor", "global anchors move EWC's anchor, but the clients run "
                                                           f"no EWC ({', '.join(map(str, plugins)) or 'no plugins'}); "
                                                           "use a preset whose clients run ewc (fedavg_ewc)")


def _is_ewc(component) -> bool:
    """Whether a resolved plugin is Avalanche's EWCPlugin or a subclass of it (read from source, as
    every config check here: validating a scenario imports no Avalanche)."""
    info = signatures.class_info(component.module, component.cls)
    return info is not None and "EWCPlugin" in (info.name, *info.ancestors)


FEDERATED = FederatedExtension()
