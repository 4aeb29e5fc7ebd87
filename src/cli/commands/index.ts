import type { Command } from 'commander';
import { register as buildTestModel } from './build-test-model.js';
import { register as patch } from './patch.js';
import { register as verify } from './verify.js';
import { register as generate } from './generate.js';
import { register as direction } from './direction.js';
import { register as trainController } from './train-controller.js';
import { register as evalCommand, registerSummarize as summarize } from './eval.js';
import { register as restamp } from './restamp.js';
import { register as exportGguf } from './export-gguf.js';
import { register as exportControlVector } from './export-control-vector.js';
import { register as sweep } from './sweep.js';

/** Every CLI command registers itself here (one import + one list entry per command file). */
export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [
  buildTestModel,
  patch,
  verify,
  generate,
  direction,
  trainController,
  evalCommand,
  summarize,
  restamp,
  exportGguf,
  exportControlVector,
  sweep,
];
