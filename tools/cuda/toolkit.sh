#!/usr/bin/env bash
# A CUDA toolkit for compiling (not running) the CUDA sources on a machine with
# no GPU and no CUDA install: NVIDIA's PyPI wheels, pinned to one CUDA release
# (the set PyPI's cuda-toolkit==13.0.2 metapackage pins; the H100 host has
# CUDA 13.0), installed once into a cache and assembled into a directory laid
# out like a toolkit root:
#   bin/      nvcc, nvcc.profile, ptxas, cudafe++, fatbinary, nvlink, bin2c, crt/
#   nvvm/     cicc, libdevice
#   include/  CUDA runtime, crt, CCCL (include/cccl), cuBLAS/cuBLASLt headers
#   lib64/    libcudart (shared + static), libcudadevrt, libcublas, libcublasLt,
#             with the unversioned .so names a linker looks for (lib -> lib64),
#             and lib64/stubs/libcuda.so, a driver API link stub made here
# CMake finds it with -DCMAKE_CUDA_COMPILER=ROOT/bin/nvcc -DCUDAToolkit_ROOT=ROOT.
#
#   toolkit.sh                 install what is missing; print the root on stdout
#   toolkit.sh --no-install    only print the root; exit 1 if it is not installed
#
# Environment: STREAMSINK_INFRA_DIR (cache root, default ~/.cache/streamsink),
# PYTHON (python3 binary, for pip). Needs only PyPI (about 500 MB of wheels, 850
# MB installed; cuBLAS is most of it).
set -euo pipefail

CUDA_RELEASE=13.0.2
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3
)

CACHE="${STREAMSINK_INFRA_DIR:-$HOME/.cache/streamsink}"
PYTHON="${PYTHON:-python3}"
# The directory name changes with the pins, so editing them installs afresh.
key=$(printf '%s\n' "${WHEELS[@]}" | cksum | cut -d' ' -f1)
BASE="$CACHE/cuda-$CUDA_RELEASE-$key"
ROOT="$BASE/root"

log() { echo "toolkit.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

ready() { [[ -f "$BASE/.complete" && -x "$ROOT/bin/nvcc" ]]; }

if [[ "${1:-}" == "--no-install" ]]; then
  ready || die "no CUDA toolkit at $ROOT (run tools/cuda/toolkit.sh)"
  echo "$ROOT"
  exit 0
fi

if ready; then
  echo "$ROOT"
  exit 0
fi

mkdir -p "$CACHE"
# One installer at a time (CI jobs or engineers sharing a cache).
exec 9>"$CACHE/.cuda-$CUDA_RELEASE-$key.lock"
flock 9
if ready; then
  echo "$ROOT"
  exit 0
fi

# pip: the interpreter's own, else a small venv of the cache's (Debian's python3
# ships pip only as python3-pip/python3-venv).
pip=("$PYTHON" -m pip)
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  venv="$CACHE/pip-venv"
  if [[ ! -x "$venv/bin/pip" ]]; then
    if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
      if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -q >&2 && apt-get install -y -q python3-venv >&2
      else
        die "$PYTHON has neither pip nor venv (install python3-pip or python3-venv)"
      fi
    fi
    "$PYTHON" -m venv "$venv" >&2
  fi
  pip=("$venv/bin/pip")
fi

rm -rf "$BASE"
tmp="$BASE.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
log "installing CUDA $CUDA_RELEASE wheels from PyPI: ${WHEELS[*]}"
# One pip run, so the wheels' shared nvidia/cu13 tree is merged (separate
# --target runs would replace it).
PIP_ROOT_USER_ACTION=ignore "${pip[@]}" install --quiet --no-deps --no-compile --disable-pip-version-check \
  --target "$tmp/wheels" "${WHEELS[@]}" >&2 || die "pip install failed"

cu="$tmp/wheels/nvidia/cu13"
[[ -x "$cu/bin/nvcc" ]] || die "the nvcc wheel has no nvidia/cu13/bin/nvcc (layout changed?)"

# nvcc reads bin/nvcc.profile next to the path it was started by (symlinks not
# followed) and takes TOP=bin/.., so bin/ holds links to each file and the
# rest of the tree sits beside it.
r="$tmp/root"
mkdir -p "$r/bin" "$r/lib64"
for f in "$cu"/bin/*; do ln -s "../../wheels/nvidia/cu13/bin/$(basename "$f")" "$r/bin/"; done
ln -s ../wheels/nvidia/cu13/include "$r/include"
ln -s ../wheels/nvidia/cu13/nvvm "$r/nvvm"
for f in "$cu"/lib/*; do
  n=$(basename "$f")
  [[ "$n" == cmake ]] && continue
  ln -s "../../wheels/nvidia/cu13/lib/$n" "$r/lib64/$n"
  # libfoo.so.13 -> libfoo.so, the name -lfoo and CMake's find_library look for.
  if [[ "$n" == *.so.* ]]; then ln -sf "$n" "$r/lib64/${n%%.so.*}.so"; fi
done
ln -s lib64 "$r/lib"
# No wheel ships the driver's link stub (a toolkit's lib64/stubs/libcuda.so,
# which CUDA::cuda_driver links against; the real libcuda.so.1 comes with the
# driver). Make one the same way: every CUresult cu* function cuda.h declares,
# after its _v2/_v3 macros, as an empty function, with the driver's soname.
mkdir -p "$r/lib64/stubs"
"${CC:-gcc}" -E -P -I"$r/include" "$r/include/cuda.h" | tr '\n' ' ' \
  | grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/^CUresult +//; s/ *\($//' | sort -u \
  | sed 's/.*/void &(void) {}/' >"$tmp/cuda_stub.c"
[[ $(wc -l <"$tmp/cuda_stub.c") -gt 300 ]] || die "found too few driver API functions in cuda.h for the libcuda stub"
"${CC:-gcc}" -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$r/lib64/stubs/libcuda.so" "$tmp/cuda_stub.c"
rm -f "$tmp/cuda_stub.c"
for need in bin/nvcc bin/ptxas nvvm/bin/cicc include/cuda_runtime.h include/crt/host_config.h \
            include/cublasLt.h lib64/libcudart.so lib64/libcudart_static.a lib64/libcublas.so lib64/libcublasLt.so lib64/stubs/libcuda.so; do
  [[ -e "$r/$need" ]] || die "assembled toolkit lacks $need"
done
"$r/bin/nvcc" --version >"$tmp/nvcc-version.txt" || die "nvcc does not run"
touch "$tmp/.complete"
mv "$tmp" "$BASE"
trap - EXIT
log "CUDA toolkit at $ROOT ($(grep -o 'release [0-9.]*' "$BASE/nvcc-version.txt"))"
echo "$ROOT"
