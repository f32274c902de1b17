/**
 * A dedicated LISTEN connection that reconnects by itself. NOTIFY is only a hint: after every
 * (re)connect `onConnected` runs so the caller rescans the tables for whatever it missed.
 */
import pg from 'pg';
import { backoffMs, delay } from '../backoff.ts';
import type { Logger } from '../log.ts';

/** Sent only while a session watches for it (sql/012_completion_notifications.sql); listening alone is not enough. */
const COMPLETIONS = 'usher.execution_completed';

export interface ListenerOptions {
  readonly url: string;
  readonly applicationName: string;
  readonly channels: readonly string[];
  readonly onNotification: (channel: string, payload: string) => void;
  readonly onConnected: () => void;
  /** How often the connection is checked with a query, to find half-open sockets. */
  readonly pingIntervalMs?: number;
  /** A ping unanswered this long means the socket is half-open: the connection is dropped and made again. */
  readonly pingTimeoutMs?: number;
}

export class Listener {
  private client: pg.Client | undefined;
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;

  constructor(private readonly options: ListenerOptions, private readonly log: Logger) {}

  start(): void {
    this.running ??= this.run();
  }

  /** Idempotent: the API stops its listener when the last stream ends, and again when it shuts down. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping.abort();
      await this.client?.end().catch(() => undefined);
      await this.running;
    })();
    return this.stopped;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping.signal.aborted) {
      try {
        const connection = await this.connect();
        failures = 0;
        await connection.closed;
      } catch (error) {
        // stop() ends a connection still being made: that is no failure.
        if (this.stopping.signal.aborted) break;
        failures += 1;
        this.log.warn({ event: 'listener:connect_failed', err: error, failures }, 'LISTEN connection failed');
      }
      if (this.stopping.signal.aborted) break;
      const wait = backoffMs(failures + 1);
      this.log.warn({ event: 'listener:reconnecting', in_ms: wait }, 'LISTEN connection lost, reconnecting');
      await delay(wait, this.stopping.signal);
    }
  }

  /** pg's Client#connect() never settles when end() is called while it connects: stop() must not wait for it. */
  private unlessStopped<T>(step: Promise<T>): Promise<T> {
    step.catch(() => undefined);
    const signal = this.stopping.signal;
    if (signal.aborted) return Promise.reject(new Error('listener stopped'));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(new Error('listener stopped'));
      signal.addEventListener('abort', onAbort, { once: true });
      step.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Connects and listens; `closed` settles when the connection is gone. */
  private async connect(): Promise<{ closed: Promise<void> }> {
    const client = new pg.Client({
      connectionString: this.options.url,
      application_name: this.options.applicationName,
      keepAlive: true,
      connectionTimeoutMillis: 10_000,
    });
    let markClosed: () => void = () => undefined;
    const closed = new Promise<void>((resolve) => {
      markClosed = resolve;
    });
    client.on('error', (error) => {
      this.log.warn({ event: 'listener:error', err: error }, 'LISTEN connection error');
      markClosed();
    });
    client.on('end', () => markClosed());
    client.on('notification', (message) => this.options.onNotification(message.channel, message.payload ?? ''));
    this.client = client;
    try {
      await this.unlessStopped(client.connect());
      for (const channel of this.options.channels) {
        await this.unlessStopped(client.query(channel === COMPLETIONS ? 'select usher.watch_completions()' : `listen ${pg.escapeIdentifier(channel)}`));
      }
    } catch (error) {
      client.end().catch(() => undefined);
      throw error;
    }
    this.log.debug({ event: 'listener:connected', channels: this.options.channels }, 'listening');
    this.options.onConnected();

    // A peer gone without FIN or RST (a dropped NAT entry, a failover behind a proxy) leaves the
    // socket open and silent: LISTEN would hear nothing, and a query on it would wait for ever.
    const pingTimeoutMs = this.options.pingTimeoutMs ?? 5_000;
    let pingDeadline: NodeJS.Timeout | undefined;
    const ping = setInterval(() => {
      if (pingDeadline) return;
      pingDeadline = setTimeout(() => {
        this.log.warn({ event: 'listener:ping_timeout', timeout_ms: pingTimeoutMs }, 'LISTEN connection did not answer a ping');
        markClosed();
      }, pingTimeoutMs);
      client.query('select 1').then(() => {
        clearTimeout(pingDeadline);
        pingDeadline = undefined;
      }, () => markClosed());
    }, this.options.pingIntervalMs ?? 15_000);
    return {
      closed: closed.finally(() => {
        clearInterval(ping);
        clearTimeout(pingDeadline);
        client.end().catch(() => undefined);
        if (this.client === client) this.client = undefined;
      }),
    };
  }
}
