#!/usr/bin/env bash
# Development loop without reinstalling: builds fastconv._C and fastconv._cuda_emu (the CUDA
# kernels under the CPU emulation; FASTCONV_CUDA=ON adds fastconv._cuda) into build/dev-NAME and lays
# out an importable package in build/dev-NAME/site whose Python files are links to ./fastconv.
#
#   tools/dev_build.sh mine            # incremental rebuild (a few seconds after a kernel edit)
#   PYTHONPATH=build/dev-mine/site python -m pytest -q tests
#
# Several builds can live side by side (one NAME each). `pip install .` stays the real install.
set -euo pipefail
name=${1:-dev}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/dev-$name"
site="$build/site/fastconv"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFASTCONV_CUDA="${FASTCONV_CUDA:-OFF}" -DFASTCONV_CUDA_ARCHS="${FASTCONV_CUDA_ARCHS:-}" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
targets="_C _cuda_emu"
[ "${FASTCONV_CUDA:-OFF}" = OFF ] || targets="$targets _cuda"
cmake --build "$build" --target $targets >/dev/null
rm -rf "$site" && mkdir -p "$site"
for f in "$root"/fastconv/*; do ln -s "$f" "$site/$(basename "$f")"; done
rm -f "$site"/_C*.so "$site"/_cuda*.so
cp "$build"/_C*.so "$build"/_cuda_emu*.so "$site/"
[ "${FASTCONV_CUDA:-OFF}" = OFF ] || cp "$build"/_cuda*.so "$site/"
echo "built $build; use PYTHONPATH=$build/site"
