/**
 * 4-bit block quantisation in the layout of com.microsoft MatMulNBits (bits 4), as the onnxruntime-genai model
 * builder and the transformers.js quantize script write it for q4 / q4f16 files.
 *
 * Layout (ORT contrib-op spec): the [K, N] weight is stored transposed, column by column. Column n is cut into
 * ceil(K / blockSize) blocks along K; each block has one scale and blockSize 4-bit codes packed two per byte,
 * low nibble first. So `packed` is [N, nBlocks, blockSize / 2] uint8 and `scales` is [N * nBlocks].
 *
 * Symmetric scheme (no zero-point tensor, so the kernel uses its default zero point 8): w ~ (q - 8) * scale with
 * scale = absmax / 7, so every code is in 1..15 and nothing is clipped; each weight is then within half a step of
 * its dequantised value. Scales are rounded to float16 BEFORE coding (the q4f16 graph stores fp16 scales, and the
 * reference must see exactly what the kernel sees), and rounded up when needed so absmax / scale stays <= 7.
 */
import { fromFloat16Bits, toFloat16Bits } from '../graph-builder.js';

export const Q4_BLOCK_SIZE = 32;
/** Default zero point MatMulNBits assumes for 4-bit weights when no zero-point input is given. */
const Q4_DEFAULT_ZERO_POINT = 8;

export interface Q4Weights {
  /** [N, nBlocks, blockSize / 2] uint8: two 4-bit codes per byte, low nibble = even k. */
  packed: Uint8Array;
  /** [N * nBlocks] scales, already float16-representable (convert with toFloat16Array without loss). */
  scales: Float32Array;
  /** Absent: the scheme is symmetric and relies on MatMulNBits' default zero point 8. */
  zeroPoints?: Uint8Array;
  /** [K, N] row-major: exactly the matrix MatMulNBits multiplies by (for references and tests). */
  dequantized: Float32Array;
}

/** Smallest float16-representable value >= x (x > 0): a rounded-down scale would push codes past 15. */
function float16AtLeast(x: number): number {
  let bits = toFloat16Bits(x);
  let v = fromFloat16Bits(bits);
  while (v < x) {
    bits += 1; // positive fp16 bit patterns are ordered like their values
    v = fromFloat16Bits(bits);
  }
  return v;
}

export function quantizeQ4(w: Float32Array, k: number, n: number, blockSize = Q4_BLOCK_SIZE): Q4Weights {
  if (!Number.isInteger(k) || k <= 0 || !Number.isInteger(n) || n <= 0) {
    throw new Error(`quantizeQ4: k and n must be positive integers, got k=${k}, n=${n}`);
  }
  if (w.length !== k * n) {
    throw new Error(`quantizeQ4: weight has ${w.length} values, expected k*n = ${k}*${n} = ${k * n} ([K, N] row-major)`);
  }
  // MatMulNBits accepts block sizes that are powers of two, at least 16.
  if (!Number.isInteger(blockSize) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) {
    throw new Error(`quantizeQ4: blockSize must be a power of two >= 16, got ${blockSize}`);
  }
  const nBlocks = Math.ceil(k / blockSize);
  const blob = blockSize / 2;
  const packed = new Uint8Array(n * nBlocks * blob);
  const scales = new Float32Array(n * nBlocks);
  const dequantized = new Float32Array(k * n);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < nBlocks; b++) {
      const k0 = b * blockSize;
      const k1 = Math.min(k, k0 + blockSize);
      let absmax = 0;
      for (let r = k0; r < k1; r++) {
        const v = w[r * n + col];
        if (!Number.isFinite(v)) throw new Error(`quantizeQ4: non-finite weight at [${r}, ${col}]: ${v}`);
        absmax = Math.max(absmax, Math.abs(v));
      }
      // An all-zero block still needs a usable (non-zero) scale; codes are then all 8 (= 0).
      const scale = absmax > 0 ? float16AtLeast(absmax / 7) : 1;
      scales[col * nBlocks + b] = scale;
      const base = (col * nBlocks + b) * blob;
      for (let r = k0; r < k1; r++) {
        const code = Math.min(15, Math.max(0, Math.round(w[r * n + col] / scale) + Q4_DEFAULT_ZERO_POINT));
        const j = r - k0;
        packed[base + (j >> 1)] |= (j & 1) === 0 ? code : code << 4;
        dequantized[r * n + col] = (code - Q4_DEFAULT_ZERO_POINT) * scale;
      }
      // Padding rows past K (when K is not a multiple of blockSize) keep code 8 (= 0), so they add nothing.
      for (let r = k1; r < k0 + blockSize; r++) {
        const j = r - k0;
        packed[base + (j >> 1)] |= (j & 1) === 0 ? Q4_DEFAULT_ZERO_POINT : Q4_DEFAULT_ZERO_POINT << 4;
      }
    }
  }
  return { packed, scales, dequantized };
}
