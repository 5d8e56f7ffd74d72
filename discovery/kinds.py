"""The kind mechanism: a source or registry kind is one module declaring one ``Kind``.

A kind names itself, brings its typed settings model, maps its ``--source NAME:ARG`` or
``--registry NAME:ARG`` argument onto those settings, and builds itself from them. A
``KindTable`` lists the kinds of one family; the settings union, the command-line help
and the error for an unknown kind are all derived from it, so adding a kind is one
module plus one line in its table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union, cast

from pydantic import BaseModel, Field

from config.errors import ConfigError
from config.settings import ConsulSettings
from discovery.consul.client import ConsulEndpoint
from discovery.validations import Validations

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
ParseArg = Callable[[str], dict[str, object]]


@dataclass(frozen=True)
class BuildContext:
    """What a kind may need beyond its own settings: the shared [consul] connection and
    whether leader election is on."""

    consul: ConsulSettings
    consul_endpoint: Callable[[], ConsulEndpoint]
    # With leader election on, the push source's inbox lives in Consul KV.
    leader_election: bool = False
    # Leader election serialises the writers: the leader takes capsync's node over from
    # a writer recorded before it (daemon/registry/writer.py).
    takeover: bool = False
    # What earlier processes validated (the state directory), shared with the Normaliser.
    validations: Validations | None = None


@dataclass(frozen=True)
class Kind(Generic[S, T_co]):
    """One source or registry kind. ``arg_help`` names the argument after ``NAME:``
    (``DIR``), in brackets when optional (``[HOST]``), empty when there is none."""

    name: str
    settings: type[S]
    arg_help: str
    parse_arg: ParseArg
    build: Callable[[S, BuildContext], T_co]

    @property
    def usage(self) -> str:
        if not self.arg_help:
            return self.name
        if self.arg_help.startswith("["):
            return f"{self.name}[:{self.arg_help.strip('[]')}]"
        return f"{self.name}:{self.arg_help}"

    def create(self, settings: BaseModel, ctx: BuildContext) -> T_co:
        if not isinstance(settings, self.settings):
            raise TypeError(
                f"{self.name}: expected {self.settings.__name__}, got {type(settings).__name__}"
            )
        return self.build(settings, ctx)


def field_arg(key: str, *, required: bool) -> ParseArg:
    """The common argument: its value is one setting (``file:DIR`` -> path=DIR)."""

    def parse(value: str) -> dict[str, object]:
        if required and not value:
            raise ValueError(f"{key} missing")
        return {key: value} if value else {}

    return parse


def no_arg(value: str) -> dict[str, object]:
    if value:
        raise ValueError("takes no argument")
    return {}


class KindTable(Generic[T]):
    """The kinds of one family by name; ``tag`` is the settings key naming the kind."""

    def __init__(self, option: str, tag: str, kinds: Iterable[Kind[Any, T]]) -> None:
        self.option, self.tag = option, tag
        self.kinds = {kind.name: kind for kind in kinds}

    @property
    def metavar(self) -> str:
        return "|".join(kind.usage for kind in self.kinds.values())

    def expected(self) -> str:
        usages = [kind.usage for kind in self.kinds.values()]
        return ", ".join(usages[:-1]) + f" or {usages[-1]}" if len(usages) > 1 else usages[0]

    def parse_arg(self, arg: str) -> dict[str, object]:
        """``NAME[:ARG]`` -> a settings table for that kind."""
        name, _, value = arg.partition(":")
        kind = self.kinds.get(name)
        try:
            if kind is None:
                raise ValueError(f"unknown kind {name!r}")
            return {self.tag: name, **kind.parse_arg(value)}
        except ValueError as exc:
            raise ConfigError(f"{self.option} {arg!r}: {exc}; expected {self.expected()}") from None

    def settings_list(self) -> Any:
        """``list[`` the discriminated union of every kind's settings model ``]``."""
        models = tuple(kind.settings for kind in self.kinds.values())
        # Built at run time from the table, so spelt through Any for the type checker.
        union = cast(Any, Annotated)[cast(Any, Union)[models], Field(discriminator=self.tag)]
        return cast(Any, list)[union]

    def create(self, settings: BaseModel, ctx: BuildContext) -> T:
        return self.kinds[getattr(settings, self.tag)].create(settings, ctx)
