/**
 * Child: the WAS controller on one tfjs backend (cpu or wasm, the ones Node has) for one decoder shape:
 *   infer_ms        ControllerNetwork.predict on one prompt's input (the controller's layers x hidden values)
 *   train_epoch_s   trainController, one epoch over 1000 cached prompts (synthetic activations of the right size),
 *                   paper defaults otherwise (hidden width 1024, batch 4, AdamW)
 * One backend per process: tfjs keeps one global backend, and the numbers of one must not include the other's
 * initialisation.
 */
import { ControllerNetwork, controllerInputLayers, initControllerParams, selectBackend, syntheticActivations, trainController, lastBackendReport, PAPER_DEFAULTS } from '../src/core/controller/index.js';
import { childArgs } from './child.js';
import { summarize } from './stats.js';

interface Args {
  backend: 'cpu' | 'wasm';
  numLayers: number;
  hiddenSize: number;
  prompts: number;
  epochs: number;
  inferCalls: number;
}

const { args, done } = childArgs<Args>();
const active = await selectBackend([args.backend]);
if (active !== args.backend) {
  done({ error: `tfjs backend ${args.backend} unavailable (active: ${active}; ${JSON.stringify(lastBackendReport())})` });
  process.exit(0);
}
const inputLayers = controllerInputLayers(args.numLayers);
const inputSize = inputLayers.length * args.hiddenSize;
const shape = { inputSize, hiddenWidth: PAPER_DEFAULTS.hiddenWidth, numLayers: args.numLayers };

// Inference: one prompt at a time, as at generation time (the controller runs once per prompt).
const net = new ControllerNetwork(initControllerParams(shape, 1));
const rows = syntheticActivations({ rows: 64, inputSize, seed: 2, scale: 3 });
for (let i = 0; i < 20; i++) net.predict(rows.x.subarray((i % 64) * inputSize, ((i % 64) + 1) * inputSize)); // warm-up
const times: number[] = [];
for (let i = 0; i < args.inferCalls; i++) {
  const row = rows.x.subarray((i % 64) * inputSize, ((i % 64) + 1) * inputSize);
  const t = performance.now();
  net.predict(row);
  times.push(performance.now() - t);
}
net.dispose();

// Training: epochs over `prompts` cached activations, the time of each epoch from trainController's own metrics.
const data = syntheticActivations({ rows: args.prompts, inputSize, seed: 3, scale: 3 });
const epochTimes: number[] = [];
let last = performance.now();
await trainController(data, {
  modelId: 'bench', numLayers: args.numLayers, hiddenSize: args.hiddenSize, epochs: args.epochs, seed: 1,
  onEpoch: () => {
    const now = performance.now();
    epochTimes.push((now - last) / 1000);
    last = now;
  },
});
done({
  backend: active,
  input_size: inputSize,
  hidden_width: shape.hiddenWidth,
  infer_ms: summarize(times),
  train_epoch_s: summarize(epochTimes),
  prompts: args.prompts,
});
