/**
 * Which direction and which controller a model starts with when it loads: the user's explicit choice, remembered per
 * model id in localStorage. Only picking an item in the Direction or Controller tab's list ("Use") changes it; making
 * a new direction or controller makes it active for now and lists it, but never replaces the choice silently, so the
 * shipped artefacts stay what a model starts with until the user says otherwise.
 */
import type { ArtefactKind } from './artefacts.js';

/**
 * shipped: the file next to the model (models/<name>/direction.safetensors, controller.safetensors); saved: an
 * artefact in this browser's IndexedDB; embedding (directions only): the paper's embedding direction, computed at
 * load; none (controllers only): no controller.
 */
export type ArtefactChoice = { source: 'shipped' } | { source: 'saved'; id: string } | { source: 'embedding' } | { source: 'none' };

const key = (modelId: string, kind: ArtefactKind) => `steerlab:start-with:${kind}:${modelId}`;

function storage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null; // storage disabled (privacy settings): nothing is remembered
  }
}

function valid(v: unknown): v is ArtefactChoice {
  if (!v || typeof v !== 'object') return false;
  const c = v as { source?: unknown; id?: unknown };
  if (c.source === 'saved') return typeof c.id === 'string' && c.id !== '';
  return c.source === 'shipped' || c.source === 'embedding' || c.source === 'none';
}

/** The remembered choice, or null when the user never chose (then the model starts with what it ships). */
export function rememberedChoice(modelId: string, kind: ArtefactKind): ArtefactChoice | null {
  const raw = storage()?.getItem(key(modelId, kind));
  if (!raw) return null;
  try {
    const v: unknown = JSON.parse(raw);
    return valid(v) ? v : null;
  } catch {
    return null;
  }
}

export function rememberChoice(modelId: string, kind: ArtefactKind, choice: ArtefactChoice): void {
  storage()?.setItem(key(modelId, kind), JSON.stringify(choice));
}

/** Whether two choices name the same item (an unsaved artefact is no item: never the same as one). */
export function sameChoice(a: { source: string; id?: string } | null, b: { source: string; id?: string } | null): boolean {
  if (!a || !b) return a === b;
  return a.source === b.source && (a.source !== 'saved' || a.id === b.id);
}
