#!/usr/bin/env bash
# On a development machine: pack what the Node service needs on the GPU host
# (which has no Node.js and no network) into .device/nodepack/ (ignored):
# the Node binary, the production node_modules, and the native addon built
# here with CUDA for sm_90a (tools/cuda/toolkit.sh's PyPI toolkit; the host's
# driver and CUDA 13 libraries load it). About 28 MB; carry it and dist/ with
# the device tool, then run tools/cuda/node-on-gpu.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
P=.device/nodepack
mkdir -p "$P"
ROOT=$(bash tools/cuda/toolkit.sh)
npx cmake-js compile --directory native --out /tmp/streamsink-addon-cuda --CDSTREAMSINK_CUDA=ON \
  --CDCMAKE_CUDA_COMPILER="$ROOT/bin/nvcc" --CDCUDAToolkit_ROOT="$ROOT" --CDCMAKE_CUDA_ARCHITECTURES=90a >/tmp/streamsink-addon-cuda.log
strip --strip-unneeded -o /tmp/streamsink-addon-cuda/streamsink.node /tmp/streamsink-addon-cuda/Release/streamsink.node
xz -9 -T2 -c /tmp/streamsink-addon-cuda/streamsink.node >"$P/streamsink.node.xz"
# Production packages only (top-level folders; scoped ones by scope/name).
npm ls --omit=dev --all --parseable 2>/dev/null | sed "s#^$PWD/##" | grep '^node_modules/' |
  awk -F/ '{ if ($2 ~ /^@/) print $1"/"$2"/"$3; else print $1"/"$2 }' | sort -u | xargs tar cf - | xz -6 -T2 >"$P/nm.tar.xz"
xz -9e -T2 -c "$(command -v node)" >"$P/node.xz"
npm run build >/dev/null
du -sh "$P" dist
