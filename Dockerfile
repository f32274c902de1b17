# Usher: executor, worker or the all-in-one `start`. Set DATABASE_URL to use your Postgres;
# without it the container runs an embedded Postgres under /home/node/app/.usher.
FROM node:20-bookworm-slim
WORKDIR /home/node/app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY sql ./sql
COPY migrations ./migrations
COPY examples ./examples
RUN chown -R node:node /home/node/app
USER node
ENV NODE_ENV=production
ENTRYPOINT ["node", "bin/usher.js"]
CMD ["start"]
