/**
 * A TCP proxy between a process and Postgres that the test can cut: in blackhole mode bytes are
 * swallowed in both directions and nothing is closed, like a network that went silent.
 */
import net from 'node:net';

export class TcpProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private silent = false;

  constructor(private readonly targetHost: string, private readonly targetPort: number) {
    this.server = net.createServer((client) => this.accept(client));
  }

  /** Starts listening on a free loopback port; returns it. */
  listen(): Promise<number> {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as net.AddressInfo).port));
    });
  }

  /** From now on nothing gets through, on open and new connections alike. */
  blackhole(): void {
    this.silent = true;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(this.targetPort, this.targetHost);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        this.sockets.delete(socket);
        if (!this.silent) (socket === client ? upstream : client).destroy();
      });
    }
    client.on('data', (chunk) => { if (!this.silent) upstream.write(chunk); });
    upstream.on('data', (chunk) => { if (!this.silent) client.write(chunk); });
  }
}

/** A connection URL that goes through the proxy on `port` instead. */
export function throughProxy(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}
