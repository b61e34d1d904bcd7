# syntax=docker/dockerfile:1.7
# The streamsink worker: Node.js, the native engine (CUDA backend) and the
# TypeScript service. Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t streamsink/worker:0.1.0 .
# The engine is compiled here, in the devel image, never at run time. The
# runtime image has the CUDA runtime libraries only, runs as uid 10001 and
# needs no writable root filesystem: mount /tmp and the snapshot directory.
#
# Build arguments:
#   CUDA_ARCHITECTURES  GPU architectures to compile kernels for (90a = H100/H200)
#   HOST_SIMD           ON compiles CPU kernels for the build machine's AVX2/FMA;
#                       OFF (default) keeps the image runnable on any x86-64 node

ARG CUDA_VERSION=12.6.3
ARG UBUNTU=ubuntu24.04
ARG NODE_MAJOR=20

FROM node:${NODE_MAJOR}-bookworm-slim AS node

# ---- build: native addon (CMake + nvcc) and the TypeScript ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG CUDA_ARCHITECTURES=90a
ARG HOST_SIMD=OFF
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
WORKDIR /src
COPY package.json package-lock.json ./
# Scripts off: the addon is built below with explicit CUDA settings.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY native ./native
RUN npx cmake-js compile --directory native --out native/build \
      --CDSTREAMSINK_CUDA=ON \
      --CDCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} \
      --CDSTREAMSINK_HOST_SIMD=${HOST_SIMD}
COPY tsconfig.json ./
COPY services ./services
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ----
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime
RUN groupadd --gid 10001 streamsink \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin streamsink \
 && mkdir -p /var/lib/streamsink/snapshots \
 && chown -R 10001:10001 /var/lib/streamsink
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/services ./dist/services
COPY --from=build /src/native/build/Release/streamsink.node ./native/build/Release/streamsink.node
COPY proto ./proto
COPY services/worker/redis/lua ./services/worker/redis/lua
COPY models ./models
COPY deploy/docker/grpc-healthcheck.mjs ./deploy/docker/grpc-healthcheck.mjs
ENV NODE_ENV=production \
    STREAMSINK_BACKEND=auto \
    STREAMSINK_SNAPSHOT_DIR=/var/lib/streamsink/snapshots \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 50051 9464
VOLUME ["/var/lib/streamsink/snapshots"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "/app/deploy/docker/grpc-healthcheck.mjs"]
ENTRYPOINT ["node", "/app/dist/services/cli/main.js"]
CMD ["serve"]
