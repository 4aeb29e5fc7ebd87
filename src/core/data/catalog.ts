/**
 * The named datasets shipped under public/data (upstream file and folder names kept), how each becomes prompt
 * records, and filtered views over them. public/data/manifest.json is generated from this table
 * (src/core/data/write-manifest.ts) and a test keeps the two in step.
 */
import type { PromptSpec } from './prompt-builder.js';
import type { TableFormat } from './tabular.js';
import type { PromptRecord } from './types.js';

export interface DatasetEntry extends PromptSpec {
  name: string;
  /** Path under public/data, e.g. 'advbench/harmful_behaviors.csv'. */
  file: string;
  format: TableFormat;
  /** Human-readable label rule, for the manifest and the UI. */
  labelRule: string;
  licence: string;
  /** CC-BY-NC-4.0 and similar: research / non-commercial use only. */
  nonCommercial: boolean;
  upstream: string;
  description: string;
}

export interface DatasetView {
  name: string;
  base: string;
  /** Human-readable filter, for the manifest and the UI. */
  filterRule: string;
  filter: (prompt: PromptRecord) => boolean;
  description: string;
}

const TOXICCHAT_UPSTREAM =
  'lmsys/toxic-chat, config toxicchat0124, human-annotated rows (all positives, a subset of negatives)';
const JAILBREAK_UPSTREAM = 'verazuo/jailbreak_llms ("Do Anything Now", CCS 2024)';
const REFUSAL_DIRECTION_UPSTREAM = 'andyrdt/refusal_direction dataset/splits';

function toxicchat(name: string, split: 'test' | 'train'): DatasetEntry {
  return {
    name,
    file: `toxicchat/toxicchat0124_${split}_human_annotated.jsonl`,
    format: 'jsonl',
    textColumn: 'user_input',
    idColumn: 'conv_id',
    label: { kind: 'column', column: 'toxicity', map: { '1': 'harmful', '0': 'benign' } },
    labelRule: 'toxicity: 1 -> harmful, 0 -> benign',
    meta: [{ column: 'jailbreaking', as: 'flag01' }],
    licence: 'CC-BY-NC-4.0',
    nonCommercial: true,
    upstream: `${TOXICCHAT_UPSTREAM}, ${split} split`,
    description: `ToxicChat ${split} (real user prompts; the paper evaluates refusal on toxicity == 1)`,
  };
}

function refusalDirection(name: string, file: string, label: 'harmful' | 'benign', licence: string, nc: boolean, source: string): DatasetEntry {
  return {
    name,
    file: `refusal_direction/${file}`,
    format: 'jsonl',
    textColumn: 'instruction',
    label: { kind: 'constant', label },
    labelRule: `all ${label}`,
    meta: [{ column: 'category' }],
    licence,
    nonCommercial: nc,
    upstream: `${REFUSAL_DIRECTION_UPSTREAM} (${source})`,
    description: `Arditi et al. refusal-direction ${label} instructions (${file.replace('.jsonl', '')})`,
  };
}

const ALPACA = 'Alpaca instructions without input, split 60/20/20 with seed 42';
const HARMFUL_TRAIN_LICENCE = 'per source (AdvBench MIT; MaliciousInstruct; TDC2023)';

