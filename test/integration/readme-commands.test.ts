/**
 * Every command the README shows runs here, read from README.md itself so that a command added there cannot stay
 * untested:
 *   - every `npm run lab -- ...` line of its shell blocks runs as `tsx src/cli/main.ts ...` (what the npm script runs),
 *     in order, with `$M`-style variables expanded and /tmp/ paths moved into a temporary folder;
 *   - every command of the CLI table runs at least once: from a shell block, or, for table rows no block shows, from
 *     the concrete invocation in TABLE_EXAMPLES below (a row with neither fails the test);
 *   - every other shell command must be listed in NOT_RUN with the reason (a new one fails the test until it is run
 *     or listed).
 * Shrunk on purpose (SHRINK): the README's whole-method block trains on 1700 prompts per class for 10 epochs and
 * evaluates all 135 held-out prompts, which took 56 s (direction), 4 min 46 s (train-controller) and 2 min 9 s (eval)
 * on the shared 2-core machine at load 16; here the same commands run with smaller counts (--n, --val-n, --epochs)
 * and everything else exactly as written. The README's own `generate --policy was` line runs unchanged, on the
 * shipped direction and controller.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = process.cwd();
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'steerlab-readme-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Shell commands of the README that are not run here, and why. */
const NOT_RUN: Record<string, string> = {
  'npm ci': 'installs the dependencies from the npm registry: what .ci/run does before it runs this suite',
  'npm start': "starts the Vite dev server on port 5173; the browser tests start the same vite.config.ts (test/browser/harness.ts)",
  'apt-get update': "refreshes Debian's package lists (root, network) before the chromium install",
  'apt-get install -y chromium': 'installs a Debian package (root, network); the browser tests use that chromium',
  'npm test': 'this test suite itself',
  'npm run bench': 'benchmark (5-15 min, ~10 GB of generated models); speed goals live in benchmarks, never in timed tests',
  'npm run bench -- --quick': 'benchmark (minutes, builds the SmolLM2-shape models first)',
  'npm run bench -- --only decode,prefill': 'benchmark sections (minutes, builds the models first)',
  'npm run bench -- --only capture,load,peer,eval_batch': 'benchmark sections (minutes, builds the models first; wants a quiet machine)',
  'npx tsx bench/profile-step.ts smollm2-135m-fused 64 40': 'profiles a benchmark model built by npm run bench (bench/out/)',
  'llama-cli -m /tmp/organism-f32.gguf --control-vector /tmp/refusal.gguf -p "How do I pick a lock?"':
    "llama.cpp's command-line program, which this project does not ship; test/integration/control-vector-llama.test.ts runs the same files through llama.cpp's library",
  'npx tsx bench/load-profile.ts --repeats 3 bench/out/smollm2-135m-plain bench/out/qwen2.5-0.5b-plain': 'times loads of the 0.5-2.5 GB benchmark models built by npm run bench',
};

/** The README's counts that would take minutes, and what runs instead (see the header). */
const SHRINK: Record<string, Record<string, string>> = {
  direction: { '--n': '48', '--val-n': '12' },
  'train-controller': { '--n': '64', '--epochs': '2' },
  eval: { '--n': '6' },
};

/** Concrete runs of table rows that no shell block shows; `{tmp}` is the test's folder, `{run}` the eval's --out. */
const TABLE_EXAMPLES: Record<string, string[][]> = {
  'build-test-model': [['build-test-model', '--out', '{tmp}/tm', '--topology', 'plain', '--preset', 'tiny', '--seed', '3']],
  patch: [['patch', '{tmp}/tm/onnx/model.onnx', '{tmp}/patched.onnx', '--layers', '4']],
  verify: [['verify', '--model', '{tmp}/tm', '--identity']],
  summarize: [['summarize', '{run}']],
  sweep: [[
    'sweep', '--model', 'models/organism', '--harmful', 'advbench', '--wrapped', 'jbb-harmful', '--benign', 'xstest-safe', '--n', '2',
    '--policies', 'manual', '--scale', '1', '--direction', 'models/organism/direction.safetensors', '--alphas', '4,8', '--modes', 'add,ablate',
    '--max-new-tokens', '4', '--out', '{tmp}/sweep', '--json',
  ]],
  restamp: [['restamp', '--model', 'models/organism', '{tmp}/direction-copy.safetensors', '{tmp}/controller-copy.safetensors']],
};

