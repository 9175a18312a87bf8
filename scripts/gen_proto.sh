#!/usr/bin/env bash
# Regenerates droplet/proto/gen/ from droplet/proto/droplet.proto (run: make proto).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=droplet/proto/gen
"$PY" -m grpc_tools.protoc -I droplet/proto --python_out="$out" --pyi_out="$out" droplet/proto/droplet.proto
echo "generated $out/droplet_pb2.py"
