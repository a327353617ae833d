"""A small Dockerfile reader and a ``.dockerignore`` matcher for the image tests (no Docker here).

``parse`` splits a Dockerfile into stages of instructions (continuation lines joined, comments
dropped) and ``Image`` follows a target's chain of ``FROM <stage>`` to what the built image
carries: its labels, environment, user, health check and command. ``DockerIgnore`` follows the
builder's rules: patterns in order, the last one matching a path or one of its parent folders
decides, ``!`` re-includes, ``*`` and ``?`` stay inside one path element, ``**`` spans any.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case keyword, its flags (``--from=x``) and its argument text."""

    keyword: str
    flags: dict[str, str]
    text: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of the arguments, or None for the shell form."""
        if not self.text.startswith("["):
            return None
        value = json.loads(self.text)
        assert isinstance(value, list)
        return [str(item) for item in value]


@dataclass
class Stage:
    """One ``FROM`` section: base, optional name and instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The instructions of this stage with ``keyword``."""
        return [i for i in self.instructions if i.keyword == keyword]

    def arg_defaults(self) -> dict[str, str]:
        """``ARG NAME=default`` of this stage."""
        defaults: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.text.partition("=")
            defaults[name.strip()] = default.strip().strip('"')
        return defaults


def parse(path: Path) -> list[Stage]:
    """The stages of the Dockerfile at ``path``."""
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags, text = _flags(rest.strip())
        if keyword == "FROM":
            parts = text.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
            continue
        assert stages, f"{path}: {keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, text))
    return stages


def _logical_lines(source: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in source.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def _flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with ``$NAME`` / ``${NAME}`` replaced by ``values`` (unknown names kept)."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


@dataclass
class Image:
    """What a target of a Dockerfile carries, following ``FROM <stage>`` back to an image."""

    stages: list[Stage]
    chain: list[Stage]

    @classmethod
    def of(cls, stages: list[Stage], target: str | None = None) -> Image:
        """The image of stage ``target`` (the last stage, Docker's default, when None)."""
        by_name = {s.name: s for s in stages if s.name}
        stage = by_name[target] if target else stages[-1]
        chain = [stage]
        while chain[0].base in by_name:
            chain.insert(0, by_name[chain[0].base])
        return cls(stages, chain)

    @property
    def base(self) -> str:
        """The external image the chain starts from."""
        return self.chain[0].base

    def instructions(self, keyword: str) -> list[Instruction]:
        """Every ``keyword`` instruction along the chain, oldest first."""
        return [i for stage in self.chain for i in stage.all(keyword)]

    def last(self, keyword: str) -> Instruction | None:
        """The instruction ``keyword`` that wins (the last one), or None."""
        found = self.instructions(keyword)
        return found[-1] if found else None

    def key_values(self, keyword: str) -> dict[str, str]:
        """``LABEL`` or ``ENV`` pairs (``k=v`` form) along the chain, later ones winning."""
        pairs: dict[str, str] = {}
        for instruction in self.instructions(keyword):
            for token in shlex.split(instruction.text):
                key, sep, value = token.partition("=")
                assert sep, f"{keyword} {instruction.text!r}: use the KEY=VALUE form"
                pairs[key] = value
        return pairs

    def args(self) -> set[str]:
        """Names of the ``ARG``s declared along the chain."""
        return {name for stage in self.chain for name in stage.arg_defaults()}

    def command(self) -> list[str]:
        """``ENTRYPOINT`` followed by ``CMD``, both required in exec form."""
        words: list[str] = []
        for keyword in ("ENTRYPOINT", "CMD"):
            instruction = self.last(keyword)
            if instruction is not None:
                form = instruction.exec_form()
                assert form is not None, f"{keyword} must use the exec (JSON) form"
                words += form
        return words


class DockerIgnore:
    """The ``.dockerignore`` rules of a build context."""

    def __init__(self, text: str) -> None:
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = line[1:].strip() if keep else line
            clean = str(PurePosixPath("/" + pattern)).lstrip("/") or "."
            self._rules.append((keep, re.compile(_regex(clean))))

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context root, ``/``-separated) stays out."""
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for keep, regex in self._rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                result = not keep
        return result


def _regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def dockerfile_path(image: str) -> Path:
    """``Dockerfiles/<image>.Dockerfile`` of the repository."""
    return ROOT / "Dockerfiles" / f"{image}.Dockerfile"


def image_of(image: str, target: str | None = None) -> Image:
    """The image of ``target`` (the default target when None) of ``Dockerfiles/<image>``."""
    return Image.of(parse(dockerfile_path(image)), target)