export const DATASETS: readonly DatasetEntry[] = [
  toxicchat('toxicchat-test', 'test'),
  toxicchat('toxicchat-train', 'train'),
  {
    name: 'jailbreak-wild',
    file: 'jailbreak_llms/jailbreak_prompts_2023_12_25.csv',
    format: 'csv',
    textColumn: 'prompt',
    label: { kind: 'constant', label: 'harmful' },
    labelRule: 'all harmful (in-the-wild jailbreak prompts)',
    meta: [{ column: 'platform' }, { column: 'source' }, { column: 'community' }, { column: 'date' }],
    licence: 'MIT',
    nonCommercial: false,
    upstream: `${JAILBREAK_UPSTREAM}, jailbreak_prompts_2023_12_25.csv`,
    description: 'In-the-wild jailbreak prompts, 2023-12-25 snapshot (the paper\'s jailbreak column)',
  },
  {
    name: 'forbidden-questions',
    file: 'jailbreak_llms/forbidden_question_set.csv',
    format: 'csv',
    textColumn: 'question',
    label: { kind: 'constant', label: 'harmful' },
    labelRule: 'all harmful (13 forbidden OpenAI policy scenarios x 30)',
    meta: [
      { column: 'content_policy_id', as: 'number' },
      { column: 'content_policy_name' },
      { column: 'q_id', as: 'number' },
    ],
    licence: 'MIT',
    nonCommercial: false,
    upstream: `${JAILBREAK_UPSTREAM}, forbidden_question_set.csv`,
    description: 'Forbidden questions (some policies, e.g. legal/financial/health advice, are not harmful per se)',
  },
  {
    name: 'advbench',
    file: 'advbench/harmful_behaviors.csv',
    format: 'csv',
    textColumn: 'goal',
    label: { kind: 'constant', label: 'harmful' },
    labelRule: 'all harmful',
    meta: [{ column: 'target' }],
    licence: 'MIT',
    nonCommercial: false,
    upstream: 'llm-attacks/llm-attacks data/advbench/harmful_behaviors.csv (upstream targets of rows 63-66 rotated)',
    description: 'AdvBench harmful behaviours',
  },
  refusalDirection('harmful-train', 'harmful_train.jsonl', 'harmful', HARMFUL_TRAIN_LICENCE, false, 'AdvBench, MaliciousInstruct, TDC2023'),
  refusalDirection('harmful-val', 'harmful_val.jsonl', 'harmful', 'MIT (HarmBench)', false, 'HarmBench'),
  refusalDirection('harmless-train', 'harmless_train.jsonl', 'benign', 'CC-BY-NC-4.0 (Alpaca)', true, ALPACA),
  refusalDirection('harmless-val', 'harmless_val.jsonl', 'benign', 'CC-BY-NC-4.0 (Alpaca)', true, ALPACA),
  refusalDirection('harmless-test', 'harmless_test.jsonl', 'benign', 'CC-BY-NC-4.0 (Alpaca)', true, ALPACA),
  {
    name: 'xstest',
    file: 'xstest/xstest_prompts.csv',
    format: 'csv',
    textColumn: 'prompt',
    idColumn: 'id',
    label: { kind: 'column', column: 'label', map: { safe: 'benign', unsafe: 'harmful' } },
    labelRule: 'label: safe -> benign, unsafe (contrast prompts) -> harmful',
    meta: [{ column: 'type' }, { column: 'focus' }, { column: 'note' }],
    licence: 'CC-BY-4.0',
    nonCommercial: false,
    upstream: 'paul-rottger/exaggerated-safety (XSTest v2)',
    description: 'XSTest: safe prompts that look unsafe (over-refusal check) and unsafe contrast prompts',
  },
  {
    name: 'jbb-harmful',
    file: 'jailbreakbench/jbb_harmful_behaviors.csv',
    format: 'csv',
    textColumn: 'Goal',
    // The upstream index column has an empty header.
    idColumn: '',
    label: { kind: 'constant', label: 'harmful' },
    labelRule: 'all harmful',
    meta: [
      { column: 'Behavior', key: 'behavior' },
      { column: 'Category', key: 'category' },
      { column: 'Source', key: 'source' },
      { column: 'Target', key: 'target' },
    ],
    licence: 'MIT',
    nonCommercial: false,
    upstream: 'JailbreakBench/JBB-Behaviors, harmful behaviors',
    description: 'JailbreakBench harmful behaviours (row i pairs with jbb-benign row i)',
  },
  {
    name: 'jbb-benign',
    file: 'jailbreakbench/jbb_benign_behaviors.csv',
    format: 'csv',
    textColumn: 'goal',
    idColumn: 'index',
    label: { kind: 'constant', label: 'benign' },
    labelRule: 'all benign',
    meta: [{ column: 'behavior' }, { column: 'category' }, { column: 'source' }, { column: 'target' }],
    licence: 'MIT',
    nonCommercial: false,
    upstream: 'JailbreakBench/JBB-Behaviors, benign behaviors',
    description: 'JailbreakBench benign behaviours, topic-matched to jbb-harmful (over-refusal check)',
  },
];

const isHarmful = (p: PromptRecord) => p.label === 'harmful';
const isBenign = (p: PromptRecord) => p.label === 'benign';
const isJailbreaking = (p: PromptRecord) => p.meta.jailbreaking === true;

/** Views keep their base dataset's ids, so records of a view and of its base can be joined on id. */
export const VIEWS: readonly DatasetView[] = [
  { name: 'toxicchat-test-toxic', base: 'toxicchat-test', filterRule: 'toxicity == 1', filter: isHarmful, description: 'ToxicChat test, toxic rows (the paper\'s ToxicChat column)' },
  { name: 'toxicchat-test-nontoxic', base: 'toxicchat-test', filterRule: 'toxicity == 0', filter: isBenign, description: 'ToxicChat test, non-toxic rows (over-refusal check)' },
  { name: 'toxicchat-test-jailbreaking', base: 'toxicchat-test', filterRule: 'jailbreaking == 1', filter: isJailbreaking, description: 'ToxicChat test, rows flagged as jailbreaking' },
  { name: 'toxicchat-train-toxic', base: 'toxicchat-train', filterRule: 'toxicity == 1', filter: isHarmful, description: 'ToxicChat train, toxic rows' },
  { name: 'toxicchat-train-nontoxic', base: 'toxicchat-train', filterRule: 'toxicity == 0', filter: isBenign, description: 'ToxicChat train, non-toxic rows' },
  { name: 'xstest-safe', base: 'xstest', filterRule: 'label == safe', filter: isBenign, description: 'XSTest safe prompts (over-refusal check)' },
  { name: 'xstest-unsafe', base: 'xstest', filterRule: 'label == unsafe', filter: isHarmful, description: 'XSTest unsafe contrast prompts' },
];

export type DatasetName = string;

export function findDataset(name: string): DatasetEntry | undefined {
  return DATASETS.find((d) => d.name === name);
}

export function findView(name: string): DatasetView | undefined {
  return VIEWS.find((v) => v.name === name);
}

/** Every name loadDataset/fetchDataset accepts: datasets first, then views. */
export function datasetNames(): string[] {
  return [...DATASETS.map((d) => d.name), ...VIEWS.map((v) => v.name)];
}
