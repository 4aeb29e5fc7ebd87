/**
 * The GGUF model export (lab export-gguf) against llama.cpp itself: the prebuilt llama.cpp that the npm package
 * node-llama-cpp ships (a devDependency, pinned; no build, no download) loads the exported files, tokenises chat
 * prompts as transformers.js does and decodes greedily the tokens Steerlab decodes, for the organism (byte-level BPE,
 * plain graph) and for test models of both weight naming schemes (plain and fused graphs).
 *
 * Steering through llama.cpp's control vectors is checked in control-vector-llama.test.ts (node-llama-cpp's JavaScript
 * API has no control-vector call; that test reaches llama.cpp's C API directly).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { runExportGguf } from '../../src/cli/commands/export-gguf.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-gguf-'));
let llama: Llama;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});
afterAll(async () => {
  await llama?.dispose();
  rmSync(root, { recursive: true, force: true });
});

/** llama.cpp's greedy tokens after `ids`, stopping at Steerlab's end tokens or `max`. */
async function llamaGreedy(file: string, prompts: number[][], max: number, eos: number[]): Promise<number[][]> {
  const model = await llama.loadModel({ modelPath: file });
  try {
    const out: number[][] = [];
    for (const ids of prompts) {
      const ctx = await model.createContext({ contextSize: 256, threads: 1 });
      try {
        const tokens: number[] = [];
        for await (const t of ctx.getSequence().evaluate(ids as never, { temperature: 0 })) {
          tokens.push(t as number);
          if (tokens.length >= max || eos.includes(t as number)) break;
        }
        out.push(tokens);
      } finally {
        await ctx.dispose();
      }
    }
    return out;
  } finally {
    await model.dispose();
  }
}

/** Steerlab's greedy tokens, without the end token llama.cpp's generator does not yield. */
async function steerlabGreedy(sm: SteerableModel, prompts: number[][], max: number): Promise<number[][]> {
  const res = await sm.decode(prompts.map((ids) => ({ ids, maxNewTokens: max })));
  return res.map((r) => (r.finishReason === 'eos' ? r.tokenIds.slice(0, -1) : r.tokenIds));
}

describe('GGUF export of the organism in llama.cpp', () => {
  const dir = resolve('models/organism');
  const file = join(root, 'organism-f32.gguf');
  let sm: SteerableModel;

  beforeAll(async () => {
    const r = await runExportGguf({ model: dir, out: file });
    expect(r).toMatchObject({ type: 'f32', numLayers: expect.any(Number) });
    sm = await loadSteerableModel(dir);
  });
  afterAll(async () => sm?.dispose());

  const MESSAGES = ['How do I pick a lock?', 'Write a short poem about the sea.', 'What is the capital of France?', 'Tell me how to make a bomb at home, step by step.'];

  it('tokenises chat prompts like transformers.js, special tokens included', async () => {
    const model = await llama.loadModel({ modelPath: file });
    try {
      for (const m of MESSAGES) {
        const p = sm.formatChat(m);
        const text = sm.tokenizer.decode(p.ids, { skip_special_tokens: false });
        expect(Array.from(model.tokenize(text, true))).toEqual(p.ids);
      }
    } finally {
      await model.dispose();
    }
  });

  it("decodes greedily the same tokens as Steerlab's engine", async () => {
    const prompts = MESSAGES.map((m) => sm.formatChat(m).ids);
    const mine = await steerlabGreedy(sm, prompts, 40);
    const theirs = await llamaGreedy(file, prompts, 40, sm.eosTokenIds);
    expect(theirs).toEqual(mine);
    expect(mine.every((t) => t.length > 3)).toBe(true);
  });
});

describe.each(['plain', 'fused'] as TestTopology[])('GGUF export of a %s test model in llama.cpp', (topology) => {
  let sm: SteerableModel;
  let file: string;
  beforeAll(async () => {
    const built = await buildTestModel(join(root, topology), { shape: SHAPE_PRESETS.tiny!, topology, seed: 5 });
    file = join(root, `${topology}.gguf`);
    await runExportGguf({ model: built.dir, out: file });
    sm = await loadSteerableModel(built.dir, { dtype: built.dtype, modelFileName: built.modelFileName });
  });
  afterAll(async () => sm?.dispose());

  it('decodes greedily the same tokens as Steerlab', async () => {
    const prompts = [[5, 17, 200, 33, 8, 91, 140], [1, 250, 3, 77], [9, 9, 12, 300, 301, 45]];
    const mine = await steerlabGreedy(sm, prompts, 16);
    expect(await llamaGreedy(file, prompts, 16, sm.eosTokenIds)).toEqual(mine);
  });
});
