#!/bin/sh
# How modelcar is installed, everywhere: the two container images (Containerfile,
# Containerfile.compress), `make run`, `make test`, and the test environments that stand for the
# images in the Tekton tests. One definition, so what the tests run cannot drift from the images.
#
#   scripts/install-modelcar.sh [--editable] SOURCE [EXTRAS]
#
# SOURCE is the project directory; EXTRAS a comma-separated list of extras (compress, test).
# PIP names the pip to use (default: pip on PATH). With the compress extra, torch is installed
# first: TORCH_SPEC pins it (e.g. ==2.13.0, a CPU wheel on disk in this project's CI; unset, the
# extra's own range decides), and TORCH_INDEX_URL adds an index (e.g. a CUDA build's), so
# llmcompressor's dependency on torch does not pull a different build.
set -eu

editable=""
if [ "${1:-}" = "--editable" ]; then
    editable="-e"
    shift
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 [--editable] SOURCE [EXTRAS]" >&2
    exit 2
fi
source_dir=$1
extras=${2:-}
pip=${PIP:-pip}

set --
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    set -- --extra-index-url "$TORCH_INDEX_URL"
fi

case ",$extras," in
    *,compress,*)
        if [ -n "${TORCH_SPEC:-}" ]; then
            $pip install --quiet "$@" "torch$TORCH_SPEC"
        fi
        ;;
esac

if [ -n "$extras" ]; then
    target="$source_dir[$extras]"
else
    target="$source_dir"
fi
if [ -n "$editable" ]; then
    $pip install --quiet "$@" -e "$target"
else
    $pip install --quiet "$@" "$target"
fi
