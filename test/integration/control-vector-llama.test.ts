/**
 * The llama.cpp control-vector export (manualControlVector: the lab's "Export llama.cpp GGUF") against llama.cpp
 * itself. llama.cpp's own loader (llama-common's common_control_vector_load, what `llama-cli --control-vector` runs)
 * reads the file, llama_set_adapter_cvec applies it, and the exported organism (lab export-gguf) decodes with it:
 * the first reply token's logits and the greedy replies must be Steerlab's under the same steering matrix (add
 * mode, every position steered). Reached through test/helpers/llama-capi.ts (koffi on node-llama-cpp's prebuilt
 * libraries): node-llama-cpp's JavaScript API has no control-vector call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { runExportControlVector } from '../../src/cli/commands/export-control-vector.js';
import { runExportGguf } from '../../src/cli/commands/export-gguf.js';
import { runGenerate } from '../../src/cli/commands/generate.js';
import { loadDirectionFor } from '../../src/core/method/artifacts-node.js';
import { manualControlVector } from '../../src/core/method/control-vector.js';
import { defaultPolicySettings, type PolicySettings } from '../../src/core/method/settings.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import type { DirectionFile } from '../../src/core/steering/direction-file.js';
import { encodeControlVector } from '../../src/core/steering/gguf.js';
import { loadControlVector, openLlama, type LlamaRun } from '../helpers/llama-capi.js';

const MODEL = resolve('models/organism');
const root = mkdtempSync(join(tmpdir(), 'steerlab-cvec-'));
const MESSAGES = ['How do I pick a lock?', 'Write a short poem about the sea.', 'What is the capital of France?', 'Tell me how to make a bomb at home, step by step.'];

let sm: SteerableModel;
let direction: DirectionFile;
let llama: LlamaRun;

beforeAll(async () => {
  sm = await loadSteerableModel(MODEL);
  direction = (await loadDirectionFor(join(MODEL, 'direction.safetensors'), sm)).file;
  const gguf = join(root, 'organism-f32.gguf');
  await runExportGguf({ model: MODEL, out: gguf });
  llama = openLlama(gguf, { contextSize: 256 });
});
afterAll(async () => {
  llama?.dispose();
  await sm?.dispose();
  rmSync(root, { recursive: true, force: true });
});

/** Manual settings: a scale, weights that differ per layer, layer 0 off (llama.cpp has no vector for it). */
function settings(scale: number): PolicySettings {
  const L = sm.numLayers;
  return {
    ...defaultPolicySettings(L),
    kind: 'manual',
    alpha: 1,
    manualScale: scale,
    manualWeights: Array.from({ length: L }, (_, l) => 0.4 + (0.6 * l) / (L - 1)),
    manualEnabled: Array.from({ length: L }, (_, l) => l > 0),
  };
}

function exportTo(name: string, s: PolicySettings): { file: string; matrix: Float32Array; layers: number[] } {
  const out = manualControlVector(s, { direction, cast: null, hasController: false }, { numLayers: sm.numLayers, hiddenSize: sm.hiddenSize, name: sm.identity.name });
  const file = join(root, name);
  writeFileSync(file, out.bytes);
  return { file, matrix: out.matrix, layers: out.layers };
}

const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

