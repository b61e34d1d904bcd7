# syntax=docker/dockerfile:1.7
# The metrics sidecar: a small Node.js process beside each worker (no engine,
# no CUDA). Build from the repository root:
#   docker build -f deploy/sidecar.Dockerfile -t streamsink/metrics-sidecar:0.1.0 .
# Runs as uid 10001 with a read-only root filesystem. GPU metrics need the
# NVIDIA runtime to inject nvidia-smi (NVIDIA_DRIVER_CAPABILITIES=utility);
# without it the GPU series are simply absent.

ARG NODE_MAJOR=20

# ---- build: TypeScript only; the native addon is not needed ----
FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY services ./services
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ----
FROM node:${NODE_MAJOR}-bookworm-slim AS runtime
RUN groupadd --gid 10001 streamsink \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin streamsink
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/services/metrics-sidecar ./dist/services/metrics-sidecar
COPY --from=build /src/dist/services/worker/logger.js ./dist/services/worker/logger.js
COPY --from=build /src/dist/services/security/kafka-client-security.js ./dist/services/security/kafka-client-security.js
ENV NODE_ENV=production \
    NVIDIA_DRIVER_CAPABILITIES=utility
USER 10001:10001
EXPOSE 9465
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.STREAMSINK_SIDECAR_PORT||9465)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/services/metrics-sidecar/main.js"]
