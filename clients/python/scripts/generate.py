"""Generates the Python stubs of ../../proto into src/ (committed), or with
--check regenerates them into a temporary directory and fails when the
committed ones differ, so a proto change without regeneration fails CI.

The stubs are committed so that `pip install clients/python` needs no code
generator, and the check pins what made them: grpcio-tools 1.85.1 (see the
`generate` extra). The "NO CHECKED-IN PROTOBUF GENCODE" line in them is
protoc's standard header; the runtime check they carry refuses a protobuf
older than the generator, and this script keeps them current.

Usage: python scripts/generate.py [--check]
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc
import grpc_tools

HERE = Path(__file__).resolve().parent.parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "voiceagent/v1/voice_agent.proto"
GENERATED = [
    "voiceagent/v1/voice_agent_pb2.py",
    "voiceagent/v1/voice_agent_pb2.pyi",
    "voiceagent/v1/voice_agent_pb2_grpc.py",
]


def generate(out: Path) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = [
                f
                for f in GENERATED
                if not (HERE / "src" / f).exists() or not filecmp.cmp(Path(tmp) / f, HERE / "src" / f, shallow=False)
            ]
        if stale:
            print("Python stubs are stale; run `python scripts/generate.py` in clients/python and commit:")
            for f in stale:
                print(f"  src/{f}")
            return 1
        print(f"Python stubs are up to date ({len(GENERATED)} files).")
        return 0
    if sys.argv[1:]:
        print(__doc__)
        return 2
    generate(HERE / "src")
    return 0


if __name__ == "__main__":
    sys.exit(main())
