"""Read Dockerfiles and .dockerignore the way Docker does, enough to check them."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tests.deploy.tools import ROOT

DOCKERFILES = sorted((ROOT / "deploy").glob("Dockerfile.*"))


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON-array argument of the stage's last CMD / HEALTHCHECK ... CMD."""
        args = self.all(keyword)[-1]
        return list(json.loads(args[args.index("[") :]))

    def env(self) -> dict[str, str]:
        pairs = re.findall(r"(\w+)=(\S+)", " ".join(self.all("ENV")))
        return dict(pairs)


@dataclass
class Dockerfile:
    path: Path

    @cached_property
    def instructions(self) -> list[tuple[str, str]]:
        """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
        logical, current = [], ""
        for line in self.path.read_text().splitlines():
            if line.lstrip().startswith("#") or not line.strip():
                continue
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            logical.append(current + line)
            current = ""
        return [(w.split(None, 1)[0].upper(), w.split(None, 1)[1].strip()) for w in logical]

    @cached_property
    def args(self) -> dict[str, str]:
        """ARG defaults, the first declaration of each name (global ones come first)."""
        found: dict[str, str] = {}
        for keyword, args in self.instructions:
            if keyword == "ARG" and "=" in args:
                name, value = args.split("=", 1)
                found.setdefault(name, value)
        return found

    @cached_property
    def stages(self) -> list[Stage]:
        stages: list[Stage] = []
        for keyword, args in self.instructions:
            if keyword == "FROM":
                image = args.split()[0]
                image = re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], image)
                stages.append(Stage(image))
            elif stages:
                stages[-1].instructions.append((keyword, args))
        return stages

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def build_context(root: Path = ROOT) -> set[str]:
    """The tracked files `docker build` sends, after .dockerignore (last match wins;
    a pattern that matches a directory matches everything under it)."""
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern(line.lstrip("!").strip("/"))))
    files = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    sent = set()
    for path in files:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        included = True
        for keep, regex in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                included = keep
        if included:
            sent.add(path)
    return sent
