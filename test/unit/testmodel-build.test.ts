/**
 * The test-model folder: byte-identical rebuilds, external data, config files, option errors, the CLI command, and
 * transformers.js loading the folder and generating exactly what a greedy loop over referenceForward generates.
 */
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer, env, type PreTrainedModel } from '@huggingface/transformers';
import * as ort from 'onnxruntime-node';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { register, runBuildTestModel, shapeFromCli, type BuildTestModelCliOptions } from '../../src/cli/commands/build-test-model.js';
import { buildTestModel, validateBuildOptions, type BuildOptions } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type DecoderShape } from '../../src/core/onnx/testmodel/config.js';
import { referenceForward, referenceGreedy } from '../../src/core/onnx/testmodel/reference.js';
import { IM_END_ID, ENDOFTEXT_ID } from '../../src/core/onnx/testmodel/tokenizer.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { TOL, emptyPast, maxAbsDiff, range, runDecoder } from './testmodel-helpers.js';

const tiny = SHAPE_PRESETS.tiny;
const qwenLike: DecoderShape = { ...tiny, attentionBias: true, tieWordEmbeddings: true };

let root: string;
beforeAll(async () => {
  env.allowRemoteModels = false;
  root = await mkdtemp(join(tmpdir(), 'steerlab-testmodel-build-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function filesOf(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of await readdir(dir, { recursive: true })) {
    const p = join(dir, name);
    if ((await stat(p)).isFile()) out.set(name, await readFile(p));
  }
  return out;
}

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8')) as Record<string, any>;

describe('folder contents', () => {
  it('same options give byte-identical folders (plain, merged, external data); another seed does not', async () => {
    const cases: BuildOptions[] = [
      { shape: tiny, topology: 'plain', seed: 3 },
      { shape: qwenLike, topology: 'merged', seed: 3 },
      { shape: tiny, topology: 'plain', seed: 3, externalData: true },
    ];
    for (const [i, opts] of cases.entries()) {
      const a = await buildTestModel(join(root, `same-${i}-a`), opts);
      const b = await buildTestModel(join(root, `same-${i}-b`), opts);
      const fa = await filesOf(a.dir);
      const fb = await filesOf(b.dir);
      expect([...fa.keys()].sort()).toEqual([...fb.keys()].sort());
      for (const [name, bytes] of fa) expect(bytes.equals(fb.get(name)!), `${opts.topology} ${name}`).toBe(true);
    }
    const c = await buildTestModel(join(root, 'same-other-seed'), { ...cases[0], seed: 4 });
    const onnxA = await readFile(join(root, 'same-0-a', 'onnx/model.onnx'));
    expect(onnxA.equals(await readFile(join(c.dir, c.onnxFile)))).toBe(false);
  });

  it('writes every file transformers.js needs and nothing half-written', async () => {
    const built = await buildTestModel(join(root, 'listing'), { shape: tiny, topology: 'plain', seed: 1 });
    const names = [...(await filesOf(built.dir)).keys()].sort();
    expect(names).toEqual([
      'config.json', 'generation_config.json', join('onnx', 'model.onnx'), 'special_tokens_map.json',
      'steerlab_build.json', 'tokenizer.json', 'tokenizer_config.json',
    ]);
  });

  it('config.json says llama without bias and qwen2 with it, and matches the shape', async () => {
    const llama = await buildTestModel(join(root, 'cfg-llama'), { shape: tiny, topology: 'plain', seed: 1 });
    const cfg = await readJson(join(llama.dir, 'config.json'));
    expect(cfg).toMatchObject({
      model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4,
      num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, vocab_size: 320, rms_norm_eps: 1e-5, rope_theta: 10000,
      max_position_embeddings: 256, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 2, pad_token_id: 0,
      torch_dtype: 'float32',
    });
    expect(cfg['transformers.js_config']).toEqual({ dtype: 'fp32' });
    const qwen = await buildTestModel(join(root, 'cfg-qwen'), { shape: qwenLike, topology: 'merged', seed: 1 });
    const qcfg = await readJson(join(qwen.dir, 'config.json'));
    expect(qcfg).toMatchObject({ model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], tie_word_embeddings: true, attention_bias: true });
    expect(await readJson(join(qwen.dir, 'generation_config.json'))).toMatchObject({ eos_token_id: [IM_END_ID, ENDOFTEXT_ID] });
    expect(await readJson(join(qwen.dir, 'steerlab_build.json'))).toMatchObject({
      topology: 'merged', seed: 1, onnxFile: 'onnx/decoder_model_merged.onnx', modelFileName: 'decoder_model_merged', shape: qwenLike,
    });
  });

  it('external data: weights in onnx/model.onnx_data, flagged in config, and the model still computes the reference', async () => {
    const built = await buildTestModel(join(root, 'ext'), { shape: qwenLike, topology: 'plain', seed: 2, externalData: true });
    const onnxBytes = (await stat(join(built.dir, 'onnx/model.onnx'))).size;
    const dataBytes = (await stat(join(built.dir, 'onnx/model.onnx_data'))).size;
    expect(dataBytes).toBeGreaterThan(10 * onnxBytes);
    const cfg = await readJson(join(built.dir, 'config.json'));
    expect(cfg['transformers.js_config'].use_external_data_format).toEqual({ 'model.onnx': 1 });
    const sess = await ort.InferenceSession.create(join(built.dir, built.onnxFile));
    const ids = [1, 2, 3, 100, 250];
    const out = await runDecoder(sess, { ids: [ids], mask: [ids.map(() => 1)], positions: [range(ids.length)], past: emptyPast(qwenLike, 1) });
    expect(maxAbsDiff(out.logits.data as Float32Array, referenceForward(qwenLike, generateWeights(qwenLike, 2), ids).logits)).toBeLessThan(TOL);
    // rebuilding the same folder without external data removes the stale data file
    await buildTestModel(built.dir, { shape: qwenLike, topology: 'plain', seed: 2, externalData: false });
    await expect(stat(join(built.dir, 'onnx/model.onnx_data'))).rejects.toThrow(/ENOENT/);
  });

  it('dispatches the fused topologies to their own files and dtype', async () => {
    const fused = await buildTestModel(join(root, 'fused'), { shape: tiny, topology: 'fused', seed: 1 });
    expect(fused).toMatchObject({ onnxFile: 'onnx/model.onnx', modelFileName: 'model', dtype: 'fp32' });
    const q4 = await buildTestModel(join(root, 'q4'), { shape: tiny, topology: 'fused-q4f16', seed: 1 });
    expect(q4).toMatchObject({ onnxFile: 'onnx/model_q4f16.onnx', modelFileName: 'model', dtype: 'q4f16' });
    expect((await stat(join(q4.dir, q4.onnxFile))).size).toBeGreaterThan(0);
    expect((await readJson(join(q4.dir, 'config.json')))['transformers.js_config']).toEqual({ dtype: 'q4f16' });
    const cpu = await buildTestModel(join(root, 'q4-cpu'), { shape: tiny, topology: 'fused-q4', seed: 1 });
    expect(cpu).toMatchObject({ onnxFile: 'onnx/model_q4.onnx', modelFileName: 'model', dtype: 'q4' });
    expect((await readJson(join(cpu.dir, 'config.json')))['transformers.js_config']).toEqual({ dtype: 'q4' });
  });
});

describe('bad options', () => {
  const dir = () => join(root, 'bad');
  it('reject with errors that name the option and what was expected', async () => {
    await expect(buildTestModel(dir(), { shape: { ...tiny, numKvHeads: 3 }, topology: 'plain', seed: 0 })).rejects.toThrow(
      /numHeads \(4\) must be a multiple of numKvHeads \(3\)/,
    );
    await expect(buildTestModel(dir(), { shape: { ...tiny, vocabSize: 200 }, topology: 'plain', seed: 0 })).rejects.toThrow(
      /vocabSize must be >= 263.*got 200/,
    );
    await expect(buildTestModel(dir(), { shape: { ...tiny, headDim: 15 }, topology: 'plain', seed: 0 })).rejects.toThrow(/headDim must be even/);
    await expect(buildTestModel(dir(), { shape: tiny, topology: 'gguf' as never, seed: 0 })).rejects.toThrow(
      /topology must be one of plain, fused, fused-q4, fused-q4f16, merged, got gguf/,
    );
    await expect(buildTestModel(dir(), { shape: tiny, topology: 'plain', seed: -1 })).rejects.toThrow(/seed must be an integer/);
    await expect(buildTestModel('', { shape: tiny, topology: 'plain', seed: 0 })).rejects.toThrow(/outDir/);
  });

  const cli = (o: Partial<BuildTestModelCliOptions>): BuildTestModelCliOptions => ({
    out: join(root, 'cli-bad'), topology: 'plain', preset: 'tiny', seed: '0', ...o,
  });
  it('CLI flags are checked before building', async () => {
    await expect(runBuildTestModel(cli({ layers: 'abc' }))).rejects.toThrow(/--layers must be a whole number in 1..1024, got "abc"/);
    await expect(runBuildTestModel(cli({ preset: 'gpt5' }))).rejects.toThrow(/--preset must be one of tiny, smollm2-135m, qwen2.5-0.5b/);
    await expect(runBuildTestModel(cli({ topology: 'x' }))).rejects.toThrow(/--topology must be one of/);
    await expect(runBuildTestModel(cli({ hidden: '65' }))).rejects.toThrow(/--hidden \(65\) must be a multiple of --heads \(4\)/);
    await expect(runBuildTestModel(cli({ ropeTheta: '-1' }))).rejects.toThrow(/--rope-theta must be a number in \(0, 1000000000\], got "-1"/);
    await expect(runBuildTestModel(cli({ seed: '1.5' }))).rejects.toThrow(/--seed must be a whole number in 0..4294967295, got "1.5"/);
    await expect(runBuildTestModel(cli({ vocab: '100' }))).rejects.toThrow(/vocabSize must be >= 263/);
  });
});

describe('CLI command', () => {
  it('accepts the real presets and overrides their dimensions', () => {
    const base: BuildTestModelCliOptions = { out: 'x', topology: 'plain', preset: 'smollm2-135m', seed: '0' };
    expect(shapeFromCli(base)).toEqual(SHAPE_PRESETS['smollm2-135m']);
    expect(shapeFromCli({ ...base, preset: 'qwen2.5-0.5b' })).toEqual(SHAPE_PRESETS['qwen2.5-0.5b']);
    for (const preset of ['smollm2-135m', 'qwen2.5-0.5b']) {
      for (const topology of ['plain', 'merged', 'fused', 'fused-q4f16'] as const) {
        expect(() => validateBuildOptions({ shape: SHAPE_PRESETS[preset], topology, seed: 0 })).not.toThrow();
      }
    }
    expect(shapeFromCli({ ...base, layers: '2', hidden: '128', heads: '8', kvHeads: '2', vocab: '400', tieEmbeddings: false })).toMatchObject({
      numLayers: 2, hiddenSize: 128, numHeads: 8, numKvHeads: 2, headDim: 16, vocabSize: 400, tieWordEmbeddings: false,
    });
  });

  it('builds a folder and reports files and sizes', async () => {
    const r = await runBuildTestModel({
      out: join(root, 'cli-ok'), topology: 'merged', preset: 'tiny', layers: '2', seed: '5', attentionBias: true, externalData: true,
    });
    expect(r).toMatchObject({ topology: 'merged', seed: 5, modelFileName: 'decoder_model_merged' });
    expect(r.shape).toMatchObject({ numLayers: 2, attentionBias: true });
    expect(r.files.map((f) => f.path)).toContain('onnx/decoder_model_merged.onnx_data');
    expect(r.totalBytes).toBe(r.files.reduce((a, f) => a + f.bytes, 0));
  });
});

describe('CLI through commander', () => {
  async function lab(args: string[]): Promise<string> {
    const program = new Command().exitOverride();
    register(program);
    const writes: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    try {
      await program.parseAsync(['node', 'lab', 'build-test-model', ...args]);
    } finally {
      spy.mockRestore();
    }
    return writes.join('');
  }

  it('keeps preset booleans unless a flag is given, and --json prints the result', async () => {
    const out = join(root, 'commander');
    const r = JSON.parse(await lab(['--out', out, '--layers', '1', '--json'])) as { shape: DecoderShape; files: unknown[] };
    expect(r.shape).toMatchObject({ numLayers: 1, tieWordEmbeddings: false, attentionBias: false });
    expect(r.files.length).toBe(7);
    const r2 = JSON.parse(await lab(['--out', out, '--layers', '1', '--tie-embeddings', '--attention-bias', '--json'])) as { shape: DecoderShape };
    expect(r2.shape).toMatchObject({ tieWordEmbeddings: true, attentionBias: true });
    expect((await readJson(join(out, 'config.json'))).model_type).toBe('qwen2');
    const text = await lab(['--out', out, '--layers', '1', '--topology', 'merged']);
    expect(text).toMatch(/built merged test model \(1 layers.*\n.*onnx\/decoder_model_merged\.onnx/);
  });
});

describe('transformers.js loads the folder and computes what the reference computes', () => {
  const qwenUntied: DecoderShape = { ...qwenLike, tieWordEmbeddings: false };
  // `varied`: the greedy continuation must hold several distinct tokens, so that equality says something. Tied
  // test models mostly echo their last token (the embedding dominates the residual), so that case relies on logits.
  const cases = [
    { name: 'plain llama', shape: tiny, topology: 'plain' as const, externalData: false, varied: true },
    { name: 'merged qwen2 (bias)', shape: qwenUntied, topology: 'merged' as const, externalData: false, varied: true },
    { name: 'merged qwen2 (bias, tied)', shape: qwenLike, topology: 'merged' as const, externalData: false, varied: false },
    { name: 'plain with external data', shape: tiny, topology: 'plain' as const, externalData: true, varied: true },
  ];
  it('batched generate() with left padding gives each prompt its own greedy continuation', async () => {
    const seed = 11;
    const built = await buildTestModel(join(root, 'tjs-batch'), { shape: tiny, topology: 'plain', seed });
    const weights = generateWeights(tiny, seed);
    const tok = await AutoTokenizer.from_pretrained(built.dir);
    tok.padding_side = 'left';
    const model: PreTrainedModel = await AutoModelForCausalLM.from_pretrained(built.dir, { dtype: 'fp32' });
    try {
      const texts = ['Hi', 'Tell me a story about the sea.'].map(
        (content) => tok.apply_chat_template([{ role: 'user', content }], { tokenize: false, add_generation_prompt: true }) as string,
      );
      const enc = tok(texts, { padding: true });
      const mask = (enc.attention_mask.tolist() as bigint[][]).map((r) => r.map(Number));
      expect(mask[0][0]).toBe(0); // the short prompt really is left-padded
      const maxNew = 8;
      const rows = ((await model.generate({ ...enc, max_new_tokens: maxNew, do_sample: false })) as { tolist(): bigint[][] }).tolist();
      const width = mask[0].length;
      for (let b = 0; b < texts.length; b++) {
        const prompt = (enc.input_ids.tolist() as bigint[][])[b].map(Number).filter((_, i) => mask[b][i] === 1);
        const expected = referenceGreedy(tiny, weights, prompt, maxNew, [IM_END_ID, ENDOFTEXT_ID]);
        expect(new Set(expected).size, `row ${b}`).toBeGreaterThan(2);
        expect(rows[b].map(Number).slice(width, width + expected.length), `row ${b}`).toEqual(expected);
      }
    } finally {
      await model.dispose();
    }
  });

  for (const c of cases) {
    it(`${c.name}: forward logits and greedy generate()`, async () => {
      const seed = 11;
      const built = await buildTestModel(join(root, `tjs-${c.name.replace(/\W+/g, '-')}`), { shape: c.shape, topology: c.topology, seed, externalData: c.externalData });
      const weights = generateWeights(c.shape, seed);
      const tok = await AutoTokenizer.from_pretrained(built.dir);
      const model: PreTrainedModel = await AutoModelForCausalLM.from_pretrained(built.dir, {
        dtype: built.dtype,
        model_file_name: built.modelFileName,
      });
      try {
        const text = tok.apply_chat_template([{ role: 'user', content: 'Tell me a story.' }], { tokenize: false, add_generation_prompt: true }) as string;
        const enc = tok(text);
        const prompt = (enc.input_ids.tolist() as bigint[][])[0].map(Number);

        const { logits } = (await model(enc)) as { logits: { data: Float32Array; dims: number[] } };
        expect(logits.dims).toEqual([1, prompt.length, c.shape.vocabSize]);
        expect(maxAbsDiff(logits.data, referenceForward(c.shape, weights, prompt).logits)).toBeLessThan(TOL);

        const maxNew = 12;
        const out = (await model.generate({ ...enc, max_new_tokens: maxNew, do_sample: false })) as { tolist(): bigint[][] };
        const generated = out.tolist()[0].map(Number).slice(prompt.length);
        const expected = referenceGreedy(c.shape, weights, prompt, maxNew, [IM_END_ID, ENDOFTEXT_ID]);
        expect(expected.length).toBeGreaterThan(3); // the comparison covers several cached decoding steps
        if (c.varied) expect(new Set(expected).size).toBeGreaterThan(3);
        expect(generated).toEqual(expected);
      } finally {
        await model.dispose();
      }
    });
  }
});
