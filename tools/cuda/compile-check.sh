#!/usr/bin/env bash
# CI's CUDA build check, for machines with no GPU and no CUDA install: configures
# native/ with the CUDA backend required (STREAMSINK_CUDA=ON, sm_90a) against the
# toolkit tools/cuda/toolkit.sh assembles from PyPI wheels, and builds every
# target that needs no Node.js (the default target outside cmake-js: the static
# streamsink_core with every .cu file CMake lists, and any C++/CUDA test or
# benchmark binary). Compiles and links; runs nothing. A compile or link error
# fails the script (make -k: every broken file is reported in one run).
#
#   compile-check.sh [--fresh]     --fresh: wipe the build directory first
#
# Environment: STREAMSINK_CUDA_CHECK_DIR (build dir, default native/build-cuda-ci),
# STREAMSINK_CUDA_ARCHITECTURES (default 90a), STREAMSINK_CI_JOBS (default 2),
# CXX (host compiler, default g++), STREAMSINK_INFRA_DIR (toolkit cache root),
# STREAMSINK_CUDA_ROOT (use this installed toolkit instead of the wheels).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${STREAMSINK_CUDA_CHECK_DIR:-$REPO/native/build-cuda-ci}"
ARCHS="${STREAMSINK_CUDA_ARCHITECTURES:-90a}"
JOBS="${STREAMSINK_CI_JOBS:-2}"

log() { echo "compile-check: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

start=$SECONDS
if [[ -n "${STREAMSINK_CUDA_ROOT:-}" ]]; then
  CUDA_ROOT="$STREAMSINK_CUDA_ROOT"
else
  CUDA_ROOT="$(bash "$REPO/tools/cuda/toolkit.sh")" || fail "no CUDA toolkit (tools/cuda/toolkit.sh)"
fi
[[ -x "$CUDA_ROOT/bin/nvcc" ]] || fail "no nvcc at $CUDA_ROOT/bin/nvcc"
NVCC="$CUDA_ROOT/bin/nvcc"
HOST_CXX="$(command -v "${CXX:-g++}")" || fail "no host compiler ${CXX:-g++}"
log "$("$NVCC" --version | grep -o 'release [0-9.]*, V[0-9.]*'), host $("$HOST_CXX" --version | head -1), arch $ARCHS"

# nvcc refuses host compilers newer than its release supports; only then let it.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo '__global__ void k(int *p) { *p = 1; } int main() { k<<<1, 1>>>(nullptr); return 0; }' >"$probe/p.cu"
cuda_flags=""
if ! "$NVCC" -ccbin "$HOST_CXX" -c "$probe/p.cu" -o "$probe/p.o" 2>"$probe/err"; then
  if grep -q "unsupported GNU version\|unsupported .* version" "$probe/err"; then
    log "nvcc does not support $HOST_CXX's version; building with -allow-unsupported-compiler"
    cuda_flags="-allow-unsupported-compiler"
  else
    cat "$probe/err" >&2
    fail "nvcc cannot compile a trivial kernel"
  fi
fi

# A build dir made with another toolkit, compiler or flags is configured afresh.
stamp="$CUDA_ROOT|$HOST_CXX|$ARCHS|$cuda_flags"
if [[ "${1:-}" == "--fresh" ]] || [[ -d "$BUILD" && "$(cat "$BUILD/.compile-check-stamp" 2>/dev/null)" != "$stamp" ]]; then
  rm -rf "$BUILD"
fi
gen=()
[[ -f "$BUILD/CMakeCache.txt" ]] || gen=(-G "Unix Makefiles")
cmake -S "$REPO/native" -B "$BUILD" "${gen[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DSTREAMSINK_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" \
  -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DCMAKE_CUDA_HOST_COMPILER="$HOST_CXX" \
  -DCMAKE_CXX_COMPILER="$HOST_CXX" \
  -DCMAKE_CUDA_FLAGS="$cuda_flags" \
  -DCUDAToolkit_ROOT="$CUDA_ROOT" || fail "cmake configure (native/CMakeLists.txt with STREAMSINK_CUDA=ON)"
echo "$stamp" >"$BUILD/.compile-check-stamp"

# The default target: outside cmake-js (no CMAKE_JS_VERSION) the Node addon is
# not defined, so this is everything that needs no Node.js.
cmake --build "$BUILD" -j "$JOBS" -- -k || fail "CUDA build of native/ (errors above)"

# Every .cu under native/ should be compiled by some target; say which are not.
compiled=0
orphans=()
while IFS= read -r cu; do
  rel="${cu#"$REPO/native/"}"
  if compgen -G "$BUILD/CMakeFiles/*.dir/$rel.o" >/dev/null; then
    compiled=$((compiled + 1))
  else
    orphans+=("native/$rel")
  fi
done < <(find "$REPO/native" -path "$REPO/native/build*" -prune -o -name '*.cu' -print | sort)
((compiled > 0)) || fail "no .cu file was compiled (is the CUDA backend wired into CMake?)"
for o in "${orphans[@]}"; do log "warning: $o is not compiled by any CMake target"; done

targets=$(find "$BUILD" -maxdepth 1 -type f \( -name '*.a' -o -name '*.so' -o -perm -u+x \) -printf '%f ' 2>/dev/null | sed 's/ $//')
log "OK: $compiled CUDA source(s) compiled for $ARCHS; built ${targets:-nothing} in $((SECONDS - start)) s"
