"""The capability model and the seed library's query semantics.

These are plain frozen dataclasses: every instance has already passed validation
(``discovery.schema``), so the rest of the program never re-checks a name or a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

Checker = Callable[[str], bool]

# Category key -> the declaration's list field. Order is the seed's; it fixes the order
# of categories wherever they are printed.
CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "static_analysis": "static_analysis_tools",
        "security_scanning": "security_scanning_tools",
        "dynamic_analysis": "dynamic_analysis_tools",
        "fuzzing": "fuzzing_tools",
        "test_framework": "test_framework_tools",
    }
)


@dataclass(frozen=True, slots=True)
class ToolCapability:
    tool_name: str
    required: bool = False
    alternatives: tuple[str, ...] = ()

    def passes(self, checker: Checker) -> bool:
        """A tool passes by its own name or by any of its alternatives."""
        return checker(self.tool_name) or any(checker(alt) for alt in self.alternatives)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One worker's validated, normalised declaration.

    ``tools`` maps a category key to its non-empty tuple of tools; empty categories are
    absent, so two declarations that differ only by an empty list compare equal.
    """

    id: str
    tools: Mapping[str, tuple[ToolCapability, ...]] = field(default_factory=dict)
    flags: Mapping[str, bool] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def has_capability(self, category: str, checker: Checker) -> bool:
        """True when any tool of the category passes; empty or unknown category is false."""
        return any(tool.passes(checker) for tool in self.tools.get(category, ()))

    def has_all_required_tools(self, checker: Checker) -> bool:
        return all(tool.passes(checker) for tool in self.iter_tools() if tool.required)

    def all_tools(self) -> list[str]:
        """Every tool name and alternative, de-duplicated and sorted."""
        names = {tool.tool_name for tool in self.iter_tools()}
        names.update(alt for tool in self.iter_tools() for alt in tool.alternatives)
        return sorted(names)

    def has_flag(self, name: str) -> bool:
        return self.flags.get(name, False)

    def iter_tools(self) -> Iterable[ToolCapability]:
        for category in CATEGORIES:
            yield from self.tools.get(category, ())


def find_with_capability(
    workers: Iterable[Capabilities], category: str, checker: Checker
) -> list[Capabilities]:
    return [worker for worker in workers if worker.has_capability(category, checker)]
