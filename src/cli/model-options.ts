import type { Command } from 'commander';
import { loadSteerableModel } from '../core/model/load.js';
import { applyHub, parseDevice, parseDtype } from '../core/model/node-cli.js';
import type { SteerableModel } from '../core/model/steerable.js';
import type { Device, Dtype, LoadOptions } from '../core/model/types.js';

/** The model options every command that loads a model takes: one definition, one help text, one load path. */
export interface ModelCliOptions {
  model: string;
  dtype?: Dtype | string;
  device?: Device | string;
  modelFileName?: string;
  hub?: string;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <id|dir>', 'hub id or local model folder (a folder is named by a hash of its content, see README)')
    .option('--dtype <dtype>', 'fp32 | fp16 | q8 | q4 | q4f16 (default: from config, else fp32)')
    .option('--device <device>', 'cpu (the only device of the command line; wasm and webgpu are for the browser lab)')
    .option('--model-file-name <name>', "transformers.js model_file_name ('model' or 'decoder_model_merged'; default: the first that exists)")
    .option('--hub <url>', 'hub base URL (default: STEERLAB_HUB, else transformers.js default)');
}

/** The options a command's model flags stand for, checked. */
export function modelLoadOptions(o: ModelCliOptions, extra: Omit<LoadOptions, 'dtype' | 'device' | 'modelFileName'> = {}): LoadOptions {
  applyHub(o.hub);
  const dtype = parseDtype(o.dtype);
  const device = parseDevice(o.device);
  return {
    ...(dtype ? { dtype } : {}),
    ...(device ? { device } : {}),
    ...(o.modelFileName ? { modelFileName: o.modelFileName } : {}),
    ...extra,
  };
}

/** Loads the model of a command: every command names and loads a model through this one call. */
export async function loadCommandModel(o: ModelCliOptions, extra: Omit<LoadOptions, 'dtype' | 'device' | 'modelFileName'> = {}): Promise<SteerableModel> {
  if (typeof o.model !== 'string' || o.model.trim() === '') throw new Error('--model is required: a hub id ("org/name") or a model folder');
  return loadSteerableModel(o.model, modelLoadOptions(o, extra));
}
