"""Re-run the README's `$ gpumix ...` examples and diff the figures they show against today's output.

  python scripts/check_readme.py [README.md ...]      exit 1 when a shown line no longer appears

A code block's lines starting with `$ gpumix` are commands; the lines after one (up to the next
command or the block's end) are what the README says it prints. Each such line must appear in the
real output, compared after collapsing whitespace. Not compared: `...` (elided output), timing
lines (`solved in`), table rules, and a trailing annotation set off by three or more spaces and
parentheses, `cost $14.92/h ...      (20 GPUs: 10 T4)`. A command whose input files do not exist
(an illustration, not a bundled example) is listed as skipped.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_LINE = re.compile(r"^(\.\.\.|solved in |.*━━━)")
ANNOTATION = re.compile(r"\s{3,}\(.*\)\s*$")
TIMING = re.compile(r"\d+(\.\d+)?s\b")


def blocks(text: str) -> list[list[str]]:
    out, cur, inside = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                out.append(cur)
            cur, inside = [], not inside
        elif inside:
            cur.append(line)
    return out


def examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, shown lines) per `$ gpumix` line of every code block."""
    found = []
    for block in blocks(text):
        for i, line in enumerate(block):
            if line.startswith("$ gpumix"):
                shown = []
                for later in block[i + 1:]:
                    if later.startswith("$ "):
                        break
                    shown.append(later)
                found.append((line[2:], shown))
    return found


def norm(line: str) -> str:
    return " ".join(ANNOTATION.sub("", line).split())


def missing_inputs(argv: list[str]) -> list[str]:
    return [a for a in argv[1:] if a.endswith((".yaml", ".json", ".csv")) and not (ROOT / a).exists()
            and not a.startswith("-")]


def check(command: str, shown: list[str], gpumix: str) -> tuple[str, list[str]]:
    argv = shlex.split(command)
    absent = missing_inputs(argv)
    if absent:
        return f"skipped (no {', '.join(absent)})", []
    run = subprocess.run([gpumix, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"COLUMNS": "200", "PATH": str(Path(gpumix).parent) + ":/usr/bin:/bin"})
    actual = {norm(line) for line in (run.stdout + run.stderr).splitlines()}
    want = [norm(s) for s in shown if s.strip() and not SKIP_LINE.match(s.strip())]
    return f"exit {run.returncode}", [w for w in want if w and w not in actual and not TIMING.search(w)]


def main(paths: list[str]) -> int:
    gpumix = str(Path(sys.executable).parent / "gpumix")
    bad = 0
    for p in paths or [str(ROOT / "README.md")]:
        for command, shown in examples(Path(p).read_text()):
            status, diffs = check(command, shown, gpumix)
            print(f"{Path(p).name}: {command}: {status}" + ("" if diffs else ", matches"))
            for d in diffs:
                print(f"    not in the output: {d}")
            bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
