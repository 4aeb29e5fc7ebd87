/**
 * No command writes over one of its own inputs (Node). Paths are compared by what they are on disk, not by their
 * spelling: an existing output that is the same file as an input (same device and inode: the same path written
 * another way, a symbolic link to it, a hard link) is refused before anything is written; outputs not created yet
 * are compared with each other by their resolved paths.
 */
import { realpathSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** A path a command reads or writes, with the flag or role that names it in messages. */
export interface NamedPath {
  path: string;
  role: string;
}

function inode(p: string): string | null {
  try {
    const st = statSync(p);
    return st.isFile() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}

/** The path with its folder resolved through links (the file itself may not exist yet). */
function resolved(p: string): string {
  const dir = dirname(resolve(p));
  try {
    return join(realpathSync(dir), basename(p));
  } catch {
    return resolve(p);
  }
}

/** Throws, naming both paths, when an output would overwrite an input or another output. */
export function refuseOverwritingInputs(outputs: readonly NamedPath[], inputs: readonly NamedPath[]): void {
  const byInode = new Map<string, NamedPath>();
  for (const i of inputs) {
    const k = inode(i.path);
    if (k !== null && !byInode.has(k)) byInode.set(k, i);
  }
  const seen = new Map<string, NamedPath>();
  for (const o of outputs) {
    const k = inode(o.path);
    const hit = k === null ? undefined : byInode.get(k);
    if (hit) {
      throw new Error(
        `${o.role} ${o.path} is the same file as ${hit.role} ${hit.path}: the command would overwrite its own input; write to another path`,
      );
    }
    const r = resolved(o.path);
    const twin = seen.get(r);
    if (twin) throw new Error(`${o.role} ${o.path} and ${twin.role} ${twin.path} are the same file: give them different paths`);
    seen.set(r, o);
  }
}

/** Files transformers.js and Steerlab read from a model folder, besides everything under onnx/. */
const MODEL_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'vocab.json', 'merges.txt', 'tokenizer.model', 'added_tokens.json', 'chat_template.jinja', 'chat_template.json',
];

/**
 * The files of a local model folder that loading reads (onnx/* and the config and tokenizer files), as inputs;
 * nothing for a hub id. Artefacts kept beside a model (its direction, controller) are not model inputs.
 */
export function modelFolderInputs(model: string, role = '--model'): NamedPath[] {
  const out: NamedPath[] = MODEL_FILES.map((f) => ({ path: join(model, f), role: `${role} file` }));
  try {
    for (const n of readdirSync(join(model, 'onnx'))) out.push({ path: join(model, 'onnx', n), role: `${role} file` });
  } catch {
    // no onnx/ folder here: a hub id, or a folder the loader will refuse
  }
  return out;
}
