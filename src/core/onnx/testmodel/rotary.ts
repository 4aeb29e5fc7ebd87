/**
 * Rotary-embedding tables in the form com.microsoft GroupQueryAttention (do_rotary=1) and RotaryEmbedding take:
 * cos_cache / sin_cache [maxPositions, headDim / 2], row p holding cos/sin(p * theta^(-2i / headDim)).
 * With rotary_interleaved=0 the kernel rotates the two halves of each head (HF Llama `rotate_half`).
 */
import type { DecoderShape } from './config.js';
import { ropeInvFreq } from './reference.js';

export function rotaryCaches(shape: DecoderShape): { cos: Float32Array; sin: Float32Array; dims: [number, number] } {
  const half = shape.headDim / 2;
  const rows = shape.maxPositionEmbeddings;
  const cos = new Float32Array(rows * half);
  const sin = new Float32Array(rows * half);
  // float32 inverse frequencies and float32 angles, shared with the reference forward pass so both rotate alike.
  const invFreq = ropeInvFreq(shape);
  for (let i = 0; i < half; i++) {
    for (let p = 0; p < rows; p++) {
      const angle = Math.fround(p * invFreq[i]);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin, dims: [rows, half] };
}
