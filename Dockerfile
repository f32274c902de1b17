# Usher: executor, worker or the all-in-one `start`. Set DATABASE_URL to use your Postgres;
# without it the container runs an embedded Postgres under /home/node/app/.usher.

# The compiled CLI (dist/): bin/usher.js runs it rather than the sources through tsx, so each
# process carries no TypeScript loader.
FROM node:20-bookworm-slim AS build
WORKDIR /build
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim
WORKDIR /home/node/app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY sql ./sql
COPY migrations ./migrations
COPY examples ./examples
# After src/, so the compiled files are the newer ones.
COPY --from=build /build/dist ./dist
RUN touch -c dist/bin/cli.js && chown -R node:node /home/node/app
USER node
ENV NODE_ENV=production
ENTRYPOINT ["node", "bin/usher.js"]
CMD ["start"]
