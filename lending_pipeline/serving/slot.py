"""One blue/green slot: `bentoml serve` of the Bento named in the slot's tag file.

`python -m lending_pipeline.serving.slot --data-dir D NAME PORT` is the slot's program under the
process manager. It reads the tag at every start, so a restarted slot serves the Bento it served
before, and a deploy changes a slot by writing its tag and restarting it. The server dies with
the process manager (`child.die_with_parent`); it gets its own BentoML home (two servers
sharing one wipe each other's metrics directory) with the shared Bento and model stores linked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lending_pipeline.serving.child import die_with_parent
from lending_pipeline.serving.package import bentoml_env, bentoml_home


def tag_file(data_dir: Path, slot: str) -> Path:
    return data_dir / "serving" / "slots" / f"{slot}.bento"


def read_tag(data_dir: Path, slot: str) -> str | None:
    path = tag_file(data_dir, slot)
    return path.read_text(encoding="utf-8").strip() or None if path.exists() else None


def write_tag(data_dir: Path, slot: str, bento_tag: str) -> None:
    path = tag_file(data_dir, slot)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(bento_tag + "\n", encoding="utf-8")
    temporary.replace(path)


def slot_home(data_dir: Path, slot: str) -> Path:
    """The slot's BentoML home, with the shared Bento and model stores linked in."""
    home = data_dir / "serving" / "slots" / slot
    home.mkdir(parents=True, exist_ok=True)
    shared = bentoml_home(data_dir)
    for store in ("bentos", "models"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        link = home / store
        if not link.exists():
            link.symlink_to(shared / store, target_is_directory=True)
    return home


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("slot")
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    die_with_parent()
    tag = read_tag(args.data_dir, args.slot)
    if tag is None:
        sys.exit(f"slot {args.slot}: no Bento assigned ({tag_file(args.data_dir, args.slot)})")
    env = bentoml_env(args.data_dir)
    env["BENTOML_HOME"] = str(slot_home(args.data_dir, args.slot))
    env["LENDING_DATA_DIR"] = str(args.data_dir)
    command = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1"]
    print(f"slot {args.slot}: serving {tag} on port {args.port}", flush=True)
    os.execve(sys.executable, [*command, "--port", str(args.port)], env)


if __name__ == "__main__":
    main()
