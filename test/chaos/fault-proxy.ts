/**
 * A TCP proxy for faults the black-hole proxy in test/support cannot make: latency on every chunk
 * in both directions, and refusing (and cutting) the connections of one kind, recognised by the
 * application_name in their startup packet (e.g. only the LISTEN connections): either by closing
 * the socket, or by answering as a server at max_connections does (FATAL 53300).
 */
import net from 'node:net';
import { afterAll, beforeAll } from 'vitest';

export class FaultProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket; startup: string; silent: boolean }>();
  private refusePattern: RegExp | undefined;
  private refuseAs: 'closed' | 'too_many_clients' = 'closed';
  delayMs = 0;
  /** Connections accepted per application_name seen in startup packets. */
  readonly accepted = new Map<string, number>();
  /** When each refused connection attempt arrived (Date.now()), per application_name. */
  readonly refused = new Map<string, number[]>();

  constructor(private readonly targetHost: string, private readonly targetPort: number) {
    this.server = net.createServer((client) => this.accept(client));
  }

  listen(): Promise<number> {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as net.AddressInfo).port));
    });
  }

  /** Cuts open connections whose application_name matches, and refuses new ones, until allowAll(). */
  refuse(pattern: RegExp, as: 'closed' | 'too_many_clients' = 'closed'): number {
    this.refusePattern = pattern;
    this.refuseAs = as;
    let cut = 0;
    for (const pair of this.pairs) {
      if (pattern.test(pair.startup)) {
        pair.client.destroy();
        pair.upstream.destroy();
        cut += 1;
      }
    }
    return cut;
  }

  /**
   * Open connections whose application_name matches go silent: bytes are dropped both ways and
   * nothing is closed, as when the peer vanished without FIN or RST. New connections pass.
   */
  silence(pattern: RegExp): number {
    let silenced = 0;
    for (const pair of this.pairs) {
      if (pattern.test(pair.startup)) {
        pair.silent = true;
        silenced += 1;
      }
    }
    return silenced;
  }

  allowAll(): void {
    this.refusePattern = undefined;
  }

  acceptedMatching(pattern: RegExp): number {
    return [...this.accepted].filter(([name]) => pattern.test(name)).reduce((sum, [, n]) => sum + n, 0);
  }

  close(): Promise<void> {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    client.once('data', (first) => {
      const startup = /application_name\0([^\0]*)\0/.exec(first.toString('latin1'))?.[1] ?? '';
      if (this.refusePattern?.test(startup)) {
        this.refused.set(startup, [...(this.refused.get(startup) ?? []), Date.now()]);
        if (this.refuseAs === 'too_many_clients') client.end(tooManyClients);
        else client.destroy();
        return;
      }
      this.accepted.set(startup, (this.accepted.get(startup) ?? 0) + 1);
      const upstream = net.connect(this.targetPort, this.targetHost);
      upstream.on('error', () => undefined);
      const pair = { client, upstream, startup, silent: false };
      this.pairs.add(pair);
      const forward = (to: net.Socket) => (chunk: Buffer) => {
        if (pair.silent) return;
        // Equal delays fire in the order they were set, so the byte stream keeps its order.
        if (this.delayMs > 0) setTimeout(() => to.write(chunk), this.delayMs);
        else to.write(chunk);
      };
      forward(upstream)(first);
      client.on('data', forward(upstream));
      upstream.on('data', forward(client));
      const close = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', close);
      upstream.on('close', close);
    });
  }
}

/** The ErrorResponse a server at max_connections sends to a new connection before closing it. */
const tooManyClients = (() => {
  const fields = Buffer.from('SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0', 'latin1');
  const header = Buffer.alloc(5);
  header.write('E', 0, 'latin1');
  header.writeInt32BE(fields.length + 4, 1);
  return Buffer.concat([header, fields]);
})();

export function proxiedUrl(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}

/** Registers hooks: a FaultProxy in front of the server of `targetUrl()`, made before the tests and closed after. */
export function useFaultProxy(targetUrl: () => string): { readonly proxy: FaultProxy } {
  let proxy: FaultProxy | undefined;
  beforeAll(() => {
    const target = new URL(targetUrl());
    proxy = new FaultProxy(target.hostname, Number(target.port || 5432));
  });
  afterAll(() => proxy?.close());
  return {
    get proxy() {
      return proxy!;
    },
  };
}
