# syntax=docker/dockerfile:1

# Build stage: compile TypeScript to dist/.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# The Letta simulator, a stand-in for Letta's REST API for demos (docker compose's letta-sim,
# or `docker build --target simulator`). It is no part of the daemon's image: it runs from its
# TypeScript source (Node strips the types) on the build stage's dependencies.
FROM build AS simulator
COPY config ./config
COPY tools ./tools
USER node
EXPOSE 8283
ENTRYPOINT ["node", "tools/simulator/main.ts"]
CMD ["--host", "0.0.0.0", "--port", "8283"]

# Runtime stage: production dependencies only, non-root, tini as PID 1 so SIGTERM reaches
# Node and the daemon drains before Kubernetes or Compose kills it.
FROM node:24-slim
LABEL org.opencontainers.image.title="letta-run-watcher" \
      org.opencontainers.image.description="Durable, signed notifications when Letta agent runs finish" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/letta-run-watcher/letta-run-watcher"
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    WATCHER_HTTP_HOST=0.0.0.0 \
    WATCHER_HTTP_PORT=8080
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY config ./config
COPY --from=build /app/dist ./dist
USER node
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.WATCHER_HTTP_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Heap policy (BENCHMARKS.md, "What profiling changed"): the daemon's heap is short-lived
# garbage. An 8 MB young generation and an old generation allowed to double over what survives
# keep RSS near 150 MB (V8's defaults on a large host: ~300 MB). With allocation-site
# pretenuring on, V8 allocated each poll's response headers and body straight into the old
# generation (the allocation profiler saw them survive every young collection), so full
# collections ran every ~200 ms; without it they run half as often, -16 % CPU per poll. V8
# takes these flags only on the command line, not in NODE_OPTIONS, hence here.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=8", "--heap-growing-percent=100", "--no-allocation-site-pretenuring", "dist/main.js"]
CMD ["run"]
