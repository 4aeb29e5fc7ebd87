/** The test-model tokenizer: exact vocabulary size, valid merges, and what transformers.js AutoTokenizer makes of it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import {
  BASE_VOCAB_SIZE,
  IM_END_ID,
  IM_START_ID,
  MIN_VOCAB_SIZE,
  buildBpeVocabulary,
  buildTokenizerFiles,
  byteToUnicode,
} from '../../src/core/onnx/testmodel/tokenizer.js';

describe('byte-level BPE vocabulary', () => {
  it('maps all 256 bytes to distinct printable characters (GPT-2 map)', () => {
    const map = byteToUnicode();
    expect(map).toHaveLength(256);
    expect(new Set(map.map((e) => e.byte)).size).toBe(256);
    expect(new Set(map.map((e) => e.char)).size).toBe(256);
    expect(map.find((e) => e.byte === 32)!.char).toBe('Ġ'); // space
    expect(map.find((e) => e.byte === 10)!.char).toBe('Ċ'); // newline
    expect(map.find((e) => e.byte === 65)!.char).toBe('A');
  });

  for (const size of [MIN_VOCAB_SIZE, SHAPE_PRESETS.tiny.vocabSize, 5000, SHAPE_PRESETS['smollm2-135m'].vocabSize]) {
    it(`has exactly ${size} unique tokens with ids 0..${size - 1}, each merge producing the next id`, () => {
      const { vocab, merges } = buildBpeVocabulary(size);
      expect(vocab.size).toBe(size);
      const ids = [...vocab.values()].sort((a, b) => a - b);
      expect(ids[0]).toBe(0);
      expect(ids[size - 1]).toBe(size - 1);
      expect(new Set(ids).size).toBe(size);
      expect(merges).toHaveLength(size - BASE_VOCAB_SIZE);
      // every rule joins two earlier tokens and yields the next id (one expect: 49k of them would be slow)
      const bad = merges.findIndex(
        ([a, b], i) => !vocab.has(b) || !(vocab.get(a)! < BASE_VOCAB_SIZE + i) || vocab.get(a + b) !== BASE_VOCAB_SIZE + i,
      );
      expect(bad).toBe(-1);
    });
  }

  it('rejects a vocabulary too small for specials + bytes + merges, naming the minimum', () => {
    expect(() => buildBpeVocabulary(BASE_VOCAB_SIZE)).toThrow(/vocabSize must be an integer >= 263.*got 259/);
    expect(() => buildTokenizerFiles(100, 64)).toThrow(/>= 263/);
    expect(() => buildBpeVocabulary(300.5)).toThrow(/vocabSize/);
  });
});

describe('transformers.js AutoTokenizer on a built folder', () => {
  let root: string;
  let tok: PreTrainedTokenizer;
  beforeAll(async () => {
    env.allowRemoteModels = false;
    root = await mkdtemp(join(tmpdir(), 'steerlab-testmodel-tok-'));
    const built = await buildTestModel(join(root, 'm'), { shape: SHAPE_PRESETS.tiny, topology: 'plain', seed: 1 });
    tok = await AutoTokenizer.from_pretrained(built.dir);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('round-trips text through encode/decode, unicode and whitespace included', () => {
    for (const text of ['Hello there, world!', 'the cat sat on the mat', 'héllo wörld 🙂 ∑', '  tabs\tand\nnewlines  ', 'x']) {
      const ids = tok.encode(text);
      expect(ids.every((i) => i >= 0 && i < SHAPE_PRESETS.tiny.vocabSize)).toBe(true);
      expect(tok.decode(ids)).toBe(text);
    }
  });

  it('uses merges: common text needs fewer tokens than bytes', () => {
    const text = 'the theme then';
    expect(tok.encode(text).length).toBeLessThan(new TextEncoder().encode(text).length);
  });

  it('encodes the special tokens as single ids and does not add a BOS', () => {
    expect(tok.encode('<|im_start|>hi<|im_end|>')).toEqual([IM_START_ID, ...tok.encode('hi'), IM_END_ID]);
    expect(tok.encode('<|endoftext|>')).toEqual([0]);
    expect(tok.eos_token_id).toBe(IM_END_ID);
    expect(tok.decode([IM_START_ID, ...tok.encode('hi')], { skip_special_tokens: true })).toBe('hi');
  });

  it('applies the ChatML template with a generation prompt', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi!' },
    ];
    const text = tok.apply_chat_template(messages, { tokenize: false, add_generation_prompt: true });
    expect(text).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
    const noPrompt = tok.apply_chat_template(messages, { tokenize: false, add_generation_prompt: false });
    expect(noPrompt).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n');
    const ids = tok.apply_chat_template(messages, { add_generation_prompt: true, return_tensor: false, return_dict: false }) as unknown as number[];
    expect(ids[0]).toBe(IM_START_ID);
    expect(tok.decode(ids)).toBe(text);
  });
});
