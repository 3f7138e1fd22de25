"""Print every YAML file of a folder as one JSON object: {"file name": [document, ...]}.

The Kubernetes manifest tests (tests/api/kubernetes.rs) read the manifests through this, with
the PyYAML of .venv/ (tests/kubernetes/requirements.txt), so the Rust side needs no YAML parser.
"""

import json
import pathlib
import sys

import yaml


def main() -> None:
    folder = pathlib.Path(sys.argv[1])
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            out[path.name] = [doc for doc in yaml.safe_load_all(f) if doc is not None]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
