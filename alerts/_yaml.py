"""Deterministic, readable YAML for generated rule files.

Keys keep their insertion order, multi-line strings (PromQL expressions) become ``|`` block
scalars, and long lines are never folded, so a generated file diffs cleanly line by line.
"""

from __future__ import annotations

import yaml

__all__ = ["dump"]


class _Dumper(yaml.SafeDumper):
    """A safe dumper that writes multi-line strings as literal blocks and indents list items."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        """Indent block sequences under their key, as hand-written rule files do."""
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(document: object, header: str) -> str:
    """``document`` as block-style YAML, after ``header`` written as ``#`` comment lines."""
    body = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,
        indent=2,
    )
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + body
