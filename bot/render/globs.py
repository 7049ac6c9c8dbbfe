"""Repo globs matched in linear time: ``**`` spans directories, ``*`` and ``?`` stay within one.

A backtracking regex turns a pattern with nested ``**`` into exponential work on a
long path (one PR held the bot for more than 90 s on a 240-character name). Here the
pattern is a small automaton and a match steps every live state once per character:
at most len(pattern) × len(path) steps, and both lengths are capped.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.repo import MAX_WATCH_CHARS as MAX_PATTERN_CHARS

MAX_PATH_CHARS = 4096

# Token kinds.
_LITERAL, _ONE, _CLASS, _STAR, _GLOBSTAR, _OPTIONAL_DIRS, _DIRS_LOOP = range(7)


class GlobError(ValueError):
    """A pattern Sluice refuses (too long); the message says which limit."""


@dataclass(frozen=True)
class _Token:
    kind: int
    chars: str = ""
    ranges: tuple[tuple[str, str], ...] = ()
    negated: bool = False

    def accepts(self, char: str) -> bool:
        if self.kind == _LITERAL:
            return char == self.chars
        if self.kind == _ONE:
            return char != "/"
        inside = char in self.chars or any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated


class Glob:
    """One compiled pattern; ``fullmatch`` and ``match_or_parent`` run in linear time."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise GlobError(
                f"glob pattern is {len(pattern)} characters, over the limit of {MAX_PATTERN_CHARS}"
            )
        self.pattern = pattern
        self._tokens = _tokenize(pattern.strip("/"))
        self._start = self._closure({0})

    def fullmatch(self, path: str) -> bool:
        """Whether the whole of ``path`` matches."""
        return self._run(path, parents=False)

    def match_or_parent(self, path: str) -> bool:
        """Whether ``path`` or any directory it is in matches (like .gitignore)."""
        return self._run(path, parents=True)

    def _run(self, path: str, *, parents: bool) -> bool:
        if len(path) > MAX_PATH_CHARS:
            # Longer than any path Git can check out here: say it matches (fail closed).
            return True
        end = len(self._tokens)
        states = self._start
        for index, char in enumerate(path):
            if parents and char == "/" and end in states and index > 0:
                return True
            states = self._step(states, char)
            if not states:
                return False
        return end in states

    def _step(self, states: set[int], char: str) -> set[int]:
        following: set[int] = set()
        for state in states:
            if state == len(self._tokens):
                continue
            token = self._tokens[state]
            if token.kind == _STAR:
                if char != "/":
                    following.add(state)
            elif token.kind in (_GLOBSTAR, _DIRS_LOOP):
                following.add(state)
                if token.kind == _DIRS_LOOP and char == "/":
                    following.add(state + 1)
            elif token.kind != _OPTIONAL_DIRS and token.accepts(char):
                following.add(state + 1)
        return self._closure(following)

    def _closure(self, states: set[int]) -> set[int]:
        """Add every state reachable without consuming a character."""
        todo = list(states)
        seen = set(states)
        while todo:
            state = todo.pop()
            if state == len(self._tokens):
                continue
            kind = self._tokens[state].kind
            skips = {
                _STAR: (1,),
                _GLOBSTAR: (1,),
                _OPTIONAL_DIRS: (1, 2),
            }.get(kind, ())
            for skip in skips:
                if state + skip not in seen:
                    seen.add(state + skip)
                    todo.append(state + skip)
        return seen

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


def _tokenize(pattern: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            # Zero or more whole directories: "" or "anything/".
            tokens += [_Token(_OPTIONAL_DIRS), _Token(_DIRS_LOOP)]
            i += 3
        elif pattern.startswith("**", i):
            tokens.append(_Token(_GLOBSTAR))
            i += 2
        elif char == "*":
            tokens.append(_Token(_STAR))
            i += 1
        elif char == "?":
            tokens.append(_Token(_ONE))
            i += 1
        elif char == "[" and pattern.find("]", i + 2) > 0:
            end = pattern.find("]", i + 2)
            tokens.append(_class(pattern[i + 1 : end]))
            i = end + 1
        else:
            tokens.append(_Token(_LITERAL, char))
            i += 1
    return tokens


def _class(body: str) -> _Token:
    negated = body[:1] in ("!", "^")
    if negated:
        body = body[1:]
    chars, ranges = [], []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            chars.append(body[i])
            i += 1
    return _Token(_CLASS, "".join(chars), tuple(ranges), negated)
