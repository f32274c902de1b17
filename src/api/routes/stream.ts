/** GET /executions/stream: status changes as Server-Sent Events, resumable with Last-Event-ID. */
import { z } from 'zod';
import { streamExecutionEvents } from '../event-stream.ts';
import { defineRoute } from '../route.ts';
import { allowedPacks } from '../scope.ts';
import { executionStreamHeaders, executionStreamQuery, wildcardPack } from '../schemas.ts';

export const streamRoutes = [
  defineRoute({
    method: 'get', path: '/executions/stream', access: 'read', operationId: 'streamExecutionEvents', tag: 'executions',
    summary: 'Status changes of executions, as Server-Sent Events',
    description: 'Each status change is an event named "execution" whose id is its position in the event log and whose data '
      + 'is JSON: {position, execution_id, action_ref, status, previous_status, attempt, elapsed_seconds, at}. Events come '
      + 'in log order, and each execution\'s in the order they happened. Reconnect with Last-Event-ID (EventSource does) to '
      + 'get every event after it; without one the stream starts at the present. An event named "gap" says the events '
      + 'after your id are older than the retention (USHER_EVENT_RETENTION_MINUTES) and were deleted. A comment line is sent '
      + 'every 15 s of quiet.',
    query: executionStreamQuery, headers: executionStreamHeaders,
    status: 200, produces: 'text/event-stream',
    response: z.string().meta({ description: 'text/event-stream: "id: <position>\\nevent: execution\\ndata: <json>\\n\\n" per event.' }),
    async handle({ query, deps, requestId, header, caller }) {
      const wildcard = wildcardPack(query.action_ref);
      const filter = { ...(wildcard === undefined ? { action_ref: query.action_ref } : { pack_ref: wildcard }), within_packs: allowedPacks(caller) };
      const after = header('last-event-id') ?? query.last_event_id;
      return { send: (req, res) => streamExecutionEvents(deps, { filter, after, requestId }, req, res) };
    },
  }),
];
