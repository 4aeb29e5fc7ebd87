#!/usr/bin/env node
/**
 * `npm run lab -- <command>`: the headless face of Steerlab. Each command lives in src/cli/commands/<name>.ts and
 * exports `register(program)`; add new commands to the list below.
 */
import { Command } from 'commander';
import { COMMANDS } from './commands/index.js';

const program = new Command();
program.name('lab').description('Steerlab: weighted activation steering, headless').showHelpAfterError();
for (const register of COMMANDS) register(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  // One line on stderr and a non-zero status: callers (and --json consumers) rely on it.
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`lab: ${msg}\n`);
  process.exit(1);
});
