import type { Command } from 'commander';

/** The model options every method command takes (direction, train-controller, eval): one definition, one help text. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <id|dir>', 'hub id or local model folder')
    .option('--dtype <dtype>', 'fp32 | fp16 | q8 | q4 | q4f16 (default: from config, else fp32)')
    .option('--device <device>', 'cpu (the only device of the command line; wasm and webgpu are for the browser lab)')
    .option('--model-file-name <name>', "transformers.js model_file_name ('model' or 'decoder_model_merged')");
}
