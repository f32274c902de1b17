#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so `npx usher` needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/bin/cli.ts');