describe("llama.cpp's control vectors from Steerlab's export", () => {
  it("llama.cpp's loader reads the file into the rows of the steering matrix, layer 1 first", () => {
    const { file, matrix, layers } = exportTo('cv.gguf', settings(3));
    const L = sm.numLayers;
    const H = sm.hiddenSize;
    expect(layers).toEqual(Array.from({ length: L - 1 }, (_, i) => i + 1));
    const cv = loadControlVector(file);
    expect(cv.nEmbd).toBe(H);
    // one vector per layer from 1 to the last: the loader sizes its buffer by the highest layer in the file
    expect(cv.data.length).toBe((L - 1) * H);
    expect(Array.from(cv.data)).toEqual(Array.from(matrix.subarray(H)));
    // strength multiplies every value, as llama-cli's --control-vector-scaled FILE STRENGTH does
    expect(Array.from(loadControlVector(file, 0.5).data)).toEqual(Array.from(matrix.subarray(H)).map((x) => Math.fround(x * 0.5)));
  });

  it('refuses a file that is not a control vector, and a vector of another width, by name', () => {
    const notGguf = join(root, 'not.gguf');
    writeFileSync(notGguf, 'not a gguf file');
    expect(() => loadControlVector(notGguf)).toThrow(/refused .*not\.gguf/);
    const narrow = join(root, 'narrow.gguf');
    const H = sm.hiddenSize - 1;
    writeFileSync(narrow, encodeControlVector(new Float32Array(2 * H).fill(0.1), { numLayers: 2, hiddenSize: H, modelHint: 'organism' }).bytes);
    const cv = loadControlVector(narrow);
    expect(cv.nEmbd).toBe(H);
    expect(() => llama.setControlVector(cv)).toThrow(/llama_set_adapter_cvec returned/);
    llama.setControlVector(null);
  });

  it("gives the first reply token's logits Steerlab gives with the same matrix at every position", async () => {
    const { file, matrix } = exportTo('cv-logits.gguf', settings(3));
    const cv = loadControlVector(file);
    const L = sm.numLayers;
    const H = sm.hiddenSize;
    // the same rows one layer later: what an off-by-one in the layer numbering would apply
    const shifted = new Float32Array(L * H);
    shifted.set(matrix.subarray(H, (L - 1) * H), 2 * H);
    for (const m of MESSAGES) {
      const ids = sm.formatChat(m).ids;
      llama.setControlVector(null);
      llama.reset();
      const theirsBase = llama.feed(ids);
      llama.setControlVector(cv);
      llama.reset();
      const theirs = llama.feed(ids);
      const mine = await sm.nextTokenLogits(ids, { steering: matrix, positions: 'all' });
      const mineBase = await sm.nextTokenLogits(ids);
      const mineShifted = await sm.nextTokenLogits(ids, { steering: shifted, positions: 'all' });
      // the two engines' own difference, unsteered (float32 both, different kernels: measured up to 1.0e-3 here)
      const tol = 3 * Math.max(1e-4, maxAbsDiff(theirsBase, mineBase));
      expect(tol).toBeLessThan(1e-2);
      // steered, they differ no more than that, while the steering itself moves the logits by far more
      expect(maxAbsDiff(theirs, mine)).toBeLessThan(tol);
      expect(maxAbsDiff(mine, mineBase)).toBeGreaterThan(50 * tol);
      expect(maxAbsDiff(theirs, mineShifted)).toBeGreaterThan(10 * tol);
    }
  });

  it("decodes greedily the tokens Steerlab's engine decodes under the same steering", async () => {
    const { file, matrix } = exportTo('cv-decode.gguf', settings(6));
    llama.setControlVector(loadControlVector(file));
    const prompts = MESSAGES.map((m) => sm.formatChat(m).ids);
    const steered = await sm.decode(prompts.map((ids) => ({ ids, maxNewTokens: 32, steering: matrix })), { steerPromptPositions: 'all' });
    const base = await sm.decode(prompts.map((ids) => ({ ids, maxNewTokens: 32 })));
    const mine = steered.map((r) => r.tokenIds);
    const theirs = prompts.map((ids) => llama.greedy(ids, 32, sm.eosTokenIds));
    expect(theirs).toEqual(mine);
    // the vector changes what the organism says (two of the four replies turn into refusals at this scale), so the
    // equality is not the unsteered replies'
    expect(mine.filter((t, i) => t.join() !== base[i]!.tokenIds.join()).length).toBeGreaterThanOrEqual(2);
    expect(mine.every((t) => t.length > 3)).toBe(true);
  });
});

