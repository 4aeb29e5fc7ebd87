/**
 * Numeric options are range-checked when the command line is read, before any model loads (issue: `--alpha 1e38`
 * gave an empty reply, `--temperature 1e-45` ended generation at once, seeds wrapped at 2^32 and `1e300` acted as
 * 0; `--device wasm` was offered in Node and failed only after the model loaded). The model path below does not
 * exist: a value that got past parsing would fail there instead, with another message.
 */
import { describe, expect, it } from 'vitest';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { runGenerate, type GenerateCliOptions } from '../../src/cli/commands/generate.js';
import { runTrainController, type TrainControllerCliOptions } from '../../src/cli/commands/train-controller.js';
import { runBuildTestModel } from '../../src/cli/commands/build-test-model.js';
import { parseSeedOption, parseStrength, parseTemperature } from '../../src/cli/numbers.js';

const NO_MODEL = '/nonexistent/steerlab-model';

const gen = (o: Partial<GenerateCliOptions>) => runGenerate({ model: NO_MODEL, prompt: 'hi', ...o });
const ev = (o: Partial<EvalCliOptions>) =>
  runEvalCommand({ model: NO_MODEL, dataset: ['harmful-val'], seed: '0', conditions: 'base', maxNewTokens: '4', judge: 'was-keywords', out: '/nonexistent/run', ...o }, false);
const tc = (o: Partial<TrainControllerCliOptions>) =>
  runTrainController({ model: NO_MODEL, direction: '/nonexistent/d.safetensors', harmful: 'harmful-train', benign: 'harmless-train', n: '4', valFraction: '0.2', loss: 'mse', seed: '0', out: '/nonexistent/c.safetensors', ...o });

describe('numeric options', () => {
  it('generate: alpha, temperature, top-p, top-k, seed and token limit', async () => {
    await expect(gen({ policy: 'was', alpha: '1e38' })).rejects.toThrow('--alpha must be a number in [-10000, 10000], got "1e38"');
    await expect(gen({ temperature: '1e-45' })).rejects.toThrow('--temperature must be a number in [0.01, 100], got "1e-45"');
    await expect(gen({ temperature: 'NaN' })).rejects.toThrow(/--temperature must be a number/);
    await expect(gen({ topP: '0' })).rejects.toThrow('--top-p must be a number in (0, 1], got "0"');
    await expect(gen({ topP: '1.5' })).rejects.toThrow(/--top-p must be a number in \(0, 1\]/);
    await expect(gen({ topK: '-1' })).rejects.toThrow('--top-k must be a whole number in 0..1000000, got "-1"');
    await expect(gen({ seed: '1e300' })).rejects.toThrow('--seed must be a whole number in 0..4294967295, got "1e300"');
    await expect(gen({ seed: '4294967296' })).rejects.toThrow(/--seed must be a whole number in 0\.\.4294967295/);
    await expect(gen({ seed: '-1' })).rejects.toThrow(/--seed must be a whole number/);
    await expect(gen({ maxNewTokens: '0' })).rejects.toThrow('--max-new-tokens must be a whole number in 1..1000000, got "0"');
    await expect(gen({ policy: 'manual', scale: 'Infinity' })).rejects.toThrow(/--scale must be a number in \[-10000, 10000\]/);
  });

  it('eval and train-controller', async () => {
    await expect(ev({ alpha: '1e38' })).rejects.toThrow('--alpha must be a number in [-10000, 10000], got "1e38"');
    await expect(ev({ seed: '1e300' })).rejects.toThrow(/--seed must be a whole number in 0\.\.4294967295/);
    await expect(ev({ maxNewTokens: '1e3' })).rejects.toThrow(/--max-new-tokens must be a whole number in 1\.\.1000000, got "1e3"/);
    await expect(ev({ n: '0' })).rejects.toThrow(/--n must be a whole number in 1\.\./);
    await expect(tc({ lr: '0' })).rejects.toThrow('--lr must be a number in (0, 1], got "0"');
    await expect(tc({ alpha: '-1e39' })).rejects.toThrow(/--alpha must be a number in \[-10000, 10000\]/);
    await expect(tc({ epochs: '1000000000' })).rejects.toThrow(/--epochs must be a whole number in 1\.\.100000/);
    await expect(tc({ valFraction: '1' })).rejects.toThrow('--val-fraction must be a number in (0, 1), got "1"');
    await expect(tc({ seed: '99999999999' })).rejects.toThrow(/--seed must be a whole number in 0\.\.4294967295/);
  });

  it('build-test-model: seed and shape', async () => {
    await expect(runBuildTestModel({ out: '/nonexistent/x', topology: 'plain', preset: 'tiny', seed: '4294967296' })).rejects.toThrow(/--seed must be a whole number in 0\.\.4294967295/);
    await expect(runBuildTestModel({ out: '/nonexistent/x', topology: 'plain', preset: 'tiny', seed: '0', layers: '100000' })).rejects.toThrow('--layers must be a whole number in 1..1024, got "100000"');
  });

  it('accepts the edges of each range', () => {
    expect(parseSeedOption('4294967295')).toBe(4294967295);
    expect(parseSeedOption('0')).toBe(0);
    expect(parseStrength('alpha', '-10000')).toBe(-10000);
    expect(parseStrength('alpha', '2')).toBe(2);
    expect(parseTemperature('0.01')).toBe(0.01);
  });
});

describe('--device in Node', () => {
  it('only cpu, refused with the reason before the model loads', async () => {
    await expect(gen({ device: 'wasm' })).rejects.toThrow(/--device must be cpu here: the command line runs models on the CPU \(onnxruntime-node\); wasm and webgpu are for the browser lab; got "wasm"/);
    await expect(ev({ device: 'webgpu' as never })).rejects.toThrow(/--device must be cpu here/);
    await expect(tc({ device: 'wasm' as never })).rejects.toThrow(/--device must be cpu here/);
  });
});
