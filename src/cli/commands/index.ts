import type { Command } from 'commander';

/** Every CLI command registers itself here (one import + one list entry per command file). */
export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [];
