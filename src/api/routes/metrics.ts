/** GET /metrics: Prometheus text exposition (see ../metrics.ts for what is measured and how). */
import { z } from 'zod';
import { defineRoute } from '../route.ts';

export const metricsRoutes = [
  defineRoute({
    method: 'get', path: '/metrics', access: 'read', operationId: 'metrics', tag: 'system',
    scope: 'queue',
    summary: 'Prometheus metrics',
    description: 'Queue gauges (usher_executions, usher_queue_length, usher_active_slots, usher_max_concurrent, '
      + 'usher_oldest_waiting_seconds), worker gauges (usher_worker_heartbeat_age_seconds, usher_worker_running), and, '
      + 'from the event log since this API process started, usher_execution_transitions_total and the histograms '
      + 'usher_admission_latency_seconds, usher_start_latency_seconds and usher_run_duration_seconds. Every API '
      + 'instance counts every execution: aggregate the counters across instances with max(), not sum(). Scrape with a read token.',
    status: 200, produces: 'text/plain; version=0.0.4',
    response: z.string().meta({ description: 'Prometheus text exposition format 0.0.4.' }),
    errors: ['database_unavailable'],
    async handle({ deps }) {
      await deps.metrics.refresh();
      const text = await deps.metrics.registry.metrics();
      return {
        async send(_req, res) {
          res.status(200).type(deps.metrics.registry.contentType).send(text);
        },
      };
    },
  }),
];
