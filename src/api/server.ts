/**
 * Listening: the API refuses to serve a non-loopback address without tokens, and says so when it
 * runs open on loopback. close() stops accepting, lets requests in flight finish, then ends.
 */
import type { Server } from 'node:http';
import { isIP } from 'node:net';
import { ConfigError } from '../errors.ts';
import { createApp, type ApiOptions } from './app.ts';
import { createApiServices } from './services.ts';

export interface ApiServer {
  /** Base URL, e.g. http://127.0.0.1:8080 (the real port when 0 was asked for). */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** True for 127.0.0.0/8, ::1 (also IPv4-mapped) and the name localhost; any other name or address counts as reachable from outside. */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === 'localhost') return true;
  const mapped = bare.toLowerCase().startsWith('::ffff:') ? bare.slice(7) : bare;
  if (isIP(mapped) === 4) return mapped.split('.')[0] === '127';
  return isIP(bare) === 6 && /^(0{0,4}:){7}0{0,3}1$|^::1$/.test(bare.toLowerCase());
}

/** Throws config_invalid for an open API on an address others can reach. */
export function assertSafeBinding(host: string, tokenCount: number): void {
  if (tokenCount === 0 && !isLoopback(host)) {
    throw new ConfigError(
      `USHER_API_HOST ${host} is not a loopback address and USHER_API_TOKENS is empty: refusing to serve the API to the network without authentication`,
    );
  }
}

export interface ApiServerOptions extends ApiOptions {
  readonly host: string;
  readonly port: number;
  /** For the LISTEN connection that follows the execution event log. */
  readonly databaseUrl: string;
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  assertSafeBinding(options.host, options.tokens.length);
  const services = createApiServices(options);
  const app = createApp(options, services);
  const server: Server = await new Promise((resolve, reject) => {
    const listening = app.listen(options.port, options.host, (error?: Error) => (error ? reject(error) : resolve(listening)));
    listening.once('error', reject);
  });
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const url = `http://${options.host.includes(':') && !options.host.startsWith('[') ? `[${options.host}]` : options.host}:${port}`;
  if (options.tokens.length === 0) {
    options.log.warn({ event: 'api:open', url }, 'USHER_API_TOKENS is empty: the API accepts every request without a token (loopback only)');
  }
  if (options.tokens.length > 0 && !options.tokens.some((token) => token.role === 'admin' && !token.packs)) {
    // Write tokens once ran the operator routes too; say where they went rather than leave only 403s.
    options.log.warn({ event: 'api:no_admin_token', url },
      'no admin token without a pack limit in USHER_API_TOKENS: changing actions, policies and lanes of every pack needs an admin:<token> entry (or SQL)');
  }
  options.log.info({
    event: 'api:listening', url, port, auth: options.tokens.length === 0 ? 'open' : 'bearer',
    read_tokens: options.tokens.filter((token) => token.role === 'read').length,
    write_tokens: options.tokens.filter((token) => token.role === 'write').length,
    admin_tokens: options.tokens.filter((token) => token.role === 'admin').length,
  }, `API listening on ${url}/api/v1`);
  services.start();
  return {
    url,
    port,
    close: async () => {
      // Stop accepting first; then open streams end, and the server can finish.
      const closed = closeServer(server);
      await services.stop();
      // The streams' connections are idle now.
      server.closeIdleConnections();
      await closed;
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // Requests still running after the grace are cut off.
    const force = setTimeout(() => server.closeAllConnections(), 10_000);
    server.close((error) => {
      clearTimeout(force);
      if (error) reject(error);
      else resolve();
    });
    server.closeIdleConnections();
  });
}
