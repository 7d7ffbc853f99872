"""Build the entity-centric fusion benchmark corpus (BEIR layout): short abstracts of Python standard-library
functions and classes, taken from the docstrings of the interpreter that runs this script.

    python bench/data/build_pyfuncs_corpus.py OUT_DIR [--max-docs 5000]

One document per public function, class or method (``doc_id`` = the qualified name, e.g.
``shutil.copytree``): the name, the signature when it has one, and the docstring cut to 800 characters. An
object reachable under several names is kept once (first module in sorted order). Private modules, tests,
GUI toolkits and the judged entities' duplicates are left out; when there are more than ``--max-docs``
entities a deterministic subset is kept (every judged entity is always in it).

The questions (``bench/data/pyfuncs_questions.json``) were written by hand *without naming the entity* —
like questions over an encyclopedia of entities — and judged against these abstracts.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import sys
import warnings
from pathlib import Path

from _beir import write_beir  # bench/data/_beir.py (this script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
SKIP = (
    "test",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "antigravity",
    "this",
    "pydoc_data",
    "xxsubtype",
    "xxlimited",
    "_",
)

SUBMODULES = (
    "os.path",
    "urllib.parse",
    "urllib.request",
    "xml.etree.ElementTree",
    "concurrent.futures",
    "email.utils",
    "logging.handlers",
    "importlib.resources",
    "collections.abc",
    "http.client",
    "http.server",
    "unittest.mock",
    "multiprocessing.pool",
    "json.decoder",
    "email.message",
)


def entities() -> list[tuple[str, str]]:
    seen: set[int] = set()
    out: list[tuple[str, str]] = []
    names = sorted({n for n in sys.stdlib_module_names if not n.startswith(SKIP)} | set(SUBMODULES))
    for modname in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mod = importlib.import_module(modname)
            except Exception:
                continue
        public = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        for attr in sorted(set(public)):
            obj = getattr(mod, attr, None)
            if obj is None or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            members = [(f"{modname}.{attr}", obj)]
            if inspect.isclass(obj) and getattr(obj, "__module__", "").split(".")[0] == modname.split(".")[0]:
                for m, f in sorted(vars(obj).items()):
                    if not m.startswith("_") and inspect.isroutine(f):
                        members.append((f"{modname}.{attr}.{m}", f))
            for qual, o in members:
                if id(o) in seen:
                    continue
                seen.add(id(o))
                doc = inspect.getdoc(o) or ""
                if len(doc) < 40:
                    continue
                try:
                    sig = str(inspect.signature(o))
                except (TypeError, ValueError):
                    sig = ""
                out.append((qual, f"{qual}{sig}: {doc[:800]}"))
    return out


def build(out: Path, max_docs: int) -> None:
    spec = json.loads((HERE / "pyfuncs_questions.json").read_text(encoding="utf-8"))
    judged = {d for q in spec["questions"] for d in q["relevant"]}
    ents = entities()
    have = {q for q, _ in ents}
    if missing := judged - have:
        raise SystemExit(f"judged entities not found in this Python's standard library: {sorted(missing)}")
    if len(ents) > max_docs:
        keep = [e for e in ents if e[0] in judged]
        rest = sorted(
            (e for e in ents if e[0] not in judged), key=lambda e: hashlib.sha256(e[0].encode()).digest()
        )
        ents = sorted(keep + rest[: max_docs - len(keep)])
    write_beir(out, ({"_id": qual, "title": "", "text": text} for qual, text in ents), spec["questions"])
    print(
        f"{len(ents)} entities, {len(spec['questions'])} questions -> {out} (Python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-docs", type=int, default=5000)
    a = ap.parse_args()
    build(a.out, a.max_docs)
