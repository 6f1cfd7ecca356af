"""Every reference in the repository points inside it: a clone must stand alone.

Scans each text file that git tracks (and each untracked one it does not ignore) for
- paths outside the repository: `../shared`, absolute paths of a development machine (/work/, ...);
- names of documents that live outside it (BON_MATH, MODEL_API) and `*.md` names no file here has;
- relative markdown links `[text](path)` and repository paths (`docs/...`, `bonjax/...`) that do
  not exist in the repository (a local build output or ignored file does not count; a name that
  starts with `no_such` is a deliberately missing file, as tests of error messages use);
- section citations `§N` that are not a section of docs/bon_math.md (a bare § in this repository
  always means a section of that page).
Each problem is reported as path:line.
"""

import pathlib
import posixpath
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MATH_DOC = "docs/bon_math.md"
THIS_FILE = "tests/test_references.py"  # its docstring and self-test spell out the bad patterns

OUTSIDE = re.compile(r"\.\./shared|(?<![\w.~-])/(?:work|home|Users|mnt)/")
EXTERNAL_DOCS = re.compile(r"\b(?:BON_MATH|MODEL_API)\b")
MARKDOWN_NAME = re.compile(r"(?<![\w./-])([\w./-]*[\w-]\.md)\b")
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:bonjax|tests|docs|benchmarks|colabs|experiments|\.ci)/[\w./-]*)")
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,}\s+(\d+(?:\.\d+)*)\.?\s", flags=re.MULTILINE)


def repository_files(root: pathlib.Path) -> list[str]:
  """Paths (relative, posix) of tracked files and untracked ones that git does not ignore."""
  try:
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout
  except (OSError, subprocess.CalledProcessError) as error:
    pytest.skip(f"not a git checkout ({error}): cannot list the repository's files")
  return sorted({name for name in listing.decode().split("\0") if name})


def _read_text(path: pathlib.Path) -> str | None:
  try:
    data = path.read_bytes()
  except OSError:  # tracked but deleted in the work tree
    return None
  if b"\0" in data:
    return None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return None


def _with_parents(files: list[str]) -> set[str]:
  known = set(files)
  for name in files:
    parent = posixpath.dirname(name)
    while parent:
      known.add(parent)
      parent = posixpath.dirname(parent)
  return known


def _missing_link(source: str, target: str, known: set[str]) -> str | None:
  """Why a markdown link target from file `source` does not resolve, or None if it does."""
  if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
    return None  # a URL (http:, mailto:, ...) or an anchor in the same page
  path = target.split("#", 1)[0].rstrip("/")
  resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
  if resolved == ".." or resolved.startswith("../") or path.startswith("/"):
    return f"link {target!r} points outside the repository"
  if resolved not in known:
    return f"link {target!r} resolves to {resolved!r}, which is not in the repository"
  return None


def find_problems(root: pathlib.Path, files: list[str]) -> list[str]:
  """'path:line: what' for every reference in `files` (relative to `root`) that leaves the repo."""
  known = _with_parents(files)
  basenames = {posixpath.basename(name) for name in files}
  math_doc = _read_text(root / MATH_DOC) if MATH_DOC in known else None
  sections = set(HEADING.findall(math_doc or ""))
  problems = []
  for name in files:
    if name == THIS_FILE:
      continue
    text = _read_text(root / name)
    if text is None:
      continue
    links_apply = name.endswith((".md", ".ipynb"))
    for number, line in enumerate(text.splitlines(), start=1):
      where = f"{name}:{number}"
      for match in OUTSIDE.finditer(line):
        problems.append(f"{where}: {match.group()!r} is a path outside the repository")
      for match in EXTERNAL_DOCS.finditer(line):
        problems.append(f"{where}: {match.group()!r} names a document outside the repository "
                        f"(the math reference is {MATH_DOC})")
      for match in MARKDOWN_NAME.finditer(line):
        mentioned = match.group(1)
        if "/" in mentioned.strip("./"):  # a path: from the repository root or from this file
          exists = any(posixpath.normpath(candidate) in known for candidate in
                       (mentioned, posixpath.join(posixpath.dirname(name), mentioned)))
        else:
          exists = posixpath.basename(mentioned) in basenames
        if not exists and not OUTSIDE.search(mentioned):
          problems.append(f"{where}: {mentioned!r} is not a file in the repository")
      for match in REPO_PATH.finditer(line):
        path = match.group(1).rstrip(".-").rstrip("/")
        # Virtual environments (benchmarks/.venv-tunix) are made by the scripts that name them.
        if (path not in known and not posixpath.basename(path).startswith("no_such")
            and ".venv" not in path):
          problems.append(f"{where}: {path!r} is not in the repository")
      if links_apply:
        for match in MARKDOWN_LINK.finditer(line):
          why = _missing_link(name, match.group(1), known)
          if why:
            problems.append(f"{where}: {why}")
      for match in SECTION.finditer(line):
        if match.group(1) not in sections:
          problems.append(f"{where}: §{match.group(1)} is not a section of {MATH_DOC} "
                          f"(its sections: {', '.join(sorted(sections)) or 'none found'})")
  return problems


def test_every_reference_points_inside_the_repository():
  files = repository_files(ROOT)
  assert MATH_DOC in files and "README.md" in files
  problems = find_problems(ROOT, files)
  assert not problems, "references that a clone cannot follow:\n" + "\n".join(problems)


def test_each_kind_of_bad_reference_is_reported_with_its_line(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "README.md").write_text("# A project\n")
  (tmp_path / "docs" / "bon_math.md").write_text("# Math\n\n## 1. Notation\n\n### 5.2 BoN-RL\n")
  (tmp_path / "docs" / "guide.md").write_text("\n".join([
      "Fine: docs/bon_math.md §5.2, [math](bon_math.md), [site](https://example.org), §1, "
      "experiments/no_such.gin, ../README.md.",  # 1
      "See ../shared/BON_MATH.md for the math.",  # 2: outside path, external doc name
      "Written on /work/main/README.md.",  # 3: absolute path
      "The calling convention is in MODEL_API.md.",  # 4: external doc name, missing .md
      "Read [the design](../../DESIGN.md) first.",  # 5: link leaving the repository
      "Read [tests](../tests/missing.py) and docs/absent.md.",  # 6: missing link, missing path
      "As derived in §9.",  # 7: no such section
  ]) + "\n")
  files = ["README.md", "docs/bon_math.md", "docs/guide.md"]
  problems = find_problems(tmp_path, files)
  lines = sorted({int(p.split(":")[1]) for p in problems})
  assert lines == [2, 3, 4, 5, 6, 7], problems
  text = "\n".join(problems)
  for expected in ("'../shared'", "'/work/'", "'BON_MATH'", "'MODEL_API'", "outside the repository",
                   "'docs/absent.md' is not in the repository", "'tests/missing.py'",
                   "§9 is not a section"):
    assert expected in text, (expected, problems)
