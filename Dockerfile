# One image for every Fleet app; the command picks the app
# (node apps/worker/dist/main.js, apps/scheduler/dist/main.js, apps/cli/dist/main.js,
# apps/dashboard/dist/main.js).
# Node pinned to a minor version (22 LTS); bump deliberately.
FROM node:22.16-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY apps/bench/package.json apps/bench/
COPY apps/cli/package.json apps/cli/
COPY apps/dashboard/package.json apps/dashboard/
COPY apps/scheduler/package.json apps/scheduler/
COPY apps/worker/package.json apps/worker/
COPY packages/core/package.json packages/core/
COPY packages/db/package.json packages/db/
COPY packages/jobs/package.json packages/jobs/
COPY packages/remote/package.json packages/remote/
COPY packages/storage/package.json packages/storage/
COPY packages/testing/package.json packages/testing/
# npm install, not npm ci: the lockfile was made where the registry serves only this
# platform's optional binaries (swc, turbo), which npm ci rejects; install keeps the locked
# versions (see .ci/run).
RUN npm install --no-audit --no-fund
COPY . .
# The bench and the test servers' workspace (s3rver, smtp-server) are not part of the product:
# npm prune keeps every workspace that is present, so they go first
# (test/workspaceDependencies.test.ts derives the list; checked by pruning a built copy).
RUN npm run build && rm -rf apps/bench packages/testing && npm prune --omit=dev

FROM node:22.16-bookworm-slim
# The source commit, shown as fleet_build_info{commit}: docker build --build-arg FLEET_COMMIT=$(git rev-parse HEAD) .
ARG FLEET_COMMIT=unknown
ENV NODE_ENV=production UV_THREADPOOL_SIZE=16 FLEET_COMMIT=$FLEET_COMMIT
WORKDIR /app
# Owned by root and read-only to the app: the process cannot rewrite its own code.
COPY --from=build /app /app
# The node user (uid/gid 1000): the Kubernetes manifests run as 1000 with a read-only root.
USER node
CMD ["node", "apps/worker/dist/main.js"]