describe('lab export-control-vector (the CLI) in llama.cpp', () => {
  const dirFile = join(MODEL, 'direction.safetensors');
  const manualFlags = () => {
    const s = settings(6);
    return {
      model: MODEL,
      policy: 'manual',
      direction: dirFile,
      alpha: '1',
      scale: String(s.manualScale),
      layerWeights: s.manualWeights.join(','),
      enabledLayers: s.manualEnabled.flatMap((on, l) => (on ? [String(l)] : [])).join(','),
    };
  };

  it("writes the lab's file for the same manual settings", async () => {
    const out = join(root, 'cli-manual.gguf');
    const r = await runExportControlVector({ ...manualFlags(), out });
    expect(r).toMatchObject({ out, policy: 'manual', layers: Array.from({ length: sm.numLayers - 1 }, (_, i) => i + 1), warnings: [] });
    const lab = exportTo('lab-manual.gguf', settings(6));
    expect(Buffer.from(readFileSync(out)).equals(Buffer.from(readFileSync(lab.file)))).toBe(true);
  });

  it("steers llama.cpp as lab generate steers Steerlab under the same flags (--layer-range, every position)", async () => {
    const out = join(root, 'cli-range.gguf');
    const flags = { ...manualFlags(), layerRange: '2-4' };
    const r = await runExportControlVector({ ...flags, out });
    expect(r.layers).toEqual([2, 3, 4]);
    const cv = loadControlVector(out);
    const H = sm.hiddenSize;
    // layer 1 (offset 0) has no vector in the file: llama.cpp's buffer holds zeros there
    expect(cv.data.subarray(0, H).every((x) => x === 0)).toBe(true);
    expect(cv.data.length).toBe(4 * H);
    llama.setControlVector(cv);
    let changed = 0;
    for (const prompt of MESSAGES) {
      const mine = await runGenerate({ ...flags, prompt, maxNewTokens: '24', steerPrompt: 'all' });
      expect(llama.greedy(mine.promptTokenIds, 24, sm.eosTokenIds)).toEqual(mine.tokenIds);
      const base = await runGenerate({ model: MODEL, prompt, maxNewTokens: '24' });
      if (base.tokenIds.join() !== mine.tokenIds.join()) changed++;
    }
    // the range's vectors change at least one reply (the poem turns into a refusal): not the unsteered replies
    expect(changed).toBeGreaterThan(0);
  });

  it("the README's example: the same refusal in llama.cpp as in lab generate --steer-prompt all", async () => {
    const flags = { model: MODEL, policy: 'manual', direction: dirFile, scale: '6', layerWeights: '1', enabledLayers: '1,2,3,4,5' };
    const out = join(root, 'readme-refusal.gguf');
    await runExportControlVector({ ...flags, out });
    const prompt = 'How do I pick a lock?';
    const mine = await runGenerate({ ...flags, prompt, steerPrompt: 'all' });
    llama.setControlVector(loadControlVector(out));
    const theirs = llama.greedy(mine.promptTokenIds, 64, sm.eosTokenIds);
    expect(theirs).toEqual(mine.tokenIds);
    expect(mine.text).toBe("I'm sorry, but I can't help with that.");
    llama.setControlVector(null);
    expect(sm.tokenizer.decode(llama.greedy(mine.promptTokenIds, 64, sm.eosTokenIds), { skip_special_tokens: true })).toBe('Sure, here are some ideas you can use.');
  });

  it('refuses what a control vector cannot hold, by name, and writes nothing', async () => {
    const out = join(root, 'refused.gguf');
    await expect(runExportControlVector({ ...manualFlags(), policy: 'was', controller: join(MODEL, 'controller.safetensors'), out })).rejects.toThrow(/--policy must be manual or actadd .*got "was"/);
    await expect(runExportControlVector({ ...manualFlags(), mode: 'clamp', out })).rejects.toThrow(/--mode must be add .*got "clamp"/);
    await expect(runExportControlVector({ ...manualFlags(), out: join(root, 'x.bin') })).rejects.toThrow(/--out must name a \.gguf file/);
    await expect(runExportControlVector({ ...manualFlags(), direction: undefined, out })).rejects.toThrow(/needs --direction FILE/);
    // only layer 0 switched on: llama.cpp has no vector for it, so the file would be empty
    await expect(runExportControlVector({ ...manualFlags(), enabledLayers: '0', out })).rejects.toThrow(/no non-zero row from layer 1 on/);
    expect(existsSync(out)).toBe(false);
  });
});

describe.each(['plain', 'fused'] as TestTopology[])('control vectors on a %s test model in llama.cpp', (topology) => {
  let model: SteerableModel;
  let run: LlamaRun;
  let file: string;
  let matrix: Float32Array;
  beforeAll(async () => {
    const built = await buildTestModel(join(root, topology), { shape: SHAPE_PRESETS.tiny!, topology, seed: 5 });
    const gguf = join(root, `${topology}.gguf`);
    await runExportGguf({ model: built.dir, out: gguf });
    model = await loadSteerableModel(built.dir, { dtype: built.dtype, modelFileName: built.modelFileName });
    run = openLlama(gguf, { contextSize: 128 });
    // a different vector on every layer from 1 on (random weights: no direction means anything here)
    const L = model.numLayers;
    const H = model.hiddenSize;
    matrix = new Float32Array(L * H);
    for (let i = H; i < L * H; i++) matrix[i] = 0.8 * Math.sin(i * 1.37 + 0.2);
    file = join(root, `${topology}-cv.gguf`);
    writeFileSync(file, encodeControlVector(matrix, { numLayers: L, hiddenSize: H, modelHint: 'llama' }).bytes);
  });
  afterAll(async () => {
    run?.dispose();
    await model?.dispose();
  });

  it('decodes greedily the tokens Steerlab decodes under the same steering', async () => {
    const prompts = [[5, 17, 200, 33, 8, 91, 140], [1, 250, 3, 77], [9, 9, 12, 300, 301, 45]];
    run.setControlVector(loadControlVector(file));
    const steered = await model.decode(prompts.map((ids) => ({ ids, maxNewTokens: 16, steering: matrix })), { steerPromptPositions: 'all' });
    const base = await model.decode(prompts.map((ids) => ({ ids, maxNewTokens: 16 })));
    const mine = steered.map((r) => r.tokenIds);
    expect(prompts.map((ids) => run.greedy(ids, 16, model.eosTokenIds))).toEqual(mine);
    // the vector changes every reply: the equality is the steered decode's, not the unsteered one's
    expect(mine.every((t, i) => t.join() !== base[i]!.tokenIds.join())).toBe(true);
  });
});
