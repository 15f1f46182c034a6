#!/usr/bin/env bash
# Wheels for a GPU node that cannot reach a package index (Python 3.12, x86-64, CUDA 13, with
# torch, Lightning and transformers already there), into a folder that benchmarks/gpu_check.sh
# installs from (default .whl/, which git should ignore: `echo /.whl/ >> .git/info/exclude`).
#
#   bash benchmarks/carry_wheels.sh [DEST]     # ~60 MiB: the fit row's packages + flash-attn-4
#   FLASH4=0 bash benchmarks/carry_wheels.sh   # without flash-attn-4 (~5 MiB)
#
# flash-attn-4 (attention_backend: flex-flash) is pinned to one point in time whose parts were
# released together and whose interface is the one torch 2.11's FlexAttention FLASH template
# calls: flash-attn-4 4.0.0b11, quack-kernels 0.4.1, CuTe DSL 4.4.2 (its CUDA-13 build),
# apache-tvm-ffi 0.1.9. The CuTe DSL compiler is one 75 MiB wheel of two shared libraries;
# it travels unpacked and recompressed with xz (~47 MiB), as DEST/*.site.tar.xz, which
# gpu_check.sh unpacks beside the installed wheels.
set -euo pipefail
dest=${1:-.whl}
mkdir -p "$dest"
download() {  # download DIR PACKAGE... : binary wheels for CPython 3.12 on x86-64 Linux
  local dir=$1
  shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" "$@"
}
# the fit row: torchao's 8-bit AdamW and FP8 linears; jsonargparse for the CLI's config types
download "$dest" torchao==0.18.0 jsonargparse==4.53.0 docstring-parser==0.18.0 \
  typeshed-client==2.15.0
if [ "${FLASH4:-1}" = 1 ]; then
  download "$dest" --pre flash-attn-4==4.0.0b11 quack-kernels==0.4.1 apache-tvm-ffi==0.1.9 \
    torch-c-dlpack-ext==0.1.5
  bundle="$dest/nvidia-cutlass-dsl-libs-cu13-4.4.2.site.tar.xz"
  if [ ! -s "$bundle" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    download "$tmp" nvidia-cutlass-dsl-libs-cu13==4.4.2
    python3 -m zipfile -e "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl "$tmp/site"
    echo "compressing the CuTe DSL libraries (a few minutes)..."
    tar -C "$tmp/site" -cf - . | xz -T0 --x86 --lzma2=preset=9e,dict=64MiB > "$bundle.tmp"
    mv "$bundle.tmp" "$bundle"
  fi
fi
du -sh "$dest"