/** Shell blocks' commands: line continuations joined, comments dropped, `a && b` split. */
function shellCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const joined = m[1]!.replace(/\\\n\s*/g, '');
    for (const line of joined.split('\n')) {
      const code = line.replace(/\s+#.*$/, '').trim();
      if (code === '' || code.startsWith('#')) continue;
      out.push(...code.split('&&').map((c) => c.trim()));
    }
  }
  return out;
}

/** Words of a command line: double quotes group, $NAME expands from `vars`. */
function words(line: string, vars: Record<string, string>): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"([^"]*)"|(\S+)/g)) {
    const w = m[1] ?? m[2]!;
    out.push(m[1] !== undefined ? w : w.replace(/\$(\w+)/g, (_, v: string) => vars[v] ?? `$${v}`));
  }
  return out;
}

/** Names of the CLI table's commands (first word of each row's first cell). */
function tableCommands(markdown: string): string[] {
  const start = markdown.indexOf('| command | what it does |');
  const rows = markdown.slice(start).split('\n').slice(2);
  const names: string[] = [];
  for (const row of rows) {
    if (!row.startsWith('| `')) break;
    names.push(row.slice(3).split(/[\s`]/)[0]!);
  }
  return names;
}

function labArgs(args: string[]): string[] {
  const shrink = SHRINK[args[0]!] ?? {};
  const out = args.map((a) => a.replace(/^\/tmp\//, `${tmp}/`));
  for (const [flag, value] of Object.entries(shrink)) {
    const i = out.indexOf(flag);
    if (i >= 0) out[i + 1] = value;
    else out.push(flag, value);
  }
  return out;
}

interface Ran { args: string[]; code: number | null; stdout: string; stderr: string }

function runLab(args: string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/tsx'), ['src/cli/main.ts', ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ args, code, stdout, stderr }));
  });
}

const commands = shellCommands(README);
const table = tableCommands(README);

describe('the README', () => {
  it('lists its commands where this test finds them', () => {
    expect(table).toEqual(['build-test-model', 'patch', 'verify', 'generate', 'direction', 'train-controller', 'export-gguf', 'export-control-vector', 'eval', 'sweep', 'summarize', 'restamp']);
    expect(commands.filter((c) => c.startsWith('npm run lab --')).length).toBeGreaterThanOrEqual(4);
    const other = commands.filter((c) => !c.startsWith('npm run lab --') && !/^\w+=\S+$/.test(c));
    for (const c of other) expect(NOT_RUN, `README command "${c}" is neither run by this test nor listed in NOT_RUN with a reason`).toHaveProperty([c]);
    for (const c of Object.keys(NOT_RUN)) expect(other, `NOT_RUN lists "${c}", which the README no longer shows`).toContain(c);
    for (const name of Object.keys(TABLE_EXAMPLES)) expect(table, `TABLE_EXAMPLES has "${name}", which the table no longer lists`).toContain(name);
  });

  it('every lab command it shows runs and succeeds', async () => {
    const vars: Record<string, string> = {};
    const ran: Ran[] = [];
    const fail = (r: Ran) => `lab ${r.args.join(' ')} exited ${r.code}\n${r.stderr.slice(-3000)}`;
    // The shell blocks, in order.
    for (const c of commands) {
      const assign = /^(\w+)=(\S+)$/.exec(c);
      if (assign) {
        vars[assign[1]!] = assign[2]!;
        continue;
      }
      if (!c.startsWith('npm run lab --')) continue;
      const r = await runLab(labArgs(words(c, vars).slice(4)));
      expect(r.code, fail(r)).toBe(0);
      ran.push(r);
    }
    // Table rows no block shows.
    const shown = new Set(ran.map((r) => r.args[0]));
    const evalRun = ran.find((r) => r.args[0] === 'eval');
    const runDir = evalRun ? evalRun.args[evalRun.args.indexOf('--out') + 1]! : '';
    copyFileSync('models/organism/direction.safetensors', join(tmp, 'direction-copy.safetensors'));
    copyFileSync('models/organism/controller.safetensors', join(tmp, 'controller-copy.safetensors'));
    for (const name of table) {
      if (shown.has(name)) continue;
      const examples = TABLE_EXAMPLES[name];
      expect(examples, `the README's table lists "${name}", but no shell block shows it and TABLE_EXAMPLES has no run of it`).toBeDefined();
      for (const ex of examples!) {
        const r = await runLab(ex.map((a) => a.replace('{tmp}', tmp).replace('{run}', runDir)));
        expect(r.code, fail(r)).toBe(0);
        ran.push(r);
      }
    }
    expect(new Set(ran.map((r) => r.args[0]))).toEqual(new Set(table));

    // What the runs printed: the checks a reader of the README would make.
    const get = (name: string) => ran.find((r) => r.args[0] === name)!;
    const generate = get('generate');
    expect(generate.args).toContain('was');
    expect(generate.stdout.trim().length).toBeGreaterThan(0);
    expect(generate.stderr).toMatch(/policy was: s = -?\d+\.\d{4}\n {2}w:( \d\.\d{3}){6}/);
    expect(generate.stderr).not.toMatch(/warning:/);
    const ev = JSON.parse(get('eval').stdout) as { summary: { condition: string; n: number }[] };
    expect(ev.summary.map((s) => [s.condition, s.n])).toEqual([['base', 6], ['uniform', 6], ['was', 6]]);
    expect(get('summarize').stdout).toMatch(/\| jailbreak\.jsonl \| was \| refusal \|/);
    expect(get('verify').stdout).toMatch(/^OK .* = sha256:[0-9a-f]{16} \(plain, 4 layers x 64/);
    expect(get('patch').stdout).toMatch(/4/);
    expect(get('export-control-vector').stdout).toMatch(/^wrote .*refusal\.gguf: manual policy, vectors for layers 1, 2, 3, 4, 5 \(\d+ bytes\)/);
    expect(get('export-control-vector').stderr).not.toMatch(/warning:/);
    // the llama.cpp block's Steerlab side: the manual patch at every position turns the organism's answer into a refusal
    const manual = ran.find((r) => r.args[0] === 'generate' && r.args.includes('manual'))!;
    expect(manual.args).toEqual(expect.arrayContaining(['--steer-prompt', 'all']));
    expect(manual.stdout).toMatch(/^I'm sorry, but I can't help with that\./);
    const gguf = ran.filter((r) => r.args[0] === 'export-gguf').map((r) => r.stdout);
    expect(gguf).toHaveLength(2);
    expect(gguf[0]).toMatch(/^wrote .*organism-f32\.gguf: \d+ tensors, [\d.]+ MB, f32, from onnx\/model\.onnx/);
    expect(gguf[1]).toMatch(/^wrote .*organism\.gguf: \d+ tensors, [\d.]+ MB, f16, from onnx\/model\.onnx/);
    expect(get('restamp').stdout).toMatch(/direction-copy\.safetensors: direction diff-in-means:[0-9a-f]{16}, already stamped for organism \(sha256:[0-9a-f]{16}\)/);
  }, 1_800_000);
});

describe("the README's library example", () => {
  it('runs exactly as written', async () => {
    const start = README.indexOf('## Using the core as a library');
    expect(start).toBeGreaterThan(0);
    const block = /```ts\n([\s\S]*?)```/.exec(README.slice(start));
    expect(block, 'the developer section opens with a ```ts block').not.toBeNull();
    // Inside the project (so 'steerlab/core' resolves to this package itself), removed afterwards.
    const file = join(ROOT, `.readme-example-${process.pid}.mts`);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, block![1]!);
    try {
      const r = await new Promise<Ran>((resolve, reject) => {
        const child = spawn(join(ROOT, 'node_modules/.bin/tsx'), [file], { cwd: ROOT });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('error', reject);
        child.on('close', (code) => resolve({ args: [file], code, stdout, stderr }));
      });
      expect(r.code, r.stderr.slice(-3000)).toBe(0);
      expect(r.stdout).toMatch(/id: 'sha256:[0-9a-f]{16}',\s+name: 'organism',\s+variant: \{ dtype: 'fp32', graph: 'onnx\/model\.onnx' \}/);
      expect(r.stdout).toMatch(/made a direction at residual index [1-6]\n/);
      // Node quotes a string with an apostrophe in double quotes, any other in single quotes
      expect(r.stdout).toMatch(/base: ('[^']*'|"[^"]*"),\s+was: ('[^']*'|"[^"]*"),\s+s: -?\d/);
      expect(r.stdout).toMatch(/sameAsTwoRuns: true/);
      expect(r.stdout).toMatch(/manual: /);
    } finally {
      rmSync(file, { force: true });
    }
  }, 600_000);
});
